"""The analyzer's own error estimate, from looking back at each trigger.

Why: a prediction's standard error from its fit sees only the scatter of the phases
it was fitted to; it misses a rate that changes, an irregular beat, and phase errors
that repeat from beat to beat (the published implementation's estimate was 2-3x off
in both directions). But once the frames after a trigger have arrived, the analyzer
can measure where the heart really was at the fire time, in its own phase
coordinates, from frames on both sides (a short weighted line through them:
interpolation, far better than extrapolation). The spread of those hindsight errors
over the recent triggers is an honest estimate of the next trigger's error.

No ground truth is used: only the analyzer's own phases.
"""

from __future__ import annotations

import math
from collections import deque

import numpy as np

from .predict import PhaseHistory, weighted_line


class Hindsight:
    """Pending triggers, their hindsight errors, and the estimate built from them."""

    def __init__(self, keep: int = 30, min_errors: int = 5) -> None:
        self.errors: deque[float] = deque(maxlen=keep)
        self.min_errors = min_errors
        self._pending: list[tuple[float, float, int]] = []  # fire time, goal, ref id

    def add(self, fire_time: float, goal: float, ref_id: int) -> None:
        """A trigger fired at ``fire_time`` meant to hit unwrapped phase ``goal``."""
        self._pending.append((fire_time, goal, ref_id))

    def update(self, hist: PhaseHistory, period_s: float) -> None:
        """Resolve pending triggers that now have frames on both sides."""
        if not self._pending or len(hist) < 3:
            return
        t = np.fromiter(hist.t, float, len(hist))
        half = 0.5 * period_s  # reaches moving frames even from a quiet diastole
        still = []
        for fire, goal, ref_id in self._pending:
            if ref_id != hist.ref_id:
                continue  # the phase coordinates changed: this one cannot be judged
            if t[-1] < fire + half:
                still.append((fire, goal, ref_id))
                continue
            sel = np.abs(t - fire) <= half
            if sel.sum() < 3 or not (t[sel].min() < fire < t[sel].max()):
                continue
            u = np.fromiter(hist.phase, float, len(hist))[sel]
            w = np.fromiter(hist.weight, float, len(hist))[sel]
            if not w.max() > 0:
                continue
            slope, icpt, _ = weighted_line(t[sel] - fire, u, np.maximum(w / w.max(), 1e-4))
            self.errors.append(math.remainder(icpt - goal, 2.0 * math.pi))  # circular
        self._pending = still

    def estimate(self, fallback: float) -> float:
        """SD (rad) of the recent hindsight errors; ``fallback`` until there are enough."""
        if len(self.errors) < self.min_errors:
            return fallback
        e = np.array(self.errors)
        e = e - np.median(e)
        # a hindsight line can itself fail (an irregular beat inside its window): errors
        # beyond 4 robust SDs are such failures, not triggers that far off
        robust = 1.4826 * float(np.median(np.abs(e)))
        kept = e[np.abs(e) <= max(4.0 * robust, 1e-3)]
        return float(np.sqrt(np.mean((kept - kept.mean()) ** 2)))
