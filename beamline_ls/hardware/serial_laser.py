"""Excitation laser on a Cobolt-style ASCII serial protocol (power in watts).

``p <W>`` sets the output power, ``pa?`` reads the measured output, ``l1``/``l0``
switch emission, ``l?`` reads it, ``sn?`` identifies the head; commands answer ``OK``
or ``Syntax error: ...``. Power in the driver interface is mW; limits come from the
configuration (the head's own range may be wider than what is safe for the sample).
"""

from __future__ import annotations

import logging

from beamline_ls.hardware.laser import LaserDriver
from beamline_ls.hardware.serial_link import SerialLink

log = logging.getLogger(__name__)


class SerialLaser(LaserDriver):
    """A :class:`LaserDriver` speaking the Cobolt-style protocol over one serial link."""

    def __init__(self, link: SerialLink, max_power_mw: float, wavelength_nm: float) -> None:
        if max_power_mw <= 0:
            raise ValueError(f"laser: max_power_mw must be > 0, got {max_power_mw}")
        self.link = link
        self.max_power_mw = float(max_power_mw)
        self.wavelength_nm = float(wavelength_nm)

    def _ok(self, command: str) -> None:
        reply = self.link.query(command)
        if reply.lower().startswith("syntax error") or reply.lower().startswith("error"):
            raise self.link.refused(command, f"laser answered {reply!r}")
        if reply != "OK":
            raise self.link.garbled(command, reply, "'OK'")

    def _number(self, command: str) -> float:
        reply = self.link.query(command)
        try:
            return float(reply)
        except ValueError:
            raise self.link.garbled(command, reply, "a number") from None

    def set_power(self, mw: float) -> None:
        if not 0 <= mw <= self.max_power_mw:
            raise ValueError(f"power must be in [0, {self.max_power_mw}] mW, got {mw}")
        self._ok(f"p {mw / 1000.0:.6f}")

    def power(self) -> float:
        """Measured output power (mW); the head reports 0 while emission is off."""
        return self._number("pa?") * 1000.0

    def setpoint(self) -> float:
        return self._number("p?") * 1000.0

    def set_enabled(self, on: bool) -> None:
        self._ok("l1" if on else "l0")

    def enabled(self) -> bool:
        reply = self.link.query("l?")
        if reply not in ("0", "1"):
            raise self.link.garbled("l?", reply, "'0' or '1'")
        return reply == "1"

    def identify(self) -> str:
        """The head's serial number (harmless query used by check-hardware)."""
        return self.link.query("sn?")

    @property
    def busy(self) -> bool:
        return self.link.busy
