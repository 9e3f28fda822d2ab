"""Procedural brightfield hearts that look unlike `beamline_ls.sim.heart` and unlike each other.

Why: a gating method tuned on one simulated heart can silently depend on that heart's
structure (two ellipses contracting smoothly, phase-locked textures). These four hearts
are built differently so the gating corpus can show whether a method holds on hearts it
was not tuned on. All of them take their true phase and per-beat amplitude from a
`BeatProcess` (the amplitude scales how deeply each beat contracts) and return grey levels
~0..255 from ``clean``; the `HeartVideo` base adds exposure, drift, flicker and noise.

- `TwoChamberHeart`: atrium and ventricle with non-elliptical outlines joined by an
  atrioventricular canal. The cycle is non-sinusoidal: a quiet diastole (no wall motion
  for ~45 % of the cycle), then the atrium contracts while the ventricle fills, then the
  ventricle contracts while the atrium refills. Blood speckle inside the chambers is
  advected with time and with each ejection, so it is not a function of phase alone.
- `HeartTube`: an S-shaped heart tube whose radius is squeezed by a peristaltic wave
  that travels along the centreline once per cycle; lumen, wall and background differ in
  grey level, and the blood texture in the lumen flows along the tube.
- `SmallHeart`: one small pumping chamber (a few % of the frame) with a slight lateral
  rocking, inside a large field of tissue and yolk-like blobs that drifts slowly and
  smoothly (sub-pixel, not tied to the heart phase).
- `LowContrastHeart`: a C-shaped peristaltic tube on a bright background whose
  heartbeat changes any pixel by at most ``contrast`` (default 4 %) of the mean intensity.

Speed: a 40 s video at 80 fps with 2 ms exposure calls ``clean`` ~6400 times, so all that
does not depend on phase or time (grids, polar and tube coordinates, textures) is
precomputed in ``__init__``; a call does elementwise arithmetic on the frame (or on a band
or window around the heart) and bilinear blends of shifted texture views, no filtering.
Geometry and textures are drawn from ``np.random.default_rng(seed + constant)``, so a seed
gives a reproducible heart.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .beat import BeatProcess
from .videos import Camera, HeartVideo

TWO_PI = 2.0 * math.pi

__all__ = [
    "HeartTube",
    "LowContrastHeart",
    "SmallHeart",
    "TwoChamberHeart",
    "procedural_hearts",
]


# --------------------------------------------------------------------------- helpers
def _default_beat(beat: BeatProcess | None, seed: int) -> BeatProcess:
    """The given beat, or a default `BeatProcess` for the seed (convenience)."""
    return beat if beat is not None else BeatProcess(seed=seed)


def _unit_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float,
                wrap: bool = False) -> np.ndarray:
    """Smooth random field, zero mean, unit SD, features ~``sigma`` px (periodic if wrap)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma,
                                    mode="wrap" if wrap else "reflect")
    return (field - field.mean()) / (field.std() + 1e-12)


