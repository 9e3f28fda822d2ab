"""An IOC started alone (no CA repeater on the host) runs its own loopback repeater:
its beacons are delivered, not logged as an error with a traceback every few seconds."""

from __future__ import annotations

import time

from beamline_ls.epics_env import IocProcess, LoopbackEpics, udp_port_taken


def test_a_lone_ioc_beacons_to_a_repeater_of_its_own(tmp_path):
    alone = LoopbackEpics()  # its own ports; nobody starts a repeater on them
    ioc = IocProcess(alone, "LONE:", tmp_path, tmp_path / "ioc.log").start(timeout=60)
    try:
        # beacons start every 20 ms and back off: several have gone out within 3 s
        time.sleep(3.0)
        log = (tmp_path / "ioc.log").read_text()
        assert "Failed to send beacon" not in log, log[-2000:]
        assert udp_port_taken(alone.repeater_port), "no repeater on the IOC's beacon port"
    finally:
        ioc.stop()
    assert not udp_port_taken(alone.repeater_port)  # it ended with the IOC


def test_an_ioc_leaves_a_running_repeater_alone(tmp_path):
    network = LoopbackEpics()
    network.start_repeater()  # returns once it holds the port
    try:
        ioc = IocProcess(network, "SHARED:", tmp_path, tmp_path / "ioc.log").start(timeout=60)
        ioc.stop()
        # the host's repeater outlives the IOC, for the clients registered with it
        assert network._repeater.poll() is None
        assert udp_port_taken(network.repeater_port)
    finally:
        network.stop()


def test_beacons_go_to_the_repeater_port_when_no_beacon_port_is_set(tmp_path, monkeypatch):
    """EPICS base sends beacons to EPICS_CA_REPEATER_PORT unless EPICS_CAS_BEACON_PORT
    says otherwise; a site that moved its repeater sets only the former."""

    class RepeaterPortOnly(LoopbackEpics):
        def env(self) -> dict[str, str]:
            env = super().env()
            del env["EPICS_CAS_BEACON_PORT"]
            return env

    monkeypatch.delenv("EPICS_CAS_BEACON_PORT", raising=False)
    network = RepeaterPortOnly()
    ioc = IocProcess(network, "MOVED:", tmp_path, tmp_path / "ioc.log").start(timeout=60)
    try:
        time.sleep(3.0)
        log = (tmp_path / "ioc.log").read_text()
        assert "Failed to send beacon" not in log, log[-2000:]
    finally:
        ioc.stop()


def test_a_second_ioc_on_the_same_udp_port_is_told(ioc, epics, caplog):
    """Two IOCs on one UDP port each get only some unicast searches, so clients find
    one IOC's PVs and time out on the other's. A starting IOC says so (the session
    IOC holds ``epics.server_port``; a free port is not reported)."""
    import logging

    from beamline_ls.epics_env import free_port
    from beamline_ls.iocs.server import warn_if_port_shared

    with caplog.at_level(logging.WARNING, logger="beamline_ls.iocs.server"):
        warn_if_port_shared(["127.0.0.1"], free_port())
        assert not caplog.records
        warn_if_port_shared(["127.0.0.1"], epics.server_port)
    assert f"another server already listens on UDP port {epics.server_port}" in caplog.text
    assert "find only one of the two IOCs" in caplog.text
