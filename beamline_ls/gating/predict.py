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
- timestamp-gap rejection: no window spans more than ``max_gap_phase`` of the beat
  (half of it) without a frame, nor times that do not increase. Shorter gaps (dropped
  frames, a camera or an analysis that falls behind) are fitted across: each phase
  is unwrapped by the time elapsed (`PhaseHistory.add`'s ``advance``), so a missing
  frame only leaves the line fewer points. Rejecting every window with one interval
  2.5x the shortest, as the published code does, cost a camera dropping one frame
  in ten 3 of 38 beats (80 frames/s, a recorded heart; now 1, in a 0.3 s stall);
- sanity: fitted rate within a factor of the reference rate, small residual.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import stdtrit

from .linefit import REJECT_REASONS, choose_window, line_without_outliers

TWO_PI = 2.0 * math.pi

#: why the predictor gave no prediction on a frame of a lock (`Predictor.last_reject`),
#: in a user's words (replay's summary of a lock with few triggers reads them here)
REFUSALS = {
    "implausible rate": "the phase read from the frames did not advance at the heart's "
                        "rate (its images may repeat within a beat, or not match the "
                        "reference)",
    "poor fit": "the phases read from the frames scattered too much to predict a beat",
    "no informative frames": "no frame told where in the beat it was",
    "timestamp gap": "frames were missing for more than half a beat",
    "degenerate fit": "the frames fitted were too close in time",
}


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
    phase_sd: float = math.nan  # rad: standard error of the line at t_target


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

    def add(self, t: float, wrapped_phase: float, frame_id: int, weight: float = 1.0,
            advance: float | None = None) -> float:
        """Append a phase and its relative inverse variance; returns it unwrapped.

        ``advance`` (rad): the expected advance since the previous phase (the time
        since it at the beat's rate); the phase is then unwrapped to the cycle that
        puts it nearest to the previous phase plus that advance. Without it, a step
        back of more than half a cycle counts as a new cycle.
        """
        if not self.phase:
            u = wrapped_phase
        elif advance is None:
            u = unwrap_step(self.phase[-1], wrapped_phase)
        else:
            expected = self.phase[-1] + advance
            u = wrapped_phase + TWO_PI * round((expected - wrapped_phase) / TWO_PI)
        self.t.append(t)
        self.phase.append(u)
        self.frame_id.append(frame_id)
        self.weight.append(weight)
        return u

    def __len__(self) -> int:
        return len(self.t)


@dataclass(slots=True)
class Predictor:
    """Least-squares line through the recent unwrapped phases; see module docstring.

    The fit window is chosen per prediction among ``fit_periods`` (lengths in
    periods): the one whose line has the smallest standard error at the target
    time. Why: a short window follows rate changes but averages few frames; a long
    one averages noise but bends with the rate. Which wins depends on the heart and
    the camera (a faint heart's phases scatter ten times more than a contrasted
    one's), and the residuals of each fit measure exactly that trade. A window is
    only a candidate while its predicted crossing agrees with every shorter window's
    (confidence intervals at level ``window_agreement``, `choose_window`): after a beat that
    ran 20-30 % long, a long window's residuals hid the bend, and its triggers in and
    just after that beat landed 0.2-0.26 rad off (a recorded heart at 80 frames/s).
    """

    min_fit: int = 3
    max_fit: int = 64
    fit_periods: tuple[float, ...] = (0.25, 0.35, 0.5, 0.75)
    max_gap_phase: float = math.pi  # rad of the beat without a frame
    max_residual: float = 0.6  # rad
    rate_tolerance: float = 0.35  # fitted rate within +-35 % of the reference rate
    window_agreement: float = 0.95  # confidence level; 0: no agreement check
    use_barrier: bool = False
    last_reject: str = ""

    def predict(self, hist: PhaseHistory, period_s: float, t_from: float,
                target_phase: float, barrier_phase: float | None = None
                ) -> Prediction | None:
        """Next absolute time >= ``t_from`` at which the phase equals ``target_phase``."""
        n = len(hist)
        return self.predict_arrays(np.fromiter(hist.t, float, n),
                                   np.fromiter(hist.phase, float, n),
                                   np.fromiter(hist.weight, float, n), period_s, t_from,
                                   target_phase, barrier_phase)

    def predict_arrays(self, t: np.ndarray, ph: np.ndarray, wt: np.ndarray,
                       period_s: float, t_from: float, target_phase: float,
                       barrier_phase: float | None = None) -> Prediction | None:
        """`predict` on a history given as arrays (times, unwrapped phases, weights),
        e.g. phases with a correction applied, without building a `PhaseHistory`."""
        n = t.size
        if n < self.min_fit:
            self.last_reject = "short history"
            return None
        if t[-1] - t[0] < period_s * (1.0 - 1e-9) - 1e-12:
            self.last_reject = "less than one period of history"
            return None
        floor = max(0, n - self.max_fit)
        if self.use_barrier and barrier_phase is not None:
            # latest index whose unwrapped phase crossed the barrier
            k = math.floor((ph[-1] - barrier_phase) / TWO_PI)
            cross = int(np.searchsorted(ph, barrier_phase + TWO_PI * k))
            floor = max(floor, min(cross, n - self.min_fit))
        lows = sorted({min(max(floor, int(np.searchsorted(t, t[-1] - periods * period_s))),
                           n - self.min_fit) for periods in self.fit_periods})
        lo, why = self._choose_window(t, ph, wt, lows, period_s, t_from, target_phase)
        if lo < 0:
            self.last_reject = why
            return None
        pred, why = self._fit(t[lo:], ph[lo:], wt[lo:], period_s, t_from, target_phase)
        self.last_reject = why
        return pred

    def _choose_window(self, t: np.ndarray, ph: np.ndarray, wt: np.ndarray,
                       lows: list[int], period_s: float, t_from: float,
                       target_phase: float) -> tuple[int, str]:
        """Start index of the window whose line has the smallest standard error at the
        target (every window ends at the newest frame), or (-1, why). The chosen
        window is then fitted in full by `_fit` (outliers and all)."""
        if not wt.max() > 0:
            return -1, "no informative frames"  # one of REFUSALS
        w = np.maximum(wt / wt.max(), 1e-4)
        best, reject = choose_window(t, ph, w, np.asarray(lows, np.int64),
                                     TWO_PI / period_s, self.max_gap_phase, self.rate_tolerance,
                                     t_from, target_phase,
                                     _t_quantiles(self.window_agreement, self.max_fit))
        return int(best), REJECT_REASONS[reject]

    def _fit(self, tw: np.ndarray, pw: np.ndarray, ww: np.ndarray, period_s: float,
             t_from: float, target_phase: float) -> tuple[Prediction | None, str]:
        """The line through a window `_choose_window` accepted (no gap, spread in time,
        informative frames), outliers dropped, and its prediction.

        A frame the reference cannot place (an unusually strong or weak beat, a blood
        cell crossing) gets a phase far off; one such frame would tilt the line for a
        whole window. A point is dropped when, left out, its distance to the line
        through the rest is over 4 times the scatter expected at its weight (and over
        0.05 rad); at most a quarter of the window goes, and never below ``min_fit``
        (or 3) points.
        """
        ww = np.maximum(ww / ww.max(), 1e-4)
        slope, icpt, sw, wrss, tm, sxx, n_w = line_without_outliers(
            tw - tw[-1], pw, ww, max(self.min_fit, 3))  # icpt: phase at t = tw[-1]
        nominal = TWO_PI / period_s
        if not (1 - self.rate_tolerance) * nominal < slope < (1 + self.rate_tolerance) * nominal:
            return None, "implausible rate"
        rms = math.sqrt(wrss / sw)
        if rms > self.max_residual:
            return None, "poor fit"
        phase_from = icpt + slope * (t_from - tw[-1])
        k = math.ceil((phase_from - target_phase) / TWO_PI)
        goal = target_phase + TWO_PI * k
        t_target = tw[-1] + (goal - icpt) / slope
        # standard error of the line at t_target: phase variances are c / w with the
        # scale c estimated from the weighted scatter about the line
        c = wrss / max(n_w - 2, 1)
        h = (t_target - tw[-1]) - tm
        se = math.sqrt(c * (1.0 / sw + h * h / sxx)) if n_w > 2 else math.inf
        return Prediction(float(t_target), int(k), float(slope), int(n_w), rms, se), ""


@lru_cache(maxsize=8)
def _t_quantiles(level: float, max_dof: int) -> np.ndarray:
    """Two-sided Student's t quantiles at ``level`` for 1..``max_dof`` degrees of
    freedom (empty for level 0)."""
    if level <= 0:
        return np.empty(0)
    return stdtrit(np.arange(1, max_dof + 1), 0.5 + 0.5 * level)


def reckon(t: Sequence[float], phase: Sequence[float], info: Sequence[float],
           t_now: float, rate: float, span_s: float, share: float = 0.25) -> float:
    """The unwrapped phase at ``t_now`` by dead reckoning from the newest phase that
    says where the beat was: the newest of the last ``span_s`` s whose information
    (``info``) is at least ``share`` of the most informative one's there, advanced to
    ``t_now`` at ``rate`` (rad/s).

    Why not always the newest phase: in a stretch of the beat where the heart is
    still, each frame is placed mid-stretch with little information, so the newest
    phase says little about where the beat is when the heart moves again; the last
    frame that moved before the stretch says it well. Where every frame says about as
    much (a faint heart) the newest is the one taken: older ones carried on at a
    constant rate are off by however the beat's pace varied since (the faint recorded
    heart of the tests: 0.037 rad from the newest, 0.064 from an average over half a
    beat).
    """
    n = len(t)
    horizon = t[n - 1] - span_s
    first = n - 1
    best = 0.0
    while first >= 0 and t[first] >= horizon:
        best = max(best, info[first])
        first -= 1
    j = n - 1
    if best > 0:
        while j > first + 1 and info[j] < share * best:
            j -= 1
    return phase[j] + rate * (t_now - t[j])


def weighted_line(t: np.ndarray, p: np.ndarray, w: np.ndarray
                  ) -> tuple[float, float, np.ndarray]:
    """Weighted least-squares line p = icpt + slope * t; slope, icpt, residuals."""
    sw = float(w.sum())
    tm, pm = float((w * t).sum()) / sw, float((w * p).sum()) / sw
    slope = float((w * (t - tm) * (p - pm)).sum() / (w * (t - tm) ** 2).sum())
    icpt = pm - slope * tm
    return slope, icpt, p - (icpt + slope * t)
