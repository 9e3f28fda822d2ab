"""One IOC per data directory and per PV prefix.

A second IOC started on the same data directory and prefix (a second terminal, a
service started twice) served the same PVs beside the first: Channel Access clients
then reached either of them at random (measured: ``cam1:ArrayCounter_RBV`` read 60 and
0 by turns), and both wrote under the same frames directory and autosave files. An IOC
now refuses to start, saying which one is there, when

- another IOC holds the data directory (an exclusive lock on ``state/ioc.lock``, held
  for the process's life and released by the kernel however it ends), or
- a server already answers a search for one of its PVs on the interfaces and port it
  would serve (only those: the search never leaves them).
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import IO

import caproto as ca


class ClaimError(RuntimeError):
    """Another IOC already serves this data directory or these PVs."""


def claim_data_dir(state_dir: Path, prefix: str, role: str = "IOC") -> IO[str]:
    """Lock ``state_dir/<role>.lock`` for this process (keep the returned file open
    while serving); raise `ClaimError` naming the holder when another ``role`` has it.

    ``role``: "IOC", or "queue server" (two queue servers on one data directory
    shared its Redis dump and wrote the same logs, with no word said)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = (state_dir / f"{role.lower().replace(' ', '-')}.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ClaimError(f"another {role} ({holder}) serves the data directory "
                         f"{state_dir.parent}; stop it first, or give this one its own "
                         "--data-dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"PID {os.getpid()}, prefix {prefix}\n")
    handle.flush()
    return handle


def served_by(pvname: str, interfaces: list[str], port: int,
              timeout: float = 0.3) -> str | None:
    """``host:port`` of a server that answers a search for ``pvname`` sent to each of
    ``interfaces`` at ``port`` (UDP), or None when none answers within ``timeout``."""
    b = ca.Broadcaster(our_role=ca.CLIENT)
    cid = int.from_bytes(os.urandom(2), "big")
    request = b.send(ca.VersionRequest(0, ca.DEFAULT_PROTOCOL_VERSION),
                     ca.SearchRequest(pvname, cid, ca.DEFAULT_PROTOCOL_VERSION))
    found = None
    for host in interfaces:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((host, 0))
            try:
                sock.sendto(request, (host, port))
            except OSError:
                continue
            deadline = time.monotonic() + timeout
            while found is None and (left := deadline - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, addr = sock.recvfrom(65536)
                except (TimeoutError, OSError):
                    break
                try:
                    commands = b.recv(data, addr)
                except ca.RemoteProtocolError:
                    continue
                for command in commands:
                    if isinstance(command, ca.SearchResponse) and command.cid == cid:
                        ip = command.ip if command.ip not in ("255.255.255.255", "0.0.0.0") \
                            else addr[0]
                        found = f"{ip}:{command.port}"
        if found:
            return found
    return None


def refuse_if_served(pvname: str, interfaces: list[str], port: int) -> None:
    """Raise `ClaimError` when a server already answers for ``pvname``."""
    where = served_by(pvname, interfaces, port)
    if where:
        raise ClaimError(f"{pvname} is already served by {where}: another IOC has this "
                         "prefix; stop it first, or give this one its own --prefix")
