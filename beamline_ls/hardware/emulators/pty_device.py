"""A line-oriented ASCII controller played on a pseudo-terminal, with fault injection.

The slave end of an ``os.openpty()`` pair is set raw and left to the driver, which
opens it with a real ``serial.Serial``; a thread reads commands from the master end
and writes replies. Optionally a symlink (like ``/dev/serial/by-id/...``) names the
port, so a driver keeps one port name across :meth:`unplug` / :meth:`replug`.

Faults, settable at any time: ``reply_delay_s`` (slow replies), ``garble_replies``
(the next N replies are binary garbage), ``mute`` (commands are swallowed),
:meth:`unplug` (the master end closes: the driver's reads fail, the port name
vanishes) and :meth:`replug` (a fresh pty behind the same name).
"""

from __future__ import annotations

import logging
import os
import select
import threading
import tty
from pathlib import Path

log = logging.getLogger(__name__)

GARBAGE = b"\x9c\xff#%\x01\xfe"


class PtyDevice:
    """Base emulator: subclasses implement :meth:`handle` (one command -> one reply)."""

    name = "device"
    reply_terminator = b"\r\n"

    def __init__(self, link_path: str | os.PathLike[str] | None = None) -> None:
        self.link_path = Path(link_path) if link_path is not None else None
        self.reply_delay_s = 0.0
        self.garble_replies = 0
        self.mute = False
        self.commands: list[str] = []
        self.state_lock = threading.Lock()
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_name = ""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ------------------------------------------------------------------ plumbing
    @property
    def port(self) -> str:
        """The port name a driver should open."""
        return str(self.link_path) if self.link_path is not None else self._slave_name

    @property
    def plugged(self) -> bool:
        return self._master is not None

    def start(self) -> PtyDevice:
        if self._master is None:
            self._plug()
        return self

    def stop(self) -> None:
        self._unplug()

    def unplug(self) -> None:
        """Pull the cable: the driver's open port fails and the port name vanishes."""
        self._unplug()

    def replug(self) -> None:
        """Plug back in: a fresh pty behind the same port name (when a link is used)."""
        self._unplug()
        self._plug()

    def __enter__(self) -> PtyDevice:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self._slave_name = os.ttyname(slave)
        if self.link_path is not None:
            tmp = self.link_path.with_name(self.link_path.name + ".new")
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            os.symlink(self._slave_name, tmp)
            os.replace(tmp, self.link_path)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(master, self._stop),
                                        name=f"emulator-{self.name}", daemon=True)
        self._thread.start()
        log.debug("%s plugged in at %s", self.name, self.port)

    def _unplug(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._master = self._slave = None
        if self.link_path is not None and self.link_path.is_symlink():
            self.link_path.unlink()

    def _serve(self, master: int, stop: threading.Event) -> None:
        buf = b""
        while not stop.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
            except (OSError, ValueError):
                return
            if not ready:
                continue
            try:
                data = os.read(master, 4096)
            except OSError:
                stop.wait(0.01)
                continue
            buf += data
            while True:
                cuts = [i for i in (buf.find(b"\r"), buf.find(b"\n")) if i >= 0]
                if not cuts:
                    break
                line, buf = buf[: min(cuts)], buf[min(cuts) + 1:]
                if line.strip():
                    self._respond(master, line, stop)

    def _respond(self, master: int, line: bytes, stop: threading.Event) -> None:
        text = line.decode("ascii", "replace").strip()
        self.commands.append(text)
        with self.state_lock:
            reply = self.handle(text)
        if self.mute or reply is None:
            return
        if self.reply_delay_s > 0 and stop.wait(self.reply_delay_s):
            return
        if self.garble_replies > 0:
            self.garble_replies -= 1
            out = GARBAGE + self.reply_terminator
        else:
            out = reply.encode("ascii") + self.reply_terminator
        try:
            os.write(master, out)
        except OSError:
            pass

    # ------------------------------------------------------------------ protocol
    def handle(self, command: str) -> str | None:
        """Answer one command (called with ``state_lock`` held); None: no reply."""
        raise NotImplementedError
