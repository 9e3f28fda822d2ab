"""Debian's PostgreSQL for tests: a private cluster in a temporary directory, listening
on 127.0.0.1 only, stopped by ``pg_ctl`` (the postmaster this started) and removed."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from beamline_ls.epics_env import free_port


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (postgresql-NN from Debian)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name))
    return Path(found[-1]).parent if found else None


class PostgresCluster:
    def __init__(self, database: str = "lightsheet"):
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError("PostgreSQL server not installed (Debian: postgresql)")
        self.database = database
        self.root = Path(tempfile.mkdtemp(prefix="bls-pg-"))
        self.port = free_port()
        # the server refuses to run as root: run it as Debian's postgres user then
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.root, "postgres")

    def _run(self, *cmd: str) -> None:
        done = subprocess.run([*self.as_user, *cmd], capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stdout}{done.stderr}")

    @property
    def uri(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> PostgresCluster:
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "log"),
                  "-o", f"-p {self.port} -h 127.0.0.1 -k {self.root}", "-w", "start")
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                  "-U", "postgres", self.database)
        return self

    def stop(self) -> None:
        try:
            if (self.root / "data" / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m",
                          "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
