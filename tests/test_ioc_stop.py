"""An IOC told to stop (SIGTERM, as a service manager or a start script stops it) while
clients are talking to it goes through its shutdown: drivers closed, exit code 0, in
bounded time, not killed after a timeout with its serial ports and tasks left open."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from conftest import wait_for

from beamline_ls.epics_env import IocProcess, LoopbackEpics

# one client process: reads in a loop, each on a new circuit (the server's handlers stay
# busy), and says so per read; caproto's sync client is not safe to share between
# threads (concurrent reads in one process fail with KeyError and OSError), so each
# client is a process of its own
_CLIENT = """
from caproto.sync.client import read
while True:
    try:
        read("STOP:cam1:ArraySizeX_RBV", timeout=2, repeater=False)
        print("read", flush=True)
    except Exception:  # the IOC is going away: that is the point
        pass
"""


def test_sigterm_during_client_traffic_stops_the_ioc_cleanly(tmp_path, monkeypatch):
    network = LoopbackEpics()
    for key, value in network.env().items():
        monkeypatch.setenv(key, value)
    network.start_repeater()
    ioc = IocProcess(network, "STOP:", tmp_path, tmp_path / "ioc.log").start(timeout=60)
    reads = [0]
    clients = []

    def count(proc: subprocess.Popen) -> None:
        for _ in proc.stdout:
            reads[0] += 1

    try:
        for _ in range(3):
            proc = subprocess.Popen([sys.executable, "-c", _CLIENT], stdout=subprocess.PIPE,
                                    stdin=subprocess.DEVNULL, text=True)
            clients.append(proc)
            threading.Thread(target=count, args=(proc,), daemon=True).start()
        # traffic under way: reads from the clients, and the SIGTERM comes amid them
        wait_for(lambda: reads[0] >= 30 or ioc.proc.poll() is not None, 60,
                 "the clients' reads")
        assert ioc.proc.poll() is None, "the IOC exited by itself"
        ioc.proc.send_signal(signal.SIGTERM)
        code = ioc.proc.wait(timeout=8)  # IocProcess.stop would kill after 10 s
        log = (tmp_path / "ioc.log").read_text()
        assert code == 0, log[-3000:]
        assert "IOC stopped" in log, log[-3000:]  # logged after the drivers closed
    finally:
        for proc in clients:
            proc.kill()
            proc.wait(10)
        ioc.stop()
        network.stop()
