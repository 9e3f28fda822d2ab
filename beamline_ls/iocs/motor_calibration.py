"""A motor record's user calibration: offset, direction and limits, and its autosave.

The EPICS motor record keeps two coordinate systems. *Dial* is the controller's own
(``DVAL``, ``DRBV``, dial limits ``DHLM``/``DLLM``); *user* is what people type:
``user = dial * (+1 or -1 by DIR) + OFF``. ``SET``/``USE`` recalibrates by changing
``OFF`` so the current position reads as the value written, without moving anything;
the user limits follow the dial limits through the same formula. The dial limits never
leave the axis's hardware travel: a limit beyond it is clamped (and read back so).

The calibration is what a facility expects to survive an IOC restart, so every change
is saved at once to a small JSON file under the data directory (written to a temporary
name and renamed: a crash never leaves half a file), and loaded when the IOC starts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from beamline_ls.iocs.autosave import write_json_atomic

log = logging.getLogger(__name__)


@dataclass
class MotorCalibration:
    """User/dial conversion of one axis; ``travel`` is the hardware's dial range."""

    travel: tuple[float, float]
    offset: float = 0.0
    direction: int = 1  # +1: DIR "Pos", -1: "Neg"
    dial_low: float | None = None
    dial_high: float | None = None

    def __post_init__(self) -> None:
        lo, hi = self.travel
        self.dial_low = lo if self.dial_low is None else min(max(self.dial_low, lo), hi)
        self.dial_high = hi if self.dial_high is None else min(max(self.dial_high, lo), hi)

    def user(self, dial: float) -> float:
        return self.direction * dial + self.offset

    def dial(self, user: float) -> float:
        return (user - self.offset) * self.direction

    @property
    def user_limits(self) -> tuple[float, float]:
        a, b = self.user(self.dial_low), self.user(self.dial_high)
        return (min(a, b), max(a, b))

    def clamp_dial(self, value: float) -> float:
        lo, hi = self.travel
        return min(max(value, lo), hi)

    def set_dial_limit(self, high: bool, value: float) -> None:
        """Set DHLM (``high``) or DLLM, clamped to the travel; refuses crossing the other."""
        value = self.clamp_dial(value)
        if high and value < self.dial_low or not high and value > self.dial_high:
            raise ValueError(f"dial {'high' if high else 'low'} limit {value:g} would cross "
                             f"the {'low' if high else 'high'} limit")
        if high:
            self.dial_high = value
        else:
            self.dial_low = value

    def set_user_limit(self, high: bool, value: float) -> None:
        """Set HLM (``high``) or LLM through the dial limit it maps to."""
        dial = self.dial(value)
        # with DIR Neg the user high limit is the dial low limit
        self.set_dial_limit(high if self.direction > 0 else not high, dial)

    def within_limits(self, user: float, tolerance: float = 0.0) -> bool:
        lo, hi = self.user_limits
        return lo - tolerance <= user <= hi + tolerance

    # ---------------------------------------------------------------- autosave
    def save(self, path: Path) -> None:
        """Write the calibration atomically (temporary name, fsync, rename)."""
        write_json_atomic(path, {k: v for k, v in asdict(self).items() if k != "travel"})

    @classmethod
    def load(cls, path: Path, travel: tuple[float, float]) -> MotorCalibration:
        """The saved calibration, or the default one (logged) if there is none or it
        cannot be read; dial limits are clamped to today's travel."""
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            cal = cls(travel=travel, offset=float(fields["offset"]),
                      direction=-1 if int(fields["direction"]) < 0 else 1,
                      dial_low=float(fields["dial_low"]), dial_high=float(fields["dial_high"]))
        except FileNotFoundError:
            return cls(travel=travel)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the saved motor calibration %s (%s); using the defaults",
                        path, exc)
            return cls(travel=travel)
        log.info("motor calibration restored from %s: offset %g, direction %+d, dial "
                 "limits [%g, %g]", path, cal.offset, cal.direction, cal.dial_low,
                 cal.dial_high)
        return cal
