"""Score gating decisions against a TRUE heart phase (never the analyzer's own view).

The rules are the ones a user checks a gating system by:
- a trigger takes effect no earlier than its frame's timestamp + latency (the earliest
  the hardware could act); an earlier fire time counts as *early*;
- SD: circular SD of the true phase at the effective trigger times;
- beats: of the heartbeats after the first lock (occurrences of the locked true phase),
  the fraction that got a trigger; a second trigger in one beat is a *duplicate*;
- time to lock: first frame whose decision is ``locked``, from the first frame;
- self-estimated error: RMS of the analyzer's per-trigger estimate, shown beside the
  true SD (the ratio says how honest the estimate is).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .analyzer import Decision

TWO_PI = 2.0 * math.pi


def circular_mean(angles: np.ndarray) -> float:
    """Circular mean (rad) in [0, 2*pi)."""
    a = np.asarray(angles, float)
    return float(np.mod(np.arctan2(np.sin(a).mean(), np.cos(a).mean()), TWO_PI))


def circular_sd(angles: np.ndarray) -> float:
    """Circular standard deviation sqrt(-2 ln R) in rad (equals the SD for small spread)."""
    a = np.asarray(angles, float)
    r = math.hypot(float(np.cos(a).mean()), float(np.sin(a).mean()))
    return math.sqrt(-2.0 * math.log(max(r, 1e-300)))


def wrap_pm_pi(a: np.ndarray | float) -> np.ndarray:
    """Angles wrapped into [-pi, pi)."""
    return np.mod(np.asarray(a) + math.pi, TWO_PI) - math.pi


def effective_fire_times(decisions: Sequence[Decision], latency_s: float) -> np.ndarray:
    """When each trigger takes effect (s): its fire time, but no earlier than its
    frame's timestamp + ``latency_s``, the earliest the hardware could act."""
    return np.array([max(d.fire_time, d.timestamp + latency_s) for d in decisions
                     if d.fire_time is not None], float)


@dataclass(frozen=True, slots=True)
class Score:
    """How one gated video went, against its true phase."""

    n_frames: int
    n_triggers: int
    sd_rad: float  # circular SD of the true phase at effective trigger times
    beats: float  # fraction of beats after the first lock with >= 1 trigger
    n_beats: int
    duplicates: int
    early: int
    panic: int
    t_lock_s: float  # from the first frame; nan: never locked
    est_err_rad: float  # RMS of the analyzer's own per-trigger error estimate
    locked_phase: float  # circular mean of the true phase at the triggers

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def score_decisions(decisions: Sequence[Decision],
                    true_phase: Callable[[np.ndarray], np.ndarray],
                    latency_s: float) -> Score:
    """Score per-frame decisions; ``true_phase`` maps times to unwrapped true phase."""
    ts = np.array([d.timestamp for d in decisions], float)
    fires = [(d.fire_time, d.timestamp, d.error_estimate, d.trigger_kind)
             for d in decisions if d.fire_time is not None]
    locked = [d.timestamp for d in decisions if d.state == "locked"]
    t_lock = locked[0] - ts[0] if locked else math.nan
    n = len(decisions)
    if not fires:
        return Score(n, 0, math.nan, 0.0, 0, 0, 0, 0, t_lock, math.nan, math.nan)
    fire = np.array([f[0] for f in fires])
    frame_t = np.array([f[1] for f in fires])
    est = np.array([f[2] for f in fires], float)
    early = int(np.sum(fire < frame_t + latency_s - 1e-9))
    eff = effective_fire_times(decisions, latency_s)
    eff = eff[eff <= ts[-1]]  # the video ends there: no truth after it
    if eff.size == 0:
        return Score(n, 0, math.nan, 0.0, 0, 0, early, 0, t_lock, math.nan, math.nan)
    th = true_phase(eff)
    if not np.all(np.isfinite(th)):  # no heart: every trigger is a false one
        return Score(n, int(eff.size), math.nan, math.nan, 0, 0, early, 0, t_lock,
                     math.nan, math.nan)
    lp = circular_mean(th)
    sd = circular_sd(th) if eff.size > 1 else math.nan
    # beats: occurrences of the locked phase after the first lock, up to the last frame
    t0 = ts[0] + (t_lock if t_lock == t_lock else 0.0)
    ph0, ph1 = true_phase(np.array([t0, ts[-1]]))
    c_first = math.ceil((ph0 - lp) / TWO_PI)
    c_last = math.floor((ph1 - lp) / TWO_PI)
    n_beats = max(0, c_last - c_first + 1)
    cyc = np.round((th - lp) / TWO_PI).astype(int)
    in_range = cyc[(cyc >= c_first) & (cyc <= c_last)]
    got = np.unique(in_range).size
    duplicates = int(cyc.size - np.unique(cyc).size)
    est_ok = est[np.isfinite(est)]
    est_rms = float(np.sqrt(np.mean(est_ok ** 2))) if est_ok.size else math.nan
    panic = sum(1 for f in fires if f[3] == "panic")
    return Score(n, int(eff.size), sd, got / n_beats if n_beats else math.nan, n_beats,
                 duplicates, early, panic, t_lock, est_rms, lp)