def _coverage(dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (0..1) of a region from the signed distance (px) to its edge,
    negative inside: a 1 px linear ramp, much cheaper than a logistic."""
    return np.clip(0.5 - dist, 0.0, 1.0)


def _bump(u: float, start: float, peak: float, end: float) -> float:
    """0 outside [start, end], raised-cosine rise to 1 at ``peak``, fall to 0 at ``end``."""
    if u <= start or u >= end:
        return 0.0
    x = (u - start) / (peak - start) if u < peak else (end - u) / (end - peak)
    return 0.5 - 0.5 * math.cos(math.pi * x)


def _smoothstep(u: float, start: float, end: float) -> float:
    """0 before ``start``, 1 after ``end``, smooth (cubic) in between."""
    x = min(max((u - start) / (end - start), 0.0), 1.0)
    return x * x * (3.0 - 2.0 * x)


def _cycle_fraction(phase: float) -> tuple[int, float]:
    """(completed beats, fraction of the current beat in [0, 1)) of an unwrapped phase."""
    beats = math.floor(phase / TWO_PI)
    return beats, phase / TWO_PI - beats


class _ScrollingTexture:
    """A periodic texture tile read at any fractional offset.

    ``sample(ox, oy)`` returns the (h, w) image whose pixel (y, x) is the tile at
    (y + oy, x + ox) (wrapped), by bilinear blending of four integer-shifted views of a
    pre-tiled array: O(h * w) arithmetic, no filtering, smooth in the offset.
    """

    def __init__(self, tile: np.ndarray, shape: tuple[int, int]) -> None:
        th, tw = tile.shape
        h, w = shape
        reps = (math.ceil((th + h + 1) / th), math.ceil((tw + w + 1) / tw))
        self._ext = np.tile(tile, reps)[:th + h + 1, :tw + w + 1]
        self._tile_shape = (th, tw)
        self._shape = (h, w)

    def sample(self, ox: float, oy: float) -> np.ndarray:
        th, tw = self._tile_shape
        h, w = self._shape
        fx, fy = math.floor(ox), math.floor(oy)
        ax, ay = ox - fx, oy - fy
        ix, iy = fx % tw, fy % th
        e = self._ext
        top = e[iy:iy + h, ix:ix + w] * (1.0 - ax) + e[iy:iy + h, ix + 1:ix + w + 1] * ax
        bot = e[iy + 1:iy + h + 1, ix:ix + w] * (1.0 - ax) \
            + e[iy + 1:iy + h + 1, ix + 1:ix + w + 1] * ax
        return top * (1.0 - ay) + bot * ay


class _TubeGeometry:
    """Tube coordinates of the pixels near a centreline (dense polyline of (x, y) points).

    Precomputes, for the band of pixels within ``reach`` px of the centreline: their flat
    indices, the arclength ``s`` (px) of the nearest centreline point, the unsigned
    distance ``dist`` and the signed lateral offset ``lateral`` (px) from it.
    """

    def __init__(self, points: np.ndarray, shape: tuple[int, int], reach: float) -> None:
        h, w = shape
        seg = np.hypot(*np.diff(points, axis=0).T)
        arclen = np.concatenate(([0.0], np.cumsum(seg)))
        tangent = np.gradient(points, axis=0)
        tangent /= np.hypot(tangent[:, 0], tangent[:, 1])[:, None] + 1e-12
        yy, xx = np.mgrid[0:h, 0:w]
        pix = np.column_stack([xx.ravel(), yy.ravel()]).astype(float)
        dist, idx = cKDTree(points).query(pix)
        band = np.flatnonzero(dist < reach)
        rel = pix[band] - points[idx[band]]
        t = tangent[idx[band]]
        side = np.sign(t[:, 0] * rel[:, 1] - t[:, 1] * rel[:, 0])
        self.length = float(arclen[-1])
        self.band = band
        self.s = arclen[idx[band]]
        self.dist = dist[band]
        self.lateral = side * self.dist


class _PeristalticTube(HeartVideo):
    """Shared machinery of the tube hearts: a peristaltic wave squeezing a tube.

    The local lumen radius is ``r0 * (1 - c * A * bump(s - L * phase / 2 pi))`` with ``bump``
    a Gaussian of the arclength distance, wrapped with period ``L`` (the centreline
    length, including the parts outside the frame), so exactly one wave runs from the
    inflow to the outflow end per cycle. The wall keeps its cross-section area, so it
    thickens where the lumen narrows. Subclasses give the centreline and the grey levels.
    """

    def _setup_tube(self, points: np.ndarray, radius: float, wall: float,
                    constriction: float, wave_width: float, blood_flow: float,
                    rng: np.random.Generator) -> None:
        if not 0.0 < constriction < 1.0:
            raise ValueError("constriction must be in (0, 1)")
        self._r0 = radius
        self._wall = wall
        self._constriction = constriction
        reach = radius + 2.5 * wall + 3.0
        self._geom = g = _TubeGeometry(points, self.shape, reach)
        self._period = g.length
        self._sigma = wave_width * g.length
        self._flow = blood_flow
        # blood texture in tube coordinates (s, lateral), periodic along s
        ns = int(math.ceil(g.length)) + 1
        nl = int(math.ceil(reach)) * 2 + 3
        self._blood_tex = _unit_noise(rng, (ns, nl), 1.2, wrap=True)
        self._s_idx = np.floor(g.s).astype(np.intp)
        self._l_idx = np.clip(np.rint(g.lateral).astype(np.intp) + nl // 2, 0, nl - 1)

    def _tube_layers(self, phase: float, amplitude: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lumen coverage, wall-or-lumen coverage, blood texture) on the band pixels."""
        g = self._geom
        _, u = _cycle_fraction(phase)
        c = min(self._constriction * amplitude, 0.9)
        half = 0.5 * self._period
        d = (g.s - u * self._period + half) % self._period - half
        r = self._r0 * (1.0 - c * np.exp(-0.5 * (d / self._sigma) ** 2))
        r_out = np.sqrt(r * r + (self._r0 + self._wall) ** 2 - self._r0 ** 2)
        lumen = _coverage(g.dist - r)
        outer = _coverage(g.dist - r_out)
        # blood texture moves along the tube with the flow (unwrapped phase: it keeps going)
        shift = self._flow * phase / TWO_PI
        i0 = math.floor(shift)
        a = shift - i0
        ns = self._blood_tex.shape[0]
        si = (self._s_idx - i0) % ns
        si1 = (si - 1) % ns
        tex = self._blood_tex
        blood = (1.0 - a) * tex[si, self._l_idx] + a * tex[si1, self._l_idx]
        return lumen, outer, blood


# --------------------------------------------------------------------------- hearts
class TwoChamberHeart(HeartVideo):
    """Atrium and ventricle with a quiet diastole, sequential non-sinusoidal contraction
    and moving (time-dependent) blood speckle; dark walls on textured tissue.

    Options: ``atrium_depth``/``ventricle_depth`` (fractional radius change of a typical
    beat, scaled by the beat amplitude), ``diastole_frac`` (still part of the cycle,
    0.2..0.5), ``speckle_sd`` (grey levels), ``flow_px_s`` (steady drift of the speckle)
    and ``ejection_px`` (extra speckle displacement per ejection).
    """

    name = "two-chamber"

    def __init__(self, shape: tuple[int, int] = (128, 160), beat: BeatProcess | None = None,
                 camera: Camera | None = None, seed: int = 0, *,
                 atrium_depth: float = 0.30, ventricle_depth: float = 0.28,
                 diastole_frac: float = 0.45, speckle_sd: float = 8.0,
                 flow_px_s: float = 20.0, ejection_px: float = 10.0) -> None:
        super().__init__(shape, _default_beat(beat, seed), camera, seed)
        if not 0.2 <= diastole_frac <= 0.5:
            raise ValueError("diastole_frac must be in [0.2, 0.5]")
        rng = np.random.default_rng(seed + 4211)
        h, w = self.shape
        k = min(h, w) / 128.0
        self._atrium_depth = atrium_depth
        self._ventricle_depth = ventricle_depth
        self._d = diastole_frac
        self._speckle_sd = speckle_sd
        self._flow = flow_px_s
        self._eject = ejection_px
        yy, xx = np.mgrid[0:h, 0:w].astype(float)

        ca = np.array([w * (0.36 + rng.uniform(-0.03, 0.03)),
                       h * (0.42 + rng.uniform(-0.04, 0.04))])
        cv = np.array([w * (0.63 + rng.uniform(-0.03, 0.03)),
                       h * (0.58 + rng.uniform(-0.04, 0.04))])
        axis = math.atan2(cv[1] - ca[1], cv[0] - ca[0])  # atrium -> ventricle
        self._wall_px = 3.5 * k
        self._chambers = []
        # (centre, mean radius, harmonics [(order, rel amp, angle)], squash axis)
        # (centre, mean radius, harmonics [(order, rel amp, angle)], apex lobe
        # (rel amp, angle) or None, squash axis): a bean-shaped atrium and a ventricle
        # drawn out into a blunt apex pointing away from the atrium
        apex = axis + rng.uniform(-0.5, 0.5)
        specs = (
            (ca, 23.0 * k * rng.uniform(0.93, 1.07),
             [(2, 0.17, axis + rng.uniform(-0.3, 0.3)),
              (3, 0.07, rng.uniform(0, TWO_PI))], None, axis + math.pi / 2),
            (cv, 24.0 * k * rng.uniform(0.93, 1.07),
             [(2, 0.06, apex + rng.uniform(-0.4, 0.4)),
              (3, 0.04, rng.uniform(0, TWO_PI))], (0.32, apex), axis),
        )
        for centre, r, harmonics, lobe, squash in specs:
            dx, dy = xx - centre[0], yy - centre[1]
            rho = np.hypot(dx, dy)
            theta = np.arctan2(dy, dx)
            rad = np.full_like(rho, r)
            for order, rel, ang in harmonics:
                rad += r * rel * np.cos(order * (theta - ang))
            if lobe is not None:
                off = (theta - lobe[1] + math.pi) % TWO_PI - math.pi
                rad += r * lobe[0] * (np.exp(-0.5 * (off / 0.55) ** 2) - 0.2)
            # contraction is stronger across one axis (anisotropic squeeze)
            aniso = 1.0 + 0.35 * np.cos(2.0 * (theta - squash))
            self._chambers.append((rho, rad, aniso))

        # atrioventricular canal: a short static channel between the chambers
        seg = cv - ca
        tpar = np.clip(((xx - ca[0]) * seg[0] + (yy - ca[1]) * seg[1]) / (seg @ seg), 0, 1)
        dcan = np.hypot(xx - ca[0] - tpar * seg[0], yy - ca[1] - tpar * seg[1])
        r_can = 4.5 * k
        self._canal_lumen = _coverage(dcan - r_can)
        self._canal_outer = _coverage(dcan - r_can - self._wall_px)

        # which chamber's blood a pixel shows (static soft partition)
        na = self._chambers[0][0] / self._chambers[0][1]
        nv = self._chambers[1][0] / self._chambers[1][1]
        self._w_atrium = np.clip(0.5 + 2.0 * (nv - na), 0.0, 1.0)

        # textures
        self._tissue = (168.0 + 13.0 * _unit_noise(rng, (h, w), 3.5 * k)
                        + 6.0 * _unit_noise(rng, (h, w), 1.0))
        # sparse small dark cells scattered in the tissue
        dots = np.zeros((h, w))
        n_dots = int(0.004 * h * w)
        dots[rng.integers(0, h, n_dots), rng.integers(0, w, n_dots)] = 1.0
        dots = ndimage.gaussian_filter(dots, 1.3 * k)
        self._tissue -= 30.0 * dots / (dots.max() + 1e-12)
        self._wall_img = 72.0 + 9.0 * _unit_noise(rng, (h, w), 1.5 * k)
        self._blood_level = 110.0
        tile = _unit_noise(rng, (97, 89), 1.0, wrap=True)
        self._speckle = _ScrollingTexture(tile, (h, w))
        ang_a = axis + rng.uniform(-0.4, 0.4)
        ang_v = axis - math.pi / 2 + rng.uniform(-0.5, 0.5)
        self._dir_a = (math.cos(ang_a), math.sin(ang_a))
        self._dir_v = (math.cos(ang_v), math.sin(ang_v))
        self._speckle_origin = rng.uniform(0, 89, 4)

    def _cycle(self, phase: float) -> tuple[int, float]:
        """(beats, cycle fraction) with the cycle starting at the end of the ventricle's
        relaxation: phase 0 is mid-diastole and phase pi lies in ventricular systole."""
        return _cycle_fraction(phase + TWO_PI * 0.5 * self._d)

    def contraction(self, phase: float) -> tuple[float, float]:
        """(atrium, ventricle) contraction profiles (0 relaxed, 1 fully contracted, negative
        when filling) at one phase, for a typical (amplitude 1) beat."""
        _, u = self._cycle(phase)
        d = self._d
        atrium = _bump(u, d, d + 0.09, d + 0.25) - 0.2 * _bump(u, d + 0.21, d + 0.40, 0.99)
        ventricle = (_bump(u, d + 0.19, d + 0.29, min(d + 0.52, 0.985))
                     - 0.15 * _bump(u, d + 0.02, d + 0.15, d + 0.23))
        return atrium, ventricle

    def _beating_time(self, t: float) -> float:
        """Time the heart has been beating: blood only flows while the heart pumps."""
        stop = self.beat.params.stop_s if self.beat is not None else None
        return t if stop is None else min(t, stop)

    def _flow_offsets(self, phase: float, t: float) -> tuple[tuple[float, float], ...]:
        beats, u = self._cycle(phase)
        d = self._d
        fa = beats + _smoothstep(u, d, d + 0.2)          # atrial ejections so far
        fv = beats + _smoothstep(u, d + 0.19, d + 0.42)  # ventricular ejections so far
        out = []
        for f, (dx, dy), (x0, y0) in ((fa, self._dir_a, self._speckle_origin[:2]),
                                      (fv, self._dir_v, self._speckle_origin[2:])):
            travel = self._flow * self._beating_time(t) + self._eject * f
            out.append((x0 - dx * travel, y0 - dy * travel))
        return tuple(out)

    def clean(self, phase: float, amplitude: float, t: float) -> np.ndarray:
        pa, pv = self.contraction(phase)
        lumen = self._canal_lumen
        outer = self._canal_outer
        for (rho, rad, aniso), c, depth in zip(
                self._chambers, (pa, pv), (self._atrium_depth, self._ventricle_depth),
                strict=True):
            cc = depth * amplitude * c
            r_in = rad * (1.0 - cc * aniso)
            dist = rho - r_in
            lumen = np.maximum(lumen, _coverage(dist))
            outer = np.maximum(outer, _coverage(dist - self._wall_px * (1.0 + 2.0 * cc)))
        (oax, oay), (ovx, ovy) = self._flow_offsets(phase, t)
        wa = self._w_atrium
        speck = self._speckle.sample(oax, oay) * wa + self._speckle.sample(ovx, ovy) * (1 - wa)
        # a contracted chamber holds its blood deeper, so it looks darker
        dark = 30.0 * amplitude * (self._atrium_depth * pa * wa
                                   + self._ventricle_depth * pv * (1 - wa))
        blood = (self._blood_level - dark) + self._speckle_sd * speck
        img = self._tissue + outer * (self._wall_img - self._tissue)
        img += lumen * (blood - img)
        return img


class HeartTube(_PeristalticTube):
    """An S-shaped heart tube squeezed by a peristaltic wave once per cycle: dark lumen
    with flowing blood texture, a mid-grey wall, on lighter textured tissue.

    Options: ``radius_px`` (relaxed lumen radius at 128 px), ``wall_px``, ``constriction``
    (fractional radius reduction at the wave crest for a typical beat), ``wave_width``
    (Gaussian SD of the wave as a fraction of the tube length) and ``blood_flow_px``
    (how far the blood texture moves along the tube per beat).
    """

    name = "heart-tube"

    def __init__(self, shape: tuple[int, int] = (128, 160), beat: BeatProcess | None = None,
                 camera: Camera | None = None, seed: int = 0, *,
                 radius_px: float = 10.0, wall_px: float = 4.0, constriction: float = 0.6,
                 wave_width: float = 0.09, blood_flow_px: float = 25.0) -> None:
        super().__init__(shape, _default_beat(beat, seed), camera, seed)
        rng = np.random.default_rng(seed + 5903)
        h, w = self.shape
        k = min(h, w) / 128.0
        # S-shaped centreline: one sine period across the frame, slightly rotated, running
        # off the frame at both ends (inflow left, outflow right)
        x = np.linspace(-0.12 * w, 1.12 * w, int(8 * w))
        amp = h * rng.uniform(0.15, 0.19)
        lam = w * rng.uniform(0.95, 1.1)
        y = amp * np.sin(TWO_PI * (x - 0.5 * w) / lam + rng.uniform(-0.3, 0.3))
        rot = rng.uniform(-0.15, 0.15)
        xc, yc = x - 0.5 * w, y
        px = 0.5 * w + xc * math.cos(rot) - yc * math.sin(rot)
        py = 0.5 * h + xc * math.sin(rot) + yc * math.cos(rot)
        self._setup_tube(np.column_stack([px, py]), radius_px * k, wall_px * k,
                         constriction, wave_width, blood_flow_px * k, rng)
        self._bg = (166.0 + 12.0 * _unit_noise(rng, (h, w), 3.0 * k)
                    + 5.0 * _unit_noise(rng, (h, w), 1.0))
        # faint oblique stripes (somite-like banding) in the tissue
        yy, xx = np.mgrid[0:h, 0:w].astype(float)
        ang = rng.uniform(0.3, 0.8)
        self._bg += 6.0 * np.sin(TWO_PI * (xx * math.cos(ang) + yy * math.sin(ang))
                                 / (14.0 * k))
        g = self._geom
        self._wall_band = 122.0 + 8.0 * _unit_noise(rng, (h, w), 1.3 * k).ravel()[g.band]
        self._bg_band = self._bg.ravel()[g.band]

    def clean(self, phase: float, amplitude: float, t: float) -> np.ndarray:
        lumen, outer, blood = self._tube_layers(phase, amplitude)
        vals = self._bg_band + outer * (self._wall_band - self._bg_band)
        vals += lumen * (78.0 + 9.0 * blood - vals)
        img = self._bg.copy()
        img.ravel()[self._geom.band] = vals
        return img


class SmallHeart(HeartVideo):
    """One small pumping chamber with a slight lateral rocking, inside a large field of
    tissue and yolk-like blobs that drifts slowly and smoothly on its own.

    Options: ``heart_radius_px`` (relaxed chamber radius at 128 px), ``depth``
    (fractional radius change of a typical beat), ``rock_px`` (lateral rocking), and
    ``drift_px``/``drift_s`` (background drift (x, y) over that time; it continues at the
    same rate afterwards, up to the texture margin), ``move`` (``(t_s, (dy, dx))``: at
    ``t_s`` the heart moves by whole pixels within the field, which stays where it is:
    the larva twitches; default none).
    """

    name = "small-heart"
    _MARGIN = 24  # px of background texture beyond each frame edge (limits the drift)

    def __init__(self, shape: tuple[int, int] = (128, 160), beat: BeatProcess | None = None,
                 camera: Camera | None = None, seed: int = 0, *,
                 heart_radius_px: float = 12.0, depth: float = 0.35, rock_px: float = 1.5,
                 drift_px: tuple[float, float] = (3.0, -2.0), drift_s: float = 40.0,
                 move: tuple[float, tuple[int, int]] | None = None) -> None:
        super().__init__(shape, _default_beat(beat, seed), camera, seed)
        self._move = move
        rng = np.random.default_rng(seed + 6737)
        h, w = self.shape
        k = min(h, w) / 128.0
        m = self._MARGIN
        self._depth = depth
        self._rock = rock_px * k
        self._drift = (drift_px[0] / drift_s, drift_px[1] / drift_s) if drift_s > 0 \
            else (0.0, 0.0)
        self._wobble = (0.4 * k, rng.uniform(11.0, 17.0), rng.uniform(0, TWO_PI))

        # ---- background field (h + 2m, w + 2m), not periodic: sampled well inside
        bh, bw = h + 2 * m, w + 2 * m
        yy, xx = np.mgrid[0:bh, 0:bw].astype(float)
        bg = (152.0 + 12.0 * _unit_noise(rng, (bh, bw), 4.0 * k)
              + 6.0 * _unit_noise(rng, (bh, bw), 1.2))
        # the yolk: a large granular ellipse low in the frame, with a dark rim
        yx, yy0 = m + w * rng.uniform(0.2, 0.4), m + h * rng.uniform(0.85, 1.0)
        ya, yb = w * rng.uniform(0.45, 0.55), h * rng.uniform(0.40, 0.48)
        ryolk = np.hypot((xx - yx) / ya, (yy - yy0) / yb)
        inside = _coverage((ryolk - 1.0) * min(ya, yb))
        rim = np.exp(-(((ryolk - 1.0) * min(ya, yb)) / (2.0 * k)) ** 2)
        gran = np.zeros((bh, bw))
        n_gran = int(0.02 * bh * bw)
        gran[rng.integers(0, bh, n_gran), rng.integers(0, bw, n_gran)] = 1.0
        gran = ndimage.gaussian_filter(gran, 1.2 * k)
        gran = (gran - gran.mean()) / (gran.std() + 1e-12)
        yolk = 128.0 + 10.0 * gran + 5.0 * _unit_noise(rng, (bh, bw), 5.0 * k)
        bg += inside * (yolk - bg) - 35.0 * rim
        # scattered refractile blobs (lipid droplets / cells): bright core, dark ring
        for _ in range(int(rng.integers(8, 14))):
            bx, by = rng.uniform(0, bw), rng.uniform(0, bh)
            br = rng.uniform(2.5, 6.0) * k
            rr = np.hypot(xx - bx, yy - by) / br
            bg += 22.0 * np.exp(-(rr / 0.6) ** 2) - 28.0 * np.exp(-((rr - 1.0) / 0.25) ** 2)
        self._bg = bg
        self._origin = float(m)

        # ---- the heart: placed in the upper middle, clear of the yolk
        self._r = heart_radius_px * k
        self._wall_px = 3.0 * k
        cx = w * rng.uniform(0.55, 0.68)
        cy = h * rng.uniform(0.28, 0.40)
        half = int(math.ceil(self._r * 1.3 + 2.5 * self._wall_px + self._rock + 3))
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, h)
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, w)
        self._win = (slice(y0, y1), slice(x0, x1))
        wy, wx = np.mgrid[y0:y1, x0:x1].astype(float)
        self._wx, self._wy = wx - cx, wy - cy
        self._harm = ((1, 0.12, rng.uniform(0, TWO_PI)), (2, 0.07, rng.uniform(0, TWO_PI)))
        self._rock_dir = rng.uniform(-0.3, 0.3)  # mostly lateral (x)
        self._blood_win = 98.0 + 7.0 * _unit_noise(rng, wx.shape, 1.2 * k)
        self._wall_win = 70.0 + 6.0 * _unit_noise(rng, wx.shape, 1.2 * k)
        # static clear pericardial fluid around the heart: it damps the background texture
        pr = np.hypot(self._wx, self._wy) / (self._r * 1.9)
        self._peri = 0.6 * np.clip(1.6 - pr, 0.0, 1.0) ** 2  # <= 0.6, 0 beyond 1.6 pr

    def pump(self, phase: float) -> float:
        """Chamber contraction profile (0 relaxed .. 1 contracted): fast systole, slower
        relaxation (a cosine on a warped cycle fraction)."""
        _, u = _cycle_fraction(phase)
        return 0.5 - 0.5 * math.cos(TWO_PI * u ** 0.6)

    def _background(self, t: float) -> np.ndarray:
        a, period, ph = self._wobble
        lim = self._MARGIN - 1.5
        wob = a * math.sin(TWO_PI * t / period + ph)
        ox = min(max(self._drift[0] * t + wob, -lim), lim)
        oy = min(max(self._drift[1] * t + 0.5 * wob, -lim), lim)
        # the content moves by (ox, oy): read the field at (x - ox, y - oy)
        sx, sy = self._origin - ox, self._origin - oy
        ix, iy = math.floor(sx), math.floor(sy)
        ax, ay = sx - ix, sy - iy
        h, w = self.shape
        b = self._bg
        top = b[iy:iy + h, ix:ix + w] * (1 - ax) + b[iy:iy + h, ix + 1:ix + w + 1] * ax
        bot = b[iy + 1:iy + h + 1, ix:ix + w] * (1 - ax) \
            + b[iy + 1:iy + h + 1, ix + 1:ix + w + 1] * ax
        return top * (1 - ay) + bot * ay

    def _heart_layers(self, phase: float, amplitude: float
                      ) -> tuple[np.ndarray, np.ndarray]:
        """(lumen coverage, wall-or-lumen coverage) in the heart window."""
        _, u = _cycle_fraction(phase)
        c = min(self._depth * amplitude, 0.8) * self.pump(phase)
        sway = self._rock * math.sin(TWO_PI * u + 0.7)
        dx = self._wx - sway * math.cos(self._rock_dir)
        dy = self._wy - sway * math.sin(self._rock_dir)
        rho = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        rad = self._r * (1.0 - c)
        r_th = rad + sum(self._r * rel * np.cos(o * theta - ang)
                         for o, rel, ang in self._harm) * (1.0 - c)
        dist = rho - r_th
        lumen = _coverage(dist)
        outer = _coverage(dist - self._wall_px * (1.0 + 1.5 * c))
        return lumen, outer

    def heart_mask(self, n_phases: int = 64, amplitude: float = 1.2) -> np.ndarray:
        """Boolean frame of every pixel the chamber or its wall covers at some phase."""
        mask = np.zeros(self.shape, bool)
        win = np.zeros(self._wx.shape, bool)
        for ph in np.linspace(0.0, TWO_PI, n_phases, endpoint=False):
            win |= self._heart_layers(float(ph), amplitude)[1] > 0
        mask[self._win] = win
        return mask

    def _window(self, t: float) -> tuple[slice, slice]:
        """Where the heart's window lies at ``t`` (moved by ``move`` once it happened,
        kept inside the frame)."""
        ys, xs = self._win
        if self._move is None or t < self._move[0]:
            return ys, xs
        h, w = self.shape
        dy = int(np.clip(self._move[1][0], -ys.start, h - ys.stop))
        dx = int(np.clip(self._move[1][1], -xs.start, w - xs.stop))
        return slice(ys.start + dy, ys.stop + dy), slice(xs.start + dx, xs.stop + dx)

    def clean(self, phase: float, amplitude: float, t: float) -> np.ndarray:
        img = self._background(t)
        lumen, outer = self._heart_layers(phase, amplitude)
        sub = img[self._window(t)]
        sub += self._peri * (176.0 - sub)
        sub += outer * (self._wall_win - sub)
        sub += lumen * (self._blood_win - sub)
        return img


