"""A heartbeat's ground-truth phase over time, separate from how the heart looks.

Why: a gating corpus scores every trigger against the TRUE phase of the heart, and the
same phase history must drive very different hearts (a recorded heartbeat replayed, a
two-chamber heart, a peristaltic tube). `BeatProcess` is that history; renderers only
ask it for the phase at a time and for the beat a time falls in.

Model. The instantaneous rate (Hz) is ``f0 * (1 + m sin(2 pi t / Tm + a)) * (1 + w(t))``
with ``w`` an Ornstein-Uhlenbeck wander (SD ``wander_frac``, correlation ``wander_tau_s``).
A chosen number of beats are irregular: the whole beat runs ``1 + stretch`` times
longer (or shorter). Each beat also has an amplitude factor (how strongly this beat
contracts), drawn uniformly from ``amplitude_range``, for renderers that use it. After
``stop_s`` the heart stops (rate 0, phase frozen). Phase is unwrapped radians,
tabulated on a fine grid and interpolated, so it is vectorised and deterministic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TWO_PI = 2.0 * math.pi


def ou_wander(rng: np.random.Generator, t: np.ndarray, span_s: float, frac: float,
              tau_s: float, t0: float = 0.0) -> np.ndarray:
    """Ornstein-Uhlenbeck rate wander (zero mean, SD ``frac``, correlation ``tau_s``) at
    times ``t``: exact discretisation on a 10 ms grid covering ``span_s`` from ``t0``
    (the wander is slow, tau ~ seconds), linearly interpolated onto ``t``."""
    if frac <= 0:
        return np.zeros(t.shape)
    dtc = 0.01
    nc = int(math.ceil(span_s / dtc)) + 2
    a = math.exp(-dtc / tau_s)
    eps = rng.standard_normal(nc) * frac * math.sqrt(1 - a * a)
    wc = np.empty(nc)
    wc[0] = rng.standard_normal() * frac
    for i in range(1, nc):
        wc[i] = a * wc[i - 1] + eps[i]
    return np.interp(t, t0 + np.arange(nc) * dtc, wc)


@dataclass(frozen=True, slots=True)
class BeatParams:
    """Rate history of one heart; times in s, rates in Hz, fractions dimensionless."""

    mean_rate_hz: float = 2.33
    modulation_frac: float = 0.05
    modulation_period_s: float = 7.0
    wander_frac: float = 0.02
    wander_tau_s: float = 2.0
    n_irregular: int = 3  # irregular beats over the duration (placed at random)
    irregular_stretch: tuple[float, float] = (0.2, 0.3)  # a beat lasts 1 + this longer
    amplitude_range: tuple[float, float] = (0.85, 1.15)
    stop_s: float | None = None  # the heart stops beating at this time
    duration_s: float = 40.0
    dt_s: float = 2.5e-4


class BeatProcess:
    """Ground-truth phase, rate and per-beat amplitude of one heart for one seed."""

    def __init__(self, params: BeatParams | None = None, seed: int = 0) -> None:
        p = params or BeatParams()
        if p.mean_rate_hz <= 0 or p.duration_s <= 0 or p.dt_s <= 0:
            raise ValueError("mean_rate_hz, duration_s and dt_s must be positive")
        self.params = p
        rng = np.random.default_rng(seed)
        n = int(math.ceil((p.duration_s + 1.0) / p.dt_s)) + 2
        t = np.arange(n) * p.dt_s
        w = ou_wander(rng, t, float(t[-1]), p.wander_frac, p.wander_tau_s)
        rate = p.mean_rate_hz * (1 + p.modulation_frac * np.sin(
            TWO_PI * t / p.modulation_period_s + rng.uniform(0, TWO_PI))) * (1 + w)
        rate = np.maximum(rate, 0.2 * p.mean_rate_hz)
        n_beats = int(p.duration_s * p.mean_rate_hz * 1.3) + 4
        # irregular beats: away from the first 2 s so a lock can form first
        first = int(2.0 * p.mean_rate_hz) + 1
        pool = np.arange(first, max(first + 1, int(p.duration_s * p.mean_rate_hz) - 1))
        k = min(p.n_irregular, pool.size)
        self.irregular_beats = np.sort(rng.choice(pool, size=k, replace=False)) if k else \
            np.empty(0, int)
        g = np.ones(n_beats)
        lo, hi = p.irregular_stretch
        g[self.irregular_beats] = 1.0 / (1.0 + rng.uniform(lo, hi, k))
        self.amplitudes = rng.uniform(*p.amplitude_range, n_beats)
        phase0 = rng.uniform(0, TWO_PI)
        # integrate the rate, slowed by g of the beat the phase is currently in
        ph = np.empty(n)
        ph[0] = phase0
        dphi = rate * p.dt_s * TWO_PI
        cur = phase0
        for i in range(1, n):
            beat = int(cur // TWO_PI)
            cur += dphi[i - 1] * (g[beat] if beat < n_beats else 1.0)
            ph[i] = cur
        if p.stop_s is not None:
            ph = np.where(t > p.stop_s, np.interp(p.stop_s, t, ph), ph)
        self._t = t
        self._phase = ph
        self.phase0 = phase0

    def true_phase(self, times: np.ndarray | float) -> np.ndarray:
        """Unwrapped phase (rad) at times (s, from 0); vectorised."""
        tt = np.asarray(times, float)
        if tt.size and (tt.min() < 0 or tt.max() > self._t[-1]):
            raise ValueError(f"time outside [0, {self._t[-1]:.3f}] s")
        return np.interp(tt, self._t, self._phase)

    def beat_index(self, times: np.ndarray | float) -> np.ndarray:
        """Which beat (floor of phase / 2 pi) each time falls in."""
        return np.floor(self.true_phase(times) / TWO_PI).astype(int)

    def amplitude(self, t: float) -> float:
        """Contraction strength of the beat at time ``t`` (1 = typical)."""
        b = int(self.beat_index(t))
        return float(self.amplitudes[min(max(b, 0), self.amplitudes.size - 1)])

    def beating(self, t: float) -> bool:
        """False once the heart has stopped."""
        return self.params.stop_s is None or t <= self.params.stop_s

    def mean_period(self, t0: float, t1: float) -> float:
        """Mean period (s) over [t0, t1] from the phase advance (inf if stopped)."""
        d = float(self.true_phase(t1) - self.true_phase(t0))
        return math.inf if d <= 0 else (t1 - t0) * TWO_PI / d
