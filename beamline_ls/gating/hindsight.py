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

#: a hindsight line runs at the heart's rate: one whose rate differs from the
#: reference's by more than this factor either way did not follow the heart (frames
#: around the trigger that were phased wrongly, e.g. just after a lock); an irregular
#: beat that lasts 30 % longer runs at 0.77 of it and is kept
RATE_RANGE = 1.5
#: half-widths (in periods) of the hindsight line's window, tried shortest first
HALF_WINDOWS = (0.3, 0.5)
#: frames a shorter window needs on each side of the fire time: a line through fewer
#: reads its own noise (at 20-27 frames/s, +-0.3 period holds 2-3 a side, and the
#: estimate read 0.6x the truth); the widest window is used with whatever it holds
MIN_PER_SIDE = 4


class Hindsight:
    """Pending triggers, their hindsight errors, and the estimate built from them."""

    def __init__(self, keep: int = 30, min_errors: int = 5) -> None:
        self.errors: deque[float] = deque(maxlen=keep)
        self.line_var: deque[float] = deque(maxlen=keep)  # each error's own variance
        self.min_errors = min_errors
        self._pending: list[tuple[float, float, int]] = []  # fire time, goal, ref id

    def add(self, fire_time: float, goal: float, ref_id: int) -> None:
        """A trigger fired at ``fire_time`` meant to hit unwrapped phase ``goal``."""
        self._pending.append((fire_time, goal, ref_id))

    def update(self, hist: PhaseHistory, period_s: float) -> None:
        """Resolve pending triggers that now have frames on both sides.

        The line through the frames around the fire time spans +-``HALF_WINDOWS`` of a
        period, the shortest that holds a line at the heart's rate: a longer one bends
        with the rate and with the reference's own unevenness over the beat, which it
        reads as trigger error (sim heart at 80 fps: hindsight spread 0.0080 rad over
        +-0.5 period, 0.0050 over +-0.3, true 0.0054); a wider one is needed where the
        fire time lies in a quiet stretch, whose frames say little of the phase, and
        at low frame rates (`MIN_PER_SIDE`)."""
        if not self._pending or len(hist) < 3:
            return
        newest, wait = hist.t[-1], HALF_WINDOWS[-1] * period_s
        # the phase coordinates changed for a trigger of another reference: it cannot
        # be judged; one whose widest window has not passed yet waits
        pending = [p for p in self._pending if p[2] == hist.ref_id]
        ready = [p for p in pending if newest >= p[0] + wait]
        self._pending = [p for p in pending if newest < p[0] + wait]
        if not ready:  # most frames: no history copied
            return
        t = np.fromiter(hist.t, float, len(hist))
        phase = np.fromiter(hist.phase, float, len(hist))
        weight = np.fromiter(hist.weight, float, len(hist))
        for fire, goal, _ in ready:
            for i, half in enumerate(HALF_WINDOWS):
                per_side = MIN_PER_SIDE if i < len(HALF_WINDOWS) - 1 else 1
                found = _line_at(t, phase, weight, fire, half * period_s, period_s,
                                 per_side)
                if found is not None:
                    icpt, var = found
                    self.errors.append(math.remainder(icpt - goal, 2.0 * math.pi))
                    self.line_var.append(var)
                    break

    def estimate(self, fallback: float) -> float:
        """SD (rad) of the recent hindsight errors; ``fallback`` until there are enough."""
        if len(self.errors) < self.min_errors:
            return fallback
        # every error counts, the largest too: a trigger thrown by an irregular beat is
        # the error a user gets, and hindsight measures it (on recorded hearts at 20
        # fps its errors of 0.3 rad matched the true ones to 0.02); leaving them out
        # read the spread of the triggers at half its true size.
        # Each error is the trigger's plus the hindsight line's own (its frames' noise
        # through the fit); their variances add, so the line's is taken out. At most
        # three quarters of the spread: the line's variance is itself estimated from a
        # dozen frames or so, and the two are not quite independent (the line and the
        # prediction share the frames before the fire time).
        e = np.array(self.errors)
        spread = float(np.mean((e - e.mean()) ** 2))
        own = float(np.mean(self.line_var))
        return math.sqrt(max(spread - own, 0.25 * spread))


def _line_at(t: np.ndarray, u: np.ndarray, w: np.ndarray, fire: float, half: float,
             period_s: float, per_side: int) -> tuple[float, float] | None:
    """(phase at ``fire``, its variance) from the weighted line through the frames
    within ``half`` s of it, or None when fewer than ``per_side`` lie on either side
    (3 in all at least) or the line does not run at the heart's rate (frames it
    could not phase)."""
    sel = np.abs(t - fire) <= half
    before = int(np.count_nonzero(sel & (t < fire)))
    after = int(np.count_nonzero(sel & (t > fire)))
    if sel.sum() < 3 or min(before, after) < per_side:
        return None
    ws = w[sel]
    if not ws.max() > 0:
        return None
    tt, ww = t[sel] - fire, np.maximum(ws / ws.max(), 1e-4)
    slope, icpt, res = weighted_line(tt, u[sel], ww)
    if not 1.0 / RATE_RANGE <= slope * period_s / (2.0 * math.pi) <= RATE_RANGE:
        return None
    return icpt, _intercept_variance(tt, ww, res)


def _intercept_variance(t: np.ndarray, w: np.ndarray, res: np.ndarray) -> float:
    """Variance of a weighted line's value at ``t = 0`` from its residuals; ``w`` are
    relative inverse variances, their scale read off the residuals."""
    n = t.size
    if n <= 2:
        return 0.0
    sw = float(w.sum())
    tm = float((w * t).sum()) / sw
    sxx = float((w * (t - tm) ** 2).sum())
    scale = float((w * res ** 2).sum()) / (n - 2)
    return scale * (1.0 / sw + tm * tm / sxx) if sxx > 0 else 0.0
