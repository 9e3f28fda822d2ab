"""Piezo and vertical galvos as positioners when an NI board drives them.

The NI scan board owns the AO channels; a manual move is a static write through the
board (:meth:`NidaqScanBoard.write_static`), refused while waveforms play, exactly as
the simulated positioners refuse moves while the simulated board scans. The piezo
reads its position from the monitor AI channel when one is wired, else it reports
the last commanded position; a move counts as done after the board's settle time.
"""

from __future__ import annotations

import time

from beamline_ls.hardware.nidaq_scanboard import NidaqScanBoard
from beamline_ls.hardware.positioner import PositionerDriver


class NidaqAxis(PositionerDriver):
    """One AO channel of the NI scan board as a positioner.

    ``kind`` is ``"piezo"`` (units um, through the board's um/V calibration) or
    ``"galvo"`` (units V).
    """

    def __init__(self, board: NidaqScanBoard, channel: str, kind: str) -> None:
        if kind not in ("piezo", "galvo"):
            raise ValueError(f"kind must be 'piezo' or 'galvo', got {kind!r}")
        cfg = board.config
        self.board = board
        self.channel = channel
        self.kind = kind
        if kind == "piezo":
            self.units, self.precision = "um", 3
            self.limits = cfg.piezo_travel_um
        else:
            self.units, self.precision = "V", 4
            self.limits = (float(cfg.galvo_range_v[0]), float(cfg.galvo_range_v[1]))
        self._target: float | None = None
        self._moved_at = float("-inf")

    def _volts(self, value: float) -> float:
        if self.kind == "piezo":
            return float(self.board.config.piezo_volts(value))
        return float(value)

    def move(self, target: float) -> None:
        self.check(target)
        if self.board.running:
            raise RuntimeError("the scan board is driving this axis; stop the scan first")
        self.board.write_static({self.channel: self._volts(target)})
        self._target, self._moved_at = float(target), time.monotonic()

    def position(self) -> float:
        if self.kind == "piezo":
            measured = self.board.read_piezo_um()
            if measured is not None:
                return measured
        if self._target is not None:
            return self._target
        last = self.board.static_volts(self.channel)
        if last is None:
            return float(min(max(0.0, self.limits[0]), self.limits[1]))
        if self.kind == "piezo":
            return float(self.board.config.piezo_um(last))
        return float(last)

    def is_moving(self) -> bool:
        if self.board.running:
            return True
        return time.monotonic() - self._moved_at < self.board.config.settle_s

    def stop(self) -> None:
        """A static output cannot be stopped halfway; nothing to do."""
