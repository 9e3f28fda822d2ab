"""An IOC told to stop (SIGTERM, as a service manager or a start script stops it) while
clients are talking to it goes through its shutdown: drivers closed, exit code 0, in
bounded time, not killed after a timeout with its serial ports and tasks left open."""

from __future__ import annotations

import signal
import threading

from conftest import wait_for

from beamline_ls.epics_env import IocProcess, LoopbackEpics


def test_sigterm_during_client_traffic_stops_the_ioc_cleanly(tmp_path, monkeypatch):
    from caproto.sync.client import read

    network = LoopbackEpics()
    for key, value in network.env().items():
        monkeypatch.setenv(key, value)
    network.start_repeater()
    ioc = IocProcess(network, "STOP:", tmp_path, tmp_path / "ioc.log").start(timeout=60)
    done = threading.Event()
    reads = [0]

    def client() -> None:  # each read is a new circuit: the server's handlers stay busy
        while not done.is_set():
            try:
                read("STOP:cam1:ArraySizeX_RBV", timeout=2, repeater=False)
                reads[0] += 1
            except Exception:  # the IOC is going away: that is the point
                pass

    clients = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    try:
        for c in clients:
            c.start()
        # traffic under way: a few reads each (on a loaded machine a new circuit per
        # read takes seconds; 30 reads in 30 s timed out once)
        wait_for(lambda: reads[0] >= 10 or ioc.proc.poll() is not None, 60,
                 "the clients' reads")
        assert ioc.proc.poll() is None, "the IOC exited by itself"
        ioc.proc.send_signal(signal.SIGTERM)
        code = ioc.proc.wait(timeout=8)  # IocProcess.stop would kill after 10 s
        log = (tmp_path / "ioc.log").read_text()
        assert code == 0, log[-3000:]
        assert "IOC stopped" in log, log[-3000:]  # logged after the drivers closed
    finally:
        done.set()
        for c in clients:
            c.join(10)
        ioc.stop()
        network.stop()
