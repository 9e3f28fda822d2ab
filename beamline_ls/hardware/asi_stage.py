"""XYZ sample stage on an ASI MS-2000 style controller (ASCII over serial).

Protocol: ``MOVE X=<n> Y=<n>`` absolute moves and ``WHERE X Y`` positions in units
of 0.1 um, ``/`` busy flag (``B`` busy, ``N`` idle), ``HALT``; replies ``:A ...`` on
success and ``:N-<code>`` on error. One :class:`AsiStage` owns the controller (one
serial link, one lock); :class:`AsiStageAxis` serves one axis as a
:class:`PositionerDriver`, so the IOC's motor records work unchanged.

The busy flag is controller-wide (as on the real controller). Right after a move
command the flag may not be raised yet, so an axis also counts as moving until it
reaches its target or ``settle_timeout_s`` passes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from beamline_ls.hardware.positioner import PositionerDriver
from beamline_ls.hardware.serial_link import SerialLink

log = logging.getLogger(__name__)

UNITS_PER_UM = 10.0  # controller units are 0.1 um
ERRORS = {
    "1": "unknown command",
    "2": "unrecognized axis",
    "3": "missing or bad parameter",
    "4": "parameter out of range",
    "5": "operation failed",
    "6": "undefined error",
    "21": "serial command halted by HALT",
}


@dataclass(frozen=True)
class AxisConfig:
    """One stage axis: controller letter, soft limits (um), speed (um/s)."""

    letter: str
    limits_um: tuple[float, float] = (-10_000.0, 10_000.0)
    velocity_um_s: float = 2_000.0


class AsiStage:
    """The controller: moves, positions and the busy flag, serialized on one link.

    ``cache_s``: positions and the busy flag are re-read at most this often, so the
    IOC polling three axes costs one ``WHERE`` and one ``/`` per period.
    """

    def __init__(self, link: SerialLink, axes: dict[str, AxisConfig],
                 cache_s: float = 0.015, settle_timeout_s: float = 0.5,
                 tolerance_um: float = 0.2) -> None:
        if not axes:
            raise ValueError("stage: at least one axis must be configured")
        self.link = link
        self.axes = dict(axes)
        self.cache_s = cache_s
        self.settle_timeout_s = settle_timeout_s
        self.tolerance_um = tolerance_um
        self._where: tuple[float, dict[str, float]] | None = None
        self._busy: tuple[float, bool] | None = None
        self._targets: dict[str, tuple[float, float]] = {}

    # ------------------------------------------------------------------ protocol
    def _command(self, command: str) -> str:
        reply = self.link.query(command)
        if reply.startswith(":N"):
            code = reply[2:].lstrip("-").strip()
            raise self.link.refused(command, f"controller error {reply} "
                                             f"({ERRORS.get(code, 'unknown code')})")
        if not reply.startswith(":A"):
            raise self.link.garbled(command, reply, "':A ...' or ':N-<code>'")
        return reply[2:].strip()

    def where(self) -> dict[str, float]:
        """Positions (um) of every configured axis, by axis name."""
        with self.link.lock:
            now = time.monotonic()
            if self._where is not None and now - self._where[0] < self.cache_s:
                return dict(self._where[1])
            letters = [c.letter for c in self.axes.values()]
            command = "WHERE " + " ".join(letters)
            fields = self._command(command).split()
            if len(fields) != len(letters):
                raise self.link.garbled(command, " ".join(fields), f"{len(letters)} numbers")
            try:
                values = [float(f) / UNITS_PER_UM for f in fields]
            except ValueError:
                raise self.link.garbled(command, " ".join(fields), "numbers") from None
            pos = dict(zip(self.axes, values, strict=True))
            self._where = (time.monotonic(), pos)
            return dict(pos)

    def busy(self) -> bool:
        """The controller's busy flag (any axis moving)."""
        with self.link.lock:
            now = time.monotonic()
            if self._busy is not None and now - self._busy[0] < self.cache_s:
                return self._busy[1]
            reply = self.link.query("/")
            if reply[:1] not in ("B", "N"):
                raise self.link.garbled("/", reply, "'B' or 'N'")
            self._busy = (time.monotonic(), reply[:1] == "B")
            return self._busy[1]

    def move(self, axis: str, target_um: float) -> None:
        cfg = self.axes[axis]
        with self.link.lock:
            self._command(f"MOVE {cfg.letter}={round(target_um * UNITS_PER_UM)}")
            self._targets[axis] = (target_um, time.monotonic())
            self._where = self._busy = None

    def halt(self) -> None:
        with self.link.lock:
            try:
                self._command("HALT")
            except Exception as exc:  # code 21 "halted" is a success for HALT
                if ":N-21" not in str(exc):
                    raise
            self._targets.clear()
            self._where = self._busy = None

    def is_moving(self, axis: str) -> bool:
        if self.busy():
            return True
        target = self._targets.get(axis)
        if target is None:
            return False
        goal, t_cmd = target
        if abs(self.where()[axis] - goal) <= self.tolerance_um or \
                time.monotonic() - t_cmd > self.settle_timeout_s:
            self._targets.pop(axis, None)
            return False
        return True

    def axis(self, name: str) -> AsiStageAxis:
        return AsiStageAxis(self, name)


class AsiStageAxis(PositionerDriver):
    """One stage axis as a positioner (um)."""

    def __init__(self, stage: AsiStage, name: str) -> None:
        if name not in stage.axes:
            raise ValueError(f"stage has no axis {name!r} (configured: {sorted(stage.axes)})")
        cfg = stage.axes[name]
        self.stage = stage
        self.name = name
        self.units = "um"
        self.limits = cfg.limits_um
        self.velocity = cfg.velocity_um_s
        self.precision = 1

    def move(self, target: float) -> None:
        self.check(target)
        self.stage.move(self.name, target)

    def position(self) -> float:
        return self.stage.where()[self.name]

    def is_moving(self) -> bool:
        return self.stage.is_moving(self.name)

    def stop(self) -> None:
        self.stage.halt()

    @property
    def busy(self) -> bool:
        """True while a command to the controller is in flight."""
        return self.stage.link.busy
