"""Phase unwrapping and least-squares prediction of the next target time.

What: per-frame phases (mid-exposure absolute times) are unwrapped into a monotonic
phase history; a straight line phase(t) fitted to the recent history predicts when the
unwrapped phase next equals target + 2*pi*k.

Guards, each of which the published code found necessary:
- fit barrier: entries carry the reference id; only entries of the current reference
  are ever fitted (phases from different references are different coordinates);
- one period of history on the current reference before any prediction;
- optional phase barrier: the fit does not reach back past the latest crossing of the
  reference's barrier phase (end of the quiet stretch, where phases are unreliable);
- timestamp-gap rejection: no prediction if the largest interval in the fit window
  exceeds ``gap_ratio`` times the smallest (a dropped frame or a stall);
- sanity: fitted rate within a factor of the reference rate, small residual.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * math.pi


def unwrap_step(prev_unwrapped: float, new_wrapped: float) -> float:
    """Next unwrapped phase: a step below -pi is a new cycle (+2*pi)."""
    step = new_wrapped - (prev_unwrapped % TWO_PI)
    if step < -math.pi:
        step += TWO_PI
    return prev_unwrapped + step


@dataclass(frozen=True, slots=True)
class Prediction:
    t_target: float  # absolute time (s) the target phase is reached next after t_from
    cycle: int  # k in target + 2*pi*k (unwrapped cycle index of that occurrence)
    rate: float  # fitted d(phase)/dt, rad/s
    n_fit: int
    residual_rms: float  # rad


class PhaseHistory:
    """Unwrapped phase history for the current reference (cleared at every refresh)."""

    def __init__(self, maxlen: int = 256) -> None:
        self.t: deque[float] = deque(maxlen=maxlen)
        self.phase: deque[float] = deque(maxlen=maxlen)
        self.frame_id: deque[int] = deque(maxlen=maxlen)
        self.weight: deque[float] = deque(maxlen=maxlen)
        self.ref_id = -1

    def clear(self, ref_id: int) -> None:
        """Fit barrier: forget everything measured against an earlier reference."""
        self.t.clear()
        self.phase.clear()
        self.frame_id.clear()
        self.weight.clear()
        self.ref_id = ref_id

    def add(self, t: float, wrapped_phase: float, frame_id: int, weight: float = 1.0
            ) -> float:
        """Append a phase; ``weight`` is its inverse variance up to a common factor."""
        u = wrapped_phase if not self.phase else unwrap_step(self.phase[-1], wrapped_phase)
        self.t.append(t)
        self.phase.append(u)
        self.frame_id.append(frame_id)
        self.weight.append(weight)
        return u

    def __len__(self) -> int:
        return len(self.t)


@dataclass(slots=True)
class Predictor:
    """Least-squares line through the recent unwrapped phases; see module docstring."""

    min_fit: int = 3
    max_fit: int = 32
    max_fit_periods: float = 0.5  # fit window at most this many periods long
    gap_ratio: float = 2.5
    max_residual: float = 0.35  # rad
    rate_tolerance: float = 0.35  # fitted rate within +-35 % of the reference rate
    use_barrier: bool = False
    weighted: bool = False  # weight each phase by its V sharpness squared
    last_reject: str = ""

    def predict(self, hist: PhaseHistory, period_s: float, t_from: float,
                target_phase: float, barrier_phase: float | None = None
                ) -> Prediction | None:
        """Next absolute time >= ``t_from`` at which the phase equals ``target_phase``."""
        n = len(hist)
        if n < self.min_fit:
            self.last_reject = "short history"
            return None
        t = np.fromiter(hist.t, float, n)
        ph = np.fromiter(hist.phase, float, n)
        if t[-1] - t[0] < period_s * (1.0 - 1e-9) - 1e-12:
            self.last_reject = "less than one period of history"
            return None
        # window: at most max_fit frames and max_fit_periods periods
        lo = max(0, n - self.max_fit)
        lo = max(lo, int(np.searchsorted(t, t[-1] - self.max_fit_periods * period_s)))
        if self.use_barrier and barrier_phase is not None:
            # latest index whose unwrapped phase crossed the barrier
            k = math.floor((ph[-1] - barrier_phase) / TWO_PI)
            b = barrier_phase + TWO_PI * k
            cross = int(np.searchsorted(ph, b))
            lo = max(lo, min(cross, n - self.min_fit))
        lo = min(lo, n - self.min_fit)
        tw = t[lo:]
        pw = ph[lo:]
        dts = np.diff(tw)
        if dts.size and (dts.min() <= 0 or dts.max() > self.gap_ratio * dts.min()):
            self.last_reject = "timestamp gap"
            return None
        ww = np.fromiter(hist.weight, float, n)[lo:] if self.weighted else np.ones(tw.size)
        ww = np.maximum(ww, 1e-3 * ww.max()) if ww.max() > 0 else np.ones(tw.size)
        tc = tw - tw[-1]
        sw = ww.sum()
        tm = float((ww * tc).sum() / sw)
        pm = float((ww * pw).sum() / sw)
        var = float((ww * (tc - tm) ** 2).sum())
        if var <= 0:
            self.last_reject = "degenerate fit"
            return None
        slope = float((ww * (tc - tm) * (pw - pm)).sum() / var)
        icpt = pm - slope * tm  # phase at t = tw[-1]
        nominal = TWO_PI / period_s
        if not (1 - self.rate_tolerance) * nominal < slope < (1 + self.rate_tolerance) * nominal:
            self.last_reject = "implausible rate"
            return None
        resid = pw - (icpt + slope * tc)
        rms = float(math.sqrt(float((ww * resid ** 2).sum() / sw)))
        if rms > self.max_residual:
            self.last_reject = "poor fit"
            return None
        phase_from = icpt + slope * (t_from - tw[-1])
        k = math.ceil((phase_from - target_phase) / TWO_PI)
        goal = target_phase + TWO_PI * k
        t_target = tw[-1] + (goal - icpt) / slope
        self.last_reject = ""
        return Prediction(float(t_target), int(k), slope, int(tw.size), rms)