class LowContrastHeart(_PeristalticTube):
    """A C-shaped peristaltic tube on a bright background whose beat changes any pixel by
    at most ``contrast`` (default 4 %) of the frame mean, at every phase.

    Options: ``contrast`` (the bound, as a fraction of the frame mean; <= 0.05 keeps the
    5 % rule), ``background`` (mean grey level), ``radius_px``, ``wall_px``,
    ``constriction``, ``wave_width`` and ``shadow`` (grey levels of a static, soft darkening
    over the tube that makes it visible without changing with the beat).
    """

    name = "low-contrast"

    def __init__(self, shape: tuple[int, int] = (128, 160), beat: BeatProcess | None = None,
                 camera: Camera | None = None, seed: int = 0, *,
                 contrast: float = 0.04, background: float = 178.0, radius_px: float = 11.0,
                 wall_px: float = 3.5, constriction: float = 0.55,
                 wave_width: float = 0.12, shadow: float = 14.0) -> None:
        super().__init__(shape, _default_beat(beat, seed), camera, seed)
        rng = np.random.default_rng(seed + 7349)
        h, w = self.shape
        k = min(h, w) / 128.0
        # C-shaped centreline: an arc of ~250 deg, opening to a random side, whose ends run
        # a little past the arc as straight inflow / outflow stubs
        cx = w * (0.5 + rng.uniform(-0.05, 0.05))
        cy = h * (0.5 + rng.uniform(-0.05, 0.05))
        rad = 0.30 * min(h, w) * rng.uniform(0.95, 1.05)
        opening = rng.uniform(0, TWO_PI)
        span = math.radians(rng.uniform(240, 260))
        a = opening + 0.5 * (TWO_PI - span) + np.linspace(0.0, span, int(6 * rad * span))
        arc = np.column_stack([cx + rad * np.cos(a), cy + rad * np.sin(a)])
        stub = np.linspace(0.0, 0.35 * rad, int(2 * rad))[:, None]

        def tangent(i: int) -> np.ndarray:
            return np.array([-math.sin(a[i]), math.cos(a[i])])

        head = arc[0] - stub[::-1] * tangent(0)
        tail = arc[-1] + stub * tangent(-1)
        points = np.vstack([head[:-1], arc, tail[1:]])
        self._setup_tube(points, radius_px * k, wall_px * k, constriction, wave_width,
                         12.0 * k, rng)
        self._bg = (background + 5.0 * _unit_noise(rng, (h, w), 3.0 * k)
                    + 2.5 * _unit_noise(rng, (h, w), 1.0))
        # a static, soft shadow over the tube (as if slightly out of focus) makes the heart
        # visible without adding any phase-dependent change
        g = self._geom
        r_in, r_edge = radius_px * k, g.dist.max() - 1.0
        x = np.clip((r_edge - g.dist) / (r_edge - r_in), 0.0, 1.0)
        self._bg.ravel()[g.band] -= shadow * x * x * (3.0 - 2.0 * x)
        # the beat moves any pixel by at most gain; the frame mean never falls below
        # mean(static) - gain, so gain <= contrast * mean(clean) at every phase
        self._gain = contrast * float(self._bg.mean()) / (1.0 + contrast)
        self._bg_band = self._bg.ravel()[g.band]

    def clean(self, phase: float, amplitude: float, t: float) -> np.ndarray:
        lumen, outer, blood = self._tube_layers(phase, amplitude)
        # heart layer in [-1, 0]: wall -0.55, lumen -0.7 .. -1 (blood texture), so no pixel
        # changes by more than the gain between any two phases
        blood01 = np.clip(0.5 + 0.25 * blood, 0.0, 1.0)
        layer = -0.55 * outer - lumen * (0.15 + 0.3 * blood01)
        img = self._bg.copy()
        img.ravel()[self._geom.band] = self._bg_band + self._gain * layer
        return img


def procedural_hearts() -> dict[str, type[HeartVideo]]:
    """The procedural heart classes by name."""
    from .pulsing import PulsingChamber, TwistingChamber

    return {cls.name: cls for cls in (TwoChamberHeart, HeartTube, SmallHeart,
                                      LowContrastHeart, PulsingChamber, TwistingChamber)}
