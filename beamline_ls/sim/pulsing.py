"""Procedural hearts whose relaxation retraces their contraction: one chamber.

Why they are in the gating corpus: the other hearts never pass through the same image
twice in a beat (two chambers out of step, a travelling wave, a chamber that rocks as
it pumps). Here one movement (the chamber shrinking, or turning about its base) goes
out and comes back along the same path, and a still diastole (~40 % of the beat)
separates one beat from the next. A single frame therefore says how far along the
path the chamber is but not whether it is going or coming back: only the order of
the frames does. It is the shape anyone's first simulated heart has (an ellipse that
pulses), and an analyzer that phases each frame by its image stalls on it: the probe
heart that turned about its base (80 frames/s) locked 14 times in 40 s and never
triggered, its frames read running backwards.

Everything that does not depend on the phase (grids, the chamber's own texture, the
tissue around it) is computed once in ``__init__``; ``clean`` does elementwise
arithmetic on a window around the chamber.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .beat import BeatProcess
from .procedural import _default_beat, _unit_noise
from .videos import Camera, HeartVideo

TWO_PI = 2.0 * math.pi
#: a beat turns the chamber at most this many times its typical turn
_MAX_AMPLITUDE = 1.5


class PulsingChamber(HeartVideo):
    """One elliptical chamber on textured tissue that contracts and relaxes along the
    same path: fast contraction, slower relaxation, then a still diastole.

    Options: ``depth`` (fractional shrink of a typical beat, scaled by the beat's
    amplitude), ``systole`` (fraction of the beat spent contracting), ``relax``
    (fraction spent relaxing; the rest of the beat is still), ``twist_deg`` (the
    chamber also turns about its base by this angle at full contraction: its wall
    sweeps sideways, which looks like the sample moving).
    """

    name = "pulsing-chamber"

    def __init__(self, shape: tuple[int, int] = (128, 160), beat: BeatProcess | None = None,
                 camera: Camera | None = None, seed: int = 0, *,
                 depth: float = 0.3, systole: float = 0.2, relax: float = 0.4,
                 twist_deg: float = 0.0) -> None:
        super().__init__(shape, _default_beat(beat, seed), camera, seed)
        if not 0 <= depth < 0.8:
            raise ValueError("depth must be in [0, 0.8)")
        if systole <= 0 or relax <= 0 or systole + relax >= 1:
            raise ValueError("systole and relax must be positive and leave a diastole")
        rng = np.random.default_rng(seed + 9127)
        h, w = self.shape
        k = min(h, w) / 128.0
        self._depth, self._sys, self._relax = depth, systole, relax
        self._twist = math.radians(twist_deg)
        self._tissue = (148.0 + 10.0 * _unit_noise(rng, (h, w), 4.0 * k)
                        + 5.0 * _unit_noise(rng, (h, w), 1.0))
        self._a = 27.0 * k * rng.uniform(0.9, 1.1)  # semi-axes of the relaxed chamber
        self._b = 19.0 * k * rng.uniform(0.9, 1.1)
        self._wall = 3.0 * k
        cx, cy = w * rng.uniform(0.42, 0.58), h * rng.uniform(0.42, 0.58)
        half = int(math.ceil(self._a + 3 * self._wall + 2))
        size = 2 * half + 8  # of the lumen's texture, read cyclically
        # the window reaches as far as the apex turns (about the base, 2a from it)
        turn = abs(self._twist) * _MAX_AMPLITUDE  # at the strongest beat
        reach = math.hypot(2 * self._a * math.cos(turn) - self._a,
                           2 * self._a * math.sin(turn)) if turn else 0.0
        half = int(math.ceil(max(self._a, reach) + 3 * self._wall + 2))
        y0, y1 = max(int(cy) - half, 0), min(int(cy) + half + 1, h)
        x0, x1 = max(int(cx) - half, 0), min(int(cx) + half + 1, w)
        self._win = (slice(y0, y1), slice(x0, x1))
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(float)
        ang = rng.uniform(0, math.pi)
        c, s = math.cos(ang), math.sin(ang)
        self._u = (xx - cx) * c + (yy - cy) * s  # chamber coordinates (px)
        self._v = -(xx - cx) * s + (yy - cy) * c
        # the lumen's texture (trabeculae, blood) is the chamber's own: it shrinks with
        # it, so an image is a function of the contraction alone
        self._lumen_tex = 8.0 * _unit_noise(rng, (size, size), 1.3 * k)
        self._tex_origin = size / 2.0

    def contraction(self, phase: float) -> float:
        """0 relaxed .. 1 fully contracted; the same values going in and coming out."""
        u = phase / TWO_PI - math.floor(phase / TWO_PI)
        if u < self._sys:
            x = u / self._sys
        elif u < self._sys + self._relax:
            x = 1.0 - (u - self._sys) / self._relax
        else:
            return 0.0
        return 0.5 - 0.5 * math.cos(math.pi * x)

    def clean(self, phase: float, amplitude: float, t: float) -> np.ndarray:
        c = self.contraction(phase)
        scale = 1.0 - min(self._depth * amplitude, 0.8) * c
        u, v = self._u, self._v
        if self._twist:  # turned about the base, the end of the long axis at -a
            ang = self._twist * min(amplitude, _MAX_AMPLITUDE) * c
            cs, sn = math.cos(ang), math.sin(ang)
            du = u + self._a
            u, v = du * cs + v * sn - self._a, -du * sn + v * cs
        u, v = u / scale, v / scale  # chamber coordinates, relaxed size
        r = np.hypot(u / self._a, v / self._b)
        edge = (r - 1.0) * min(self._a, self._b) * scale  # px outside the lumen's edge
        lumen = np.clip(0.5 - edge, 0.0, 1.0)
        wall = np.clip(0.5 - (edge - self._wall * (1.0 + 0.6 * (1.0 - scale))), 0.0, 1.0)
        tex = ndimage.map_coordinates(self._lumen_tex, [v + self._tex_origin,
                                                        u + self._tex_origin],
                                      order=1, mode="wrap")
        img = self._tissue.copy()
        sub = img[self._win]
        sub += wall * (72.0 - sub)
        sub += lumen * (108.0 + tex - sub)
        return img


class TwistingChamber(PulsingChamber):
    """The chamber turning 28 degrees about its base and back each beat, its size
    unchanged: still one path out and back (the images of the turn return in reverse),
    and its wall sweeps sideways as a sample that moves would."""

    name = "twisting-chamber"

    def __init__(self, shape: tuple[int, int] = (128, 160), beat: BeatProcess | None = None,
                 camera: Camera | None = None, seed: int = 0, **options: float) -> None:
        options.setdefault("depth", 0.0)
        options.setdefault("twist_deg", 28.0)
        super().__init__(shape, beat, camera, seed, **options)
