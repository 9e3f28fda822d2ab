"""Nothing listens beyond loopback: the CA repeater and the IOC's server sockets are
bound to 127.0.0.1 only (read from the kernel's socket tables, as `ss -l` does)."""

from __future__ import annotations

import time

LOOPBACK_HEX = "0100007F"  # 127.0.0.1 as /proc/net prints it


def bound_addresses(table: str, port: int) -> set[str]:
    """Local addresses of the sockets on ``port`` in /proc/net/<table>."""
    found = set()
    with open(f"/proc/net/{table}") as f:
        for line in f.readlines()[1:]:
            local = line.split()[1]
            address, hex_port = local.split(":")
            if int(hex_port, 16) == port:
                found.add(address)
    return found


def test_the_ca_repeater_and_the_ioc_listen_on_loopback_only(epics, ioc):
    deadline = time.monotonic() + 10
    while not bound_addresses("udp", epics.repeater_port):
        assert time.monotonic() < deadline, "the repeater never bound its port"
        time.sleep(0.05)
    assert bound_addresses("udp", epics.repeater_port) == {LOOPBACK_HEX}
    assert bound_addresses("tcp", epics.server_port) == {LOOPBACK_HEX}
    assert bound_addresses("udp", epics.server_port) <= {LOOPBACK_HEX}
