"""A simulated beating zebrafish heart with a known (ground-truth) phase.

Why: prospective optical gating can only be validated against the TRUE phase of the
heart at the moment a trigger fires. The analyzer's own error estimate is not evidence.
This module gives a phase process `true_phase(t)` for absolute times and renders
brightfield frames from that same process, so tests and benchmarks can score every
trigger against the truth.

Phase model
-----------
The instantaneous beat rate (Hz) is

    f(t) = f0 * (1 + m * sin(2*pi*t/Tm + a)) * (1 + w(t)) * g(beat)

with ``f0`` the mean rate, ``m`` a slow sinusoidal modulation, ``w`` an Ornstein-Uhlenbeck
wander (zero mean, standard deviation ``wander_frac``, correlation time ``wander_tau_s``)
and ``g`` a per-beat factor that is 1 for normal beats and ``1/(1 +/- irregular_stretch)``
for occasional irregular (stretched or shortened) beats. The phase is the integral
``2*pi * int f dt``, tabulated on a fine grid (``dt_s``) and linearly interpolated, so
``true_phase`` is vectorised and deterministic for a seed. Phase is unwrapped (radians,
monotonic); ``true_phase_wrapped`` gives it modulo 2*pi.

Images depend only on the phase (plus slow drifts), exactly like the synthetic videos
the published figures were measured on: two chambers that contract out of phase, a
small looping motion of the whole heart (so every phase has a distinct image), blood
texture, a static textured background and Gaussian camera noise.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass

import numpy as np

from .beat import ou_wander

logger = logging.getLogger(__name__)

TWO_PI = 2.0 * math.pi
#: Fluorescent myocardium: (x, y, relaxed radius, contraction amplitude) of the atrium
#: and the ventricle shells (um, heart frame), and the wall's Gaussian half-thickness.
FLUORESCENT_CHAMBERS = ((-35.0, -15.0, 55.0, 0.3), (30.0, 18.0, 50.0, 0.35))
WALL_UM = 5.0


@dataclass(frozen=True, slots=True)
class HeartParams:
    """Parameters of the simulated heart; defaults give a 2.33 Hz heart, +-5 % modulation.

    Times are seconds, rates Hz, drifts pixels/s (at the reference shape 128 px) and
    fractions dimensionless.
    """

    mean_rate_hz: float = 2.33
    modulation_frac: float = 0.05
    modulation_period_s: float = 7.0
    wander_frac: float = 0.02
    wander_tau_s: float = 2.0
    irregular_prob: float = 0.0
    irregular_stretch: float = 0.3
    drift_px_per_s: tuple[float, float] = (0.0, 0.0)  # (x, y) at 128 px frame size
    growth_frac_per_s: float = 0.0  # slow change of heart size (appearance drift)
    noise_sd: float = 2.0  # grey levels (uint8 scale)
    duration_s: float = 600.0
    t0: float = 0.0
    dt_s: float = 5e-4
    seed: int = 0


class SimHeart:
    """Beating heart with a ground-truth phase process and brightfield rendering."""

    def __init__(self, params: HeartParams | None = None, **overrides: object) -> None:
        p = params or HeartParams()
        if overrides:
            p = HeartParams(**{**{f: getattr(p, f) for f in p.__dataclass_fields__},
                               **overrides})
        if p.mean_rate_hz <= 0 or p.duration_s <= 0 or p.dt_s <= 0:
            raise ValueError("mean_rate_hz, duration_s and dt_s must be positive")
        self.params = p
        self._rng = np.random.default_rng(p.seed)
        self.irregular_beats: list[int] = []  # cycle indices of stretched/shortened beats
        self._build_phase()
        self._build_textures()
        self._grid_cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ phase process
    def _build_phase(self) -> None:
        p = self.params
        n = int(math.ceil(p.duration_s / p.dt_s)) + 2
        t = p.t0 + np.arange(n) * p.dt_s
        rng = self._rng
        w = ou_wander(rng, t, p.duration_s, p.wander_frac, p.wander_tau_s, p.t0)
        mod_phase = rng.uniform(0, TWO_PI)
        base = p.mean_rate_hz * (1 + p.modulation_frac
                                 * np.sin(TWO_PI * (t - p.t0) / p.modulation_period_s
                                          + mod_phase))
        rate = base * (1 + w)
        rate = np.maximum(rate, 0.05 * p.mean_rate_hz)
        # cumulative base phase (radians) with trapezoid integration
        inc = 0.5 * (rate[1:] + rate[:-1]) * p.dt_s * TWO_PI
        cum = np.concatenate(([0.0], np.cumsum(inc)))
        phase0 = rng.uniform(0, TWO_PI)
        if p.irregular_prob <= 0:
            self._phase = phase0 + cum
            self._rate = rate
        else:
            self._phase, self._rate = self._apply_irregular(cum, rate, phase0, rng)
        self._t = t

    def _apply_irregular(self, cum: np.ndarray, rate: np.ndarray, phase0: float,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Time-warp whole beats: beat k runs at g_k times the base rate."""
        p = self.params
        out = np.empty_like(cum)
        rate_out = rate.copy()
        i0 = 0
        k = math.floor(phase0 / TWO_PI)
        ph_start = phase0
        irregular: list[int] = []
        n = cum.size
        while i0 < n:
            g = 1.0
            if rng.random() < p.irregular_prob:
                stretch = p.irregular_stretch * (1 if rng.random() < 0.5 else -0.6)
                g = 1.0 / (1.0 + stretch)
                irregular.append(k)
            need = (TWO_PI * (k + 1) - ph_start) / g  # base-phase advance to end of beat
            i1 = int(np.searchsorted(cum, cum[i0] + need, side="right"))
            i1 = max(min(i1, n), i0 + 1)
            out[i0:i1] = ph_start + g * (cum[i0:i1] - cum[i0])
            rate_out[i0:i1] *= g
            if i1 < n:
                ph_start = out[i1 - 1] + g * (cum[i1] - cum[i1 - 1])
            i0 = i1
            k += 1
        self.irregular_beats = irregular
        return out, rate_out

    def true_phase(self, times: np.ndarray | float) -> np.ndarray:
        """Unwrapped ground-truth phase (rad) at absolute times (s); vectorised."""
        t = np.asarray(times, dtype=float)
        if t.size and (t.min() < self._t[0] or t.max() > self._t[-1]):
            raise ValueError(
                f"time outside simulated span [{self._t[0]:.3f}, {self._t[-1]:.3f}] s")
        return np.interp(t, self._t, self._phase)

    def true_phase_wrapped(self, times: np.ndarray | float) -> np.ndarray:
        """Ground-truth phase modulo 2*pi, in [0, 2*pi)."""
        return np.mod(self.true_phase(times), TWO_PI)

    def rate(self, times: np.ndarray | float) -> np.ndarray:
        """Instantaneous beat rate (Hz) at absolute times."""
        return np.interp(np.asarray(times, dtype=float), self._t, self._rate)

    def mean_period(self, t_start: float, t_end: float) -> float:
        """Mean beat period (s) over an interval, from the phase advance."""
        dphi = float(self.true_phase(t_end) - self.true_phase(t_start))
        return (t_end - t_start) * TWO_PI / dphi

    # ------------------------------------------------------------------ rendering
    def _build_textures(self) -> None:
        rng = self._rng
        # Sinusoidal texture components: (kx, ky, phase, amplitude) in normalised units.
        self._bg_tex = self._random_waves(rng, 10, 4.0, 14.0)
        self._blood_tex = self._random_waves(rng, 8, 6.0, 16.0)
        self._wall_tex = self._random_waves(rng, 6, 3.0, 9.0)

    @staticmethod
    def _random_waves(rng: np.random.Generator, n: int, kmin: float, kmax: float
                      ) -> np.ndarray:
        k = rng.uniform(kmin, kmax, n)
        ang = rng.uniform(0, math.pi, n)
        return np.stack([k * np.cos(ang), k * np.sin(ang), rng.uniform(0, TWO_PI, n),
                         rng.uniform(0.5, 1.0, n) / n], axis=1)

    @staticmethod
    def _waves(tex: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Sum of plane waves at (u, v) with u of shape (1, w) and v of shape (h, 1).

        Separable form sin(a u + b v + c) = sin(a u) cos(b v + c) + cos(a u) sin(b v + c)
        costs O(h + w) trigonometry per wave instead of O(h * w), and the sum over the
        waves of those products is one matrix product, (h, 2n) @ (2n, w).
        """
        kx, ky, ph, amp = tex.T
        au = kx[:, None] * u  # (n, w)
        bv = v * ky[None, :] + ph[None, :]  # (h, n)
        left = np.hstack([np.cos(bv), np.sin(bv)])  # (h, 2n)
        right = np.vstack([amp[:, None] * np.sin(au), amp[:, None] * np.cos(au)])  # (2n, w)
        return left @ right

    def _grid(self, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        g = self._grid_cache.get(shape)
        if g is None:
            h, w = shape
            s = min(h, w)
            y = (np.arange(h, dtype=float) - (h - 1) / 2) / s
            x = (np.arange(w, dtype=float) - (w - 1) / 2) / s
            g = (x[None, :], y[:, None])
            self._grid_cache[shape] = g
        return g

    def _render_at_phase(self, phase: float, t: float, shape: tuple[int, int]
                         ) -> np.ndarray:
        """Noise-free brightfield intensity (float, ~0..255) at one phase and time."""
        p = self.params
        x, y = self._grid(shape)
        s = min(shape)
        dt = t - p.t0
        # whole-sample lateral drift (normalised units; drift given at 128 px)
        ox = p.drift_px_per_s[0] * dt / 128.0
        oy = p.drift_px_per_s[1] * dt / 128.0
        xs, ys = x - ox, y - oy
        scale = 1.0 + p.growth_frac_per_s * dt
        img = 170.0 + 30.0 * self._waves(self._bg_tex, xs, ys)  # static sample background
        # small looping motion of the whole heart: unique position for every phase
        lx = 0.012 * math.cos(phase)
        ly = 0.012 * math.sin(phase)
        # chamber contraction profiles (0 relaxed .. 1 contracted), out of phase
        ca = _contraction(phase, 0.6, 1.2)  # atrium
        cv = _contraction(phase, 2.6, 1.8)  # ventricle
        chambers = ((-0.14, -0.06, 0.16, 0.11, 0.3, ca),
                    (0.12, 0.07, 0.15, 0.12, 0.35, cv))
        soft = 1.5 / s  # edge softness ~1.5 px
        for cx, cy, rx, ry, amp, c in chambers:
            rxs = rx * scale * (1 - amp * c)
            rys = ry * scale * (1 - 0.8 * amp * c)
            u = (xs - (cx * scale + lx)) / rxs
            v = (ys - (cy * scale + ly)) / rys
            d = np.sqrt(u * u + v * v)
            rmin = min(rxs, rys)
            inside = 1.0 / (1.0 + np.exp(np.minimum((d - 1.0) * (rmin / soft), 50.0)))
            wall = np.exp(-(((d - 1.0) * rmin) / (3.0 / 128)) ** 2)
            blood = 0.5 + self._waves(self._blood_tex, u * 0.5, v * 0.5)
            img = img - inside * (45.0 + 25.0 * blood * (1 - 0.5 * c))
            img = img - wall * (40.0 + 20.0 * self._waves(self._wall_tex, u, v))
        return img

    def _noise_rng(self, t: float, salt: str) -> np.random.Generator:
        key = f"{self.params.seed}:{salt}:{round(t * 1e7)}".encode()
        return np.random.default_rng(int.from_bytes(hashlib.blake2b(key, digest_size=8)
                                                    .digest(), "little"))

    def render_brightfield(self, t: float, shape: tuple[int, int] = (128, 128),
                           exposure: float = 0.002, dtype: type = np.uint8
                           ) -> np.ndarray:
        """Brightfield frame for an exposure starting at absolute time ``t`` (s).

        The heart is rendered at phases sampled across the exposure (one sample per
        1 ms, at least one) and averaged, like a real camera integrates motion.
        Noise is Gaussian (``noise_sd`` grey levels on the uint8 scale), seeded from
        (seed, t) so a frame is reproducible. uint16 output is scaled by 16 (12-bit).
        """
        if len(shape) != 2 or min(shape) < 8:
            raise ValueError("shape must be (h, w) with both >= 8")
        n = max(1, int(math.ceil(exposure / 1e-3)))
        ts = t + (np.arange(n) + 0.5) / n * exposure if exposure > 0 else np.array([t])
        phases = self.true_phase(ts)
        acc = np.zeros(shape)
        for ph, ti in zip(phases, ts, strict=True):
            acc += self._render_at_phase(float(ph), float(ti), shape)
        acc /= n
        if self.params.noise_sd > 0:
            acc += self._noise_rng(t, "bf").standard_normal(shape) * self.params.noise_sd
        if np.dtype(dtype) == np.uint16:
            return np.clip(acc * 16.0, 0, 65535).astype(np.uint16)
        return np.clip(np.rint(acc), 0, 255).astype(np.uint8)

    def render_video(self, times: np.ndarray, shape: tuple[int, int] = (128, 128),
                     exposure: float = 0.002, dtype: type = np.uint8) -> np.ndarray:
        """Stack of brightfield frames (n, h, w) for exposure start times ``times``."""
        out = np.empty((len(times), *shape), dtype=dtype)
        for i, t in enumerate(times):
            out[i] = self.render_brightfield(float(t), shape, exposure, dtype)
        return out

    # ------------------------------------------------------------------ fluorescence
    def fluorescence_intensity(self, x_um: np.ndarray, y_um: np.ndarray, z_um: np.ndarray,
                               phase: float | np.ndarray) -> np.ndarray:
        """Fluorescent myocardium intensity (arbitrary units, 0..1) at (x, y, z) in um.

        The heart is centred at the origin: two ellipsoidal shells (atrium, ventricle,
        ~100-120 um across, wall ~10 um thick) that contract with the same profiles as
        the brightfield rendering, so a fluorescence camera gated on the brightfield
        phase sees a consistent heart. Inputs broadcast together.
        """
        x = np.asarray(x_um, float)
        y = np.asarray(y_um, float)
        z = np.asarray(z_um, float)
        ph = np.asarray(phase, float)
        out = np.zeros(np.broadcast_shapes(x.shape, y.shape, z.shape, ph.shape))
        ca = _contraction(ph, 0.6, 1.2)
        cv = _contraction(ph, 2.6, 1.8)
        for (cx, cy, r, amp), c in zip(FLUORESCENT_CHAMBERS, (ca, cv), strict=True):
            rr = r * (1 - amp * c)
            d = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z / 0.8) ** 2)
            out = np.maximum(out, np.exp(-((d - rr) / WALL_UM) ** 2))
        return out

    @staticmethod
    def fluorescence_extent_um(floor: float = 1e-9) -> tuple[float, float, float, float]:
        """(x_min, x_max, y_min, y_max) in um outside which the fluorescence intensity is
        below ``floor`` at every phase and depth, so renderers can skip those pixels."""
        reach = WALL_UM * math.sqrt(math.log(1.0 / floor))
        xs = [v for cx, _, r, _ in FLUORESCENT_CHAMBERS for v in (cx - r - reach, cx + r + reach)]
        ys = [v for _, cy, r, _ in FLUORESCENT_CHAMBERS for v in (cy - r - reach, cy + r + reach)]
        return min(xs), max(xs), min(ys), max(ys)


def _contraction(phase: float | np.ndarray, centre: float, width: float
                 ) -> float | np.ndarray:
    """Smooth asymmetric contraction (0..1) peaking near ``centre`` rad.

    Fast contraction, slower relaxation, so the waveform is not time-symmetric.
    """
    d = np.mod(np.asarray(phase) - centre + math.pi, TWO_PI) - math.pi
    w = np.where(d < 0, 0.45 * width, width)
    out = np.exp(-0.5 * (d / w) ** 2)
    return float(out) if np.ndim(out) == 0 else out
