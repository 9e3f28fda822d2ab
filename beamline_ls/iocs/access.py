"""Who may write which PV: Channel Access access rules from the deployment's TOML.

Reading is open to every client that can reach the IOC (by default only this host:
the server binds loopback). Writing moves hardware, starts captures and picks where
files go, so it is limited:

.. code-block:: toml

    [access]
    write_hosts = ["localhost", "ws-lightsheet-1"]   # default: this host only
    write_users = ["operator", "alice"]              # default: any user
    [access.pvs."HDF1:Mirror*"]                      # PV names after the prefix
    write_hosts = ["localhost"]
    write_users = ["operator"]
    [access.pvs."laser:*"]
    write_hosts = []                                 # nobody writes the laser remotely

The first ``[access.pvs]`` pattern (``fnmatch``, in file order) matching a PV decides
for it; other PVs follow ``write_hosts``/``write_users``. Read-only PVs (``_RBV``,
status) stay read-only for everyone. A client without write access is told so when it
connects (Channel Access access rights), so a refused put fails at once with the CA
access error, never a timeout.

Channel Access trusts the host and user names a client declares; these rules keep
honest clients from mistakes, and the loopback/firewall set-up keeps others out.
"""

from __future__ import annotations

import fnmatch
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from caproto import AccessRights

#: Names under which a client on this machine identifies itself.
LOCAL = "localhost"


def _local_names() -> set[str]:
    names = {LOCAL, "127.0.0.1", "::1", "localhost.localdomain"}
    for name in (socket.gethostname(), socket.getfqdn()):
        if name:
            names.add(name)
            names.add(name.split(".")[0])
    return names


def _hosts(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where} must be a list of host names (got {value!r})")
    return tuple(value)


@dataclass(frozen=True)
class WriteRule:
    """Who may write the PVs whose name (after the prefix) matches ``pattern``."""

    pattern: str
    hosts: tuple[str, ...]
    users: tuple[str, ...] = ()  # empty: any user

    def allows(self, host: str, user: str) -> bool:
        local = _local_names()
        host_ok = any(h == host or (h == LOCAL and host in local) for h in self.hosts)
        return host_ok and (not self.users or user in self.users)


@dataclass(frozen=True)
class AccessPolicy:
    """Write rules of one IOC: per-pattern rules first, then the default."""

    default: WriteRule = field(default_factory=lambda: WriteRule("*", (LOCAL,)))
    rules: tuple[WriteRule, ...] = ()

    @classmethod
    def from_config(cls, doc: Mapping[str, Any] | None) -> AccessPolicy:
        """Parse the TOML's ``[access]`` table (None or empty: this host only)."""
        doc = dict(doc or {})
        unknown = set(doc) - {"write_hosts", "write_users", "pvs"}
        if unknown:
            raise ValueError(f"[access] has unknown keys {sorted(unknown)}; expected "
                             "write_hosts, write_users, pvs")
        default = WriteRule("*", _hosts(doc.get("write_hosts", [LOCAL]), "access.write_hosts"),
                            _hosts(doc.get("write_users", []), "access.write_users"))
        rules = []
        for pattern, rule in dict(doc.get("pvs", {})).items():
            if not isinstance(rule, Mapping):
                raise ValueError(f"[access.pvs.{pattern!r}] must be a table")
            rules.append(WriteRule(
                pattern,
                _hosts(rule.get("write_hosts", list(default.hosts)),
                       f"access.pvs.{pattern}.write_hosts"),
                _hosts(rule.get("write_users", list(default.users)),
                       f"access.pvs.{pattern}.write_users")))
        return cls(default, tuple(rules))

    def rule_for(self, name: str) -> WriteRule:
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, rule.pattern):
                return rule
        return self.default

    def apply(self, pvdb: Mapping[str, Any], prefix: str) -> None:
        """Give every PV of ``pvdb`` its rule: a client the rule does not allow keeps
        read access and loses write access."""
        for pvname, data in pvdb.items():
            name = pvname[len(prefix):] if pvname.startswith(prefix) else pvname
            rule = self.rule_for(name.split(".")[0] if "." in name else name)
            data.check_access = _limited(data.check_access, rule)


def _limited(original, rule: WriteRule):
    def check_access(hostname: str, username: str) -> AccessRights:
        rights = original(hostname, username)
        if rule.allows(hostname, username):
            return rights
        return rights & ~AccessRights.WRITE

    return check_access
