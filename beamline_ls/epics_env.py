"""Loopback Channel Access for one session: private ports, a private repeater, and
the simulated IOC as a child process.

EPICS environment variables must be set before ophyd (pyepics) is imported, so entry
points call :meth:`LoopbackEpics.apply` first. Every process started here is stopped
here, by PID; nothing is left running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


def loopback_client_env() -> None:
    """Default a Channel Access client to loopback and to areaDetector-sized arrays,
    unless the site set its own ``EPICS_CA_*`` variables (call before any CA import)."""
    os.environ.setdefault("EPICS_CA_ADDR_LIST", "127.0.0.1")
    os.environ.setdefault("EPICS_CA_AUTO_ADDR_LIST", "NO")
    os.environ.setdefault("EPICS_CA_MAX_ARRAY_BYTES", "100000000")


def free_port() -> int:
    """A currently free TCP+UDP port on 127.0.0.1."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue


def udp_port_taken(port: int) -> bool:
    """True when a socket of this host is bound to UDP ``port`` (a CA repeater).

    Read from the kernel's table (Linux ``/proc/net/udp``) rather than by binding the
    port to see whether that fails: such a probe, at the moment the repeater starts,
    made the repeater find its port taken and leave.
    """
    with open("/proc/net/udp") as table:
        next(table)  # header
        return any(int(line.split()[1].rsplit(":", 1)[1], 16) == port for line in table)


@dataclass
class LoopbackEpics:
    """Ports and environment of an isolated loopback Channel Access 'network'."""

    server_port: int = field(default_factory=free_port)
    repeater_port: int = field(default_factory=free_port)
    extra_server_ports: tuple[int, ...] = ()  # more IOCs a client should search
    _repeater: subprocess.Popen | None = None

    def for_server(self, port: int) -> LoopbackEpics:
        """The same network for a second IOC serving on ``port``."""
        return LoopbackEpics(port, self.repeater_port, self.extra_server_ports)

    def env(self) -> dict[str, str]:
        addrs = ["127.0.0.1"] + [f"127.0.0.1:{p}" for p in self.extra_server_ports
                                 if p != self.server_port]
        return {
            "EPICS_CA_ADDR_LIST": " ".join(addrs),
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_SERVER_PORT": str(self.server_port),
            "EPICS_CA_REPEATER_PORT": str(self.repeater_port),
            "EPICS_CA_MAX_ARRAY_BYTES": "100000000",
            "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
            "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
            "EPICS_CAS_BEACON_PORT": str(self.repeater_port),
        }

    def apply(self) -> None:
        """Set the environment in this process (before importing ophyd)."""
        os.environ.update(self.env())

    def start_repeater(self, log_file: Path | None = None, timeout: float = 10.0) -> None:
        """Run our own CA repeater so client libraries do not spawn a daemon; return
        once it holds its port, so that an IOC started next finds it there (and does
        not run one of its own that would end with it)."""
        out = open(log_file, "ab") if log_file else subprocess.DEVNULL
        self._repeater = subprocess.Popen(
            [sys.executable, "-m", "beamline_ls.ca_repeater"],  # loopback only
            env={**os.environ, **self.env()},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)  # never leave it behind, even on an error path
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._repeater.poll() is None:
            if udp_port_taken(self.repeater_port):
                return
            time.sleep(0.05)
        if self._repeater.poll() is None:
            raise RuntimeError(f"the CA repeater did not bind 127.0.0.1:{self.repeater_port} "
                               f"in {timeout:.0f} s")

    def stop(self) -> None:
        if self._repeater is not None:
            _terminate(self._repeater)
            self._repeater = None


class IocProcess:
    """``beamline-ls ioc`` as a child process on a :class:`LoopbackEpics`."""

    def __init__(self, epics: LoopbackEpics, prefix: str, data_dir: Path, log_file: Path,
                 config: Path | None = None):
        self.epics = epics
        self.prefix = prefix
        self.data_dir = Path(data_dir)
        self.log_file = Path(log_file)
        self.config = config
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> IocProcess:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_file, "ab")
        start_offset = self.log_file.stat().st_size
        cmd = [sys.executable, "-m", "beamline_ls.cli", "ioc", "--prefix", self.prefix,
               "--data-dir", str(self.data_dir)]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **self.epics.env(), "BEAMLINE_LS_LOG": "INFO"},
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"IOC exited with code {self.proc.returncode}; see {self.log_file}"
                )
            with open(self.log_file, "rb") as f:
                f.seek(start_offset)
                if b"IOC serving" in f.read():
                    time.sleep(0.2)  # sockets are bound right after that line
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"IOC did not start within {timeout} s; see {self.log_file}")

    def stop(self) -> None:
        if self.proc is not None:
            _terminate(self.proc)
            self.proc = None

    def __enter__(self) -> IocProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _terminate(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def loopback_ioc(prefix: str, data_dir: Path, config: Path | None = None
                 ) -> Iterator[IocProcess]:
    """A private loopback CA network with the simulated (or configured) IOC on it, for
    scripts and benchmarks; everything started is stopped on exit. Sets this process's
    EPICS environment, so call it before importing ophyd."""
    epics = LoopbackEpics()
    epics.apply()
    epics.start_repeater()
    ioc = IocProcess(epics, prefix, Path(data_dir), Path(data_dir) / "ioc.log", config=config)
    try:
        yield ioc.start()
    finally:
        ioc.stop()
        epics.stop()
