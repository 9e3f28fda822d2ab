"""Emulator of a Cobolt-style laser controller (ASCII, power in watts).

Commands terminated by CR, replies by CR LF:

- ``p <W>``: set output power -> ``OK``; ``p?``: the setpoint in W
- ``pa?``: measured output power in W (0 while emission is off)
- ``l1`` / ``l0``: emission on / off -> ``OK``; ``l?``: ``1`` or ``0``
- ``sn?``: serial number; ``f?``: fault code (``0`` = none); ``ilk?``: interlock
  (``0`` = closed, fine)
- errors: ``Syntax error: illegal command``, ``Syntax error: value out of range``.
"""

from __future__ import annotations

import os

from beamline_ls.hardware.emulators.pty_device import PtyDevice


class CoboltLaserEmulator(PtyDevice):
    name = "cobolt-laser"

    def __init__(self, link_path: str | os.PathLike[str] | None = None,
                 max_power_w: float = 0.1, serial_number: str = "20455") -> None:
        super().__init__(link_path)
        self.max_power_w = max_power_w
        self.serial_number = serial_number
        self.setpoint_w = 0.0
        self.emission = False
        self.fault = 0

    def handle(self, command: str) -> str | None:
        word, *args = command.strip().split()
        word = word.lower()
        if word == "p" and len(args) == 1:
            try:
                w = float(args[0])
            except ValueError:
                return "Syntax error: illegal command"
            if not 0 <= w <= self.max_power_w:
                return "Syntax error: value out of range"
            self.setpoint_w = w
            return "OK"
        if args:
            return "Syntax error: illegal command"
        if word == "p?":
            return f"{self.setpoint_w:.5f}"
        if word == "pa?":
            return f"{self.setpoint_w if self.emission else 0.0:.5f}"
        if word in ("l1", "l0"):
            self.emission = word == "l1"
            return "OK"
        if word == "l?":
            return "1" if self.emission else "0"
        if word == "sn?":
            return self.serial_number
        if word == "f?":
            return str(self.fault)
        if word == "ilk?":
            return "0"
        return "Syntax error: illegal command"
