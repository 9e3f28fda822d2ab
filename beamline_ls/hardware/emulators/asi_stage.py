"""Emulator of an ASI MS-2000 style XYZ stage controller (ASCII, 0.1 um units).

Commands (case-insensitive, long or short form), terminated by CR:

- ``MOVE X=<tenths> Y=<tenths>`` / ``M ...``: absolute move -> ``:A``
- ``WHERE X Y`` / ``W X Y``: positions in 0.1 um -> ``:A 1234 -567``
- ``/`` or ``STATUS``: ``B`` while any axis moves, else ``N``
- ``HALT`` or ``\\``: stop all axes -> ``:A``
- ``SPEED X=<mm/s>`` / ``S ...``: axis speed -> ``:A``
- errors: ``:N-1`` unknown command, ``:N-2`` unknown axis, ``:N-3`` missing or bad
  parameter, ``:N-4`` parameter out of range.

Motion is linear at the axis speed on the host's monotonic clock. ``stuck_busy``
makes the controller report busy forever (a jammed axis).
"""

from __future__ import annotations

import os
import time

from beamline_ls.hardware.emulators.pty_device import PtyDevice


class AsiStageEmulator(PtyDevice):
    name = "asi-ms2000"

    def __init__(self, link_path: str | os.PathLike[str] | None = None, axes: str = "XYZ",
                 travel_tenths: float = 100_000.0, speed_mm_s: float = 2.0) -> None:
        super().__init__(link_path)
        self.travel_tenths = travel_tenths
        self.stuck_busy = False
        self._from = {a: 0.0 for a in axes}
        self._to = {a: 0.0 for a in axes}
        self._t_start = {a: 0.0 for a in axes}
        self._speed = {a: speed_mm_s for a in axes}  # mm/s = 1e4 tenths/s

    # -- motion model ------------------------------------------------------------------
    def _where(self, axis: str, now: float) -> float:
        a, b = self._from[axis], self._to[axis]
        travelled = (now - self._t_start[axis]) * self._speed[axis] * 1e4
        if travelled >= abs(b - a):
            return b
        return a + travelled * (1 if b > a else -1)

    def _moving(self, now: float) -> bool:
        return self.stuck_busy or any(self._where(a, now) != self._to[a] for a in self._to)

    def position_um(self, axis: str) -> float:
        """Current position of ``axis`` in um (for tests)."""
        with self.state_lock:
            return self._where(axis.upper(), time.monotonic()) / 10.0

    # -- protocol ------------------------------------------------------------------------
    def handle(self, command: str) -> str | None:
        now = time.monotonic()
        text = command.strip()
        if text in ("/", "STATUS") or text.upper() == "STATUS":
            return "B" if self._moving(now) else "N"
        if text == "\\":
            text = "HALT"
        word, *args = text.split()
        word = word.upper()
        if word in ("HALT", "H"):
            for a in self._to:
                p = self._where(a, now)
                self._from[a] = self._to[a] = p
            return ":A"
        if word in ("WHERE", "W"):
            if not args:
                return ":N-3"
            out = []
            for a in (x.upper() for x in args):
                if a not in self._to:
                    return ":N-2"
                out.append(str(int(round(self._where(a, now)))))
            return ":A " + " ".join(out)
        if word in ("MOVE", "M", "SPEED", "S"):
            pairs = self._pairs(args)
            if isinstance(pairs, str):
                return pairs
            for v in pairs.values():
                if word in ("MOVE", "M"):
                    if abs(v) > self.travel_tenths:
                        return ":N-4"
                elif not 0 < v <= 10:
                    return ":N-4"
            for a, v in pairs.items():
                if word in ("MOVE", "M"):
                    self._from[a] = self._where(a, now)
                    self._to[a] = v
                    self._t_start[a] = now
                else:
                    self._speed[a] = v
            return ":A"
        return ":N-1"

    def _pairs(self, args: list[str]) -> dict[str, float] | str:
        if not args:
            return ":N-3"
        out: dict[str, float] = {}
        for arg in args:
            axis, sep, value = arg.partition("=")
            axis = axis.upper()
            if axis not in self._to:
                return ":N-2"
            try:
                out[axis] = float(value) if sep else float("nan")
            except ValueError:
                return ":N-3"
            if out[axis] != out[axis]:
                return ":N-3"
        return out
