"""An IOC started alone (no CA repeater on the host) runs its own loopback repeater:
its beacons are delivered, not logged as an error with a traceback every few seconds."""

from __future__ import annotations

import socket
import time

from beamline_ls.epics_env import IocProcess, LoopbackEpics


def test_a_lone_ioc_beacons_to_a_repeater_of_its_own(tmp_path):
    alone = LoopbackEpics()  # its own ports; nobody starts a repeater on them
    ioc = IocProcess(alone, "LONE:", tmp_path, tmp_path / "ioc.log").start(timeout=60)
    try:
        # beacons start every 20 ms and back off: several have gone out within 3 s
        time.sleep(3.0)
        log = (tmp_path / "ioc.log").read_text()
        assert "Failed to send beacon" not in log, log[-2000:]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", alone.repeater_port))
                bound_by_other = False
            except OSError:
                bound_by_other = True
        assert bound_by_other, "no repeater listens on the IOC's beacon port"
    finally:
        ioc.stop()
    # the repeater ended with the IOC: the port is free again
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", alone.repeater_port))
