"""One serial connection to one ASCII controller: bounded-time queries, one at a time.

Every serial driver (stage, laser, trigger box) talks through a :class:`SerialLink`:

- **One command at a time.** A lock serializes access; controllers in the field crash
  or interleave replies when two threads talk at once. ``busy`` tells whether a
  command is in flight.
- **Never hang.** Each query writes the command and reads one terminated reply within
  ``timeout_s`` (pyserial read and write timeouts); a missing reply raises
  :class:`DeviceTimeout`, undecodable bytes :class:`GarbledReply`, a vanished port
  (unplugged USB adapter, closed pty) :class:`DeviceDisconnected`.
- **Recover.** Stale input is flushed before each command, so a late reply to a timed
  out command cannot be mistaken for the next answer. After a disconnect the port is
  closed; the next query (or :meth:`reconnect`) opens it again.

All errors are :class:`SerialDeviceError`, a ``RuntimeError``, and name the device,
the port and the command.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import serial

try:  # pyserial's POSIX backend lets termios errors through (tcflush on a dead port)
    from termios import error as _TermiosError
except ImportError:  # pragma: no cover - Windows
    class _TermiosError(Exception):  # type: ignore[no-redef]
        pass

log = logging.getLogger(__name__)

PORT_ERRORS = (serial.SerialException, OSError, _TermiosError)


class SerialDeviceError(RuntimeError):
    """A serial controller did not do what was asked; the message says which and why."""


class DeviceTimeout(SerialDeviceError):
    """No complete reply within the timeout."""


class DeviceDisconnected(SerialDeviceError):
    """The port cannot be opened or vanished (cable, power, adapter)."""


class GarbledReply(SerialDeviceError):
    """A reply arrived but is not what the protocol allows."""


class DeviceRefused(SerialDeviceError):
    """The controller understood and answered with an error code."""


SerialFactory = Callable[..., Any]


class SerialLink:
    """A lock-protected, bounded-time request/reply channel on one serial port.

    Parameters
    ----------
    name: device name used in messages (``"stage"``, ``"laser"``...).
    port: device path or pyserial URL (``/dev/ttyUSB0``, ``/dev/serial/by-id/...``).
    baudrate: line speed.
    timeout_s: longest wait for a complete reply (also the write timeout).
    write_terminator, read_terminator: line endings of commands and replies.
    serial_factory: builds the port object (``serial.serial_for_url`` by default);
        tests and odd adapters can inject another.
    """

    def __init__(self, name: str, port: str, baudrate: int = 9600, timeout_s: float = 1.0, *,
                 write_terminator: bytes = b"\r", read_terminator: bytes = b"\r\n",
                 serial_factory: SerialFactory | None = None) -> None:
        if not port:
            raise ValueError(f"{name}: a serial port must be given")
        if timeout_s <= 0:
            raise ValueError(f"{name}: timeout_s must be > 0, got {timeout_s}")
        self.name = name
        self.port = port
        self.baudrate = int(baudrate)
        self.timeout_s = float(timeout_s)
        self.write_terminator = write_terminator
        self.read_terminator = read_terminator
        self._factory = serial_factory or serial.serial_for_url
        self._serial: Any | None = None
        self._lock = threading.RLock()
        self._in_flight = False
        self.last_error: str = ""

    # ------------------------------------------------------------------ connection
    @property
    def connected(self) -> bool:
        return self._serial is not None

    @property
    def busy(self) -> bool:
        """True while a command is being sent or its reply awaited."""
        return self._in_flight

    @property
    def lock(self) -> threading.RLock:
        """Hold this to run several queries as one uninterrupted transaction."""
        return self._lock

    def open(self) -> None:
        """Open the port if it is not open (raises DeviceDisconnected on failure)."""
        with self._lock:
            if self._serial is not None:
                return
            try:
                self._serial = self._factory(
                    self.port, baudrate=self.baudrate, timeout=self.timeout_s,
                    write_timeout=self.timeout_s, exclusive=True,
                )
            except (serial.SerialException, OSError, ValueError) as exc:
                self.last_error = f"cannot open {self.port}: {exc}"
                raise DeviceDisconnected(
                    f"{self.name}: cannot open serial port {self.port} at {self.baudrate} "
                    f"baud ({exc}); check the cable, the power and the port name") from exc
            log.info("%s: opened %s at %d baud", self.name, self.port, self.baudrate)

    def close(self) -> None:
        with self._lock:
            s, self._serial = self._serial, None
            if s is not None:
                try:
                    s.close()
                except PORT_ERRORS:  # already gone
                    pass

    def reconnect(self) -> None:
        """Close and reopen the port (after a power cycle or a re-plugged cable)."""
        with self._lock:
            self.close()
            self.open()

    # ------------------------------------------------------------------ queries
    def query(self, command: str) -> str:
        """Send ``command`` and return its reply line (without terminator)."""
        with self._lock:
            self.open()
            assert self._serial is not None
            s = self._serial
            self._in_flight = True
            try:
                try:
                    s.reset_input_buffer()  # drop late replies to earlier, timed-out commands
                    s.write(command.encode("ascii") + self.write_terminator)
                    s.flush()
                    deadline = time.monotonic() + self.timeout_s
                    raw = s.read_until(self.read_terminator)
                except serial.SerialTimeoutException as exc:
                    raise self._fail(DeviceTimeout, command, f"write timed out: {exc}") from exc
                except PORT_ERRORS as exc:
                    self.close()
                    raise self._fail(
                        DeviceDisconnected, command,
                        f"port {self.port} failed ({exc}); is the cable plugged in and the "
                        "controller powered? The next command reconnects") from exc
                if not raw.endswith(self.read_terminator):
                    late = time.monotonic() > deadline - 1e-3
                    what = "no reply" if not raw else f"incomplete reply {raw[:40]!r}"
                    raise self._fail(
                        DeviceTimeout, command,
                        f"{what} within {self.timeout_s:g} s"
                        + ("" if late else " (port returned early)"))
                try:
                    text = raw[: -len(self.read_terminator)].decode("ascii")
                except UnicodeDecodeError as exc:
                    raise self._fail(GarbledReply, command, f"garbled reply {raw[:40]!r}") from exc
                if not text.isprintable():
                    raise self._fail(GarbledReply, command, f"garbled reply {raw[:40]!r}")
                self.last_error = ""
                return text.strip()
            finally:
                self._in_flight = False

    def _fail(self, kind: type[SerialDeviceError], command: str, why: str) -> SerialDeviceError:
        msg = f"{self.name} on {self.port}: command {command!r}: {why}"
        self.last_error = msg
        log.warning("%s", msg)
        return kind(msg)

    def garbled(self, command: str, reply: str, expected: str) -> GarbledReply:
        """A GarbledReply for a decodable reply that breaks the protocol."""
        err = self._fail(GarbledReply, command, f"unexpected reply {reply[:40]!r} "
                                                f"(expected {expected})")
        assert isinstance(err, GarbledReply)
        return err

    def refused(self, command: str, why: str) -> DeviceRefused:
        err = self._fail(DeviceRefused, command, why)
        assert isinstance(err, DeviceRefused)
        return err
