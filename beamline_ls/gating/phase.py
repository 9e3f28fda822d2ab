"""Phase of one frame against a `Reference`.

What: SAD of the frame against every reference frame (numba kernel), minimum searched
in the unpadded period, V-fit around it for a sub-frame position (fallback: integer
position when no V exists), phase = 2*pi*(pos - pad)/P. The sample may drift laterally;
an integer offset (dx, dy) is kept and re-searched every frame within +-1 px of its last
value against the best-matching reference frame, bounded by ``max_drift``.

Why V-fit: near the match, SAD grows linearly with phase difference (|dI/dphi| * |dphi|
summed over pixels), so the curve around the minimum is a V, not a parabola.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .reference import Reference, v_fit
from .sad import sad_indexed

TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, slots=True)
class PhaseResult:
    phase: float  # rad, [0, 2*pi)
    position: float  # fractional reference index
    min_sad: float  # SAD at the best integer match
    median_sad: float  # median SAD over the reference (for match quality)
    v_ok: bool  # False when the V-fit fell back to the integer position
    drift: tuple[int, int]  # (dy, dx) used for this frame
    v_slope: float = 0.0  # SAD rise per reference frame at the match (sharpness)

    @property
    def match_ratio(self) -> float:
        """min/median SAD: ~0.1-0.4 for a good lock, -> 1 when nothing matches."""
        return self.min_sad / self.median_sad if self.median_sad > 0 else 1.0


class PhaseEstimator:
    """Per-frame phase against one reference, with bounded integer drift tracking."""

    def __init__(self, reference: Reference, max_drift: int = 4, track_drift: bool = True,
                 drift_margin: float = 0.01) -> None:
        self.ref = reference
        h, w = reference.frames.shape[1:]
        self.margin = max(1, min(max_drift + 1, min(h, w) // 4))
        self.max_drift = self.margin - 1
        self.track_drift = track_drift
        self.drift_margin = drift_margin
        self.dy = 0
        self.dx = 0
        p = reference.pad
        self._lo = p
        self._hi = p + int(math.ceil(reference.period)) - 1  # inclusive
        self._all = np.arange(reference.frames.shape[0])

    def estimate(self, image: np.ndarray) -> PhaseResult:
        """Phase of ``image`` (same shape and dtype as the reference frames)."""
        ref = self.ref
        if image.shape != ref.frames.shape[1:]:
            raise ValueError("frame shape differs from the reference")
        if image.dtype != ref.frames.dtype:
            image = image.astype(ref.frames.dtype)
        dy, dx = self.dy, self.dx
        sads = sad_indexed(ref.frames, self._all, image, dy, dx, self.margin).astype(float)
        lo, hi = self._lo, self._hi
        j = lo + int(np.argmin(sads[lo:hi + 1]))
        # the true minimum may sit one step into the padding (phase just below 0 or just
        # above the last whole frame); step there once, the padding provides neighbours
        if sads[j - 1] < sads[j] and j - 1 >= 1:
            j -= 1
        elif j + 1 < sads.size - 1 and sads[j + 1] < sads[j]:
            j += 1
        off = v_fit(sads[j - 1], sads[j], sads[j + 1]) if 0 < j < sads.size - 1 else None
        pos = j + (off if off is not None else 0.0)
        phase = ref.index_to_phase(pos)
        if self.track_drift:
            self._update_drift(image, j, sads[j])
        slope = 0.0
        if 0 < j < sads.size - 1:
            slope = max(sads[j - 1], sads[j + 1]) - sads[j]
        return PhaseResult(phase, pos, float(sads[j]), float(np.median(sads)),
                           off is not None, (dy, dx), float(slope))

    def _update_drift(self, image: np.ndarray, j: int, centre: float) -> None:
        best = centre * (1.0 - self.drift_margin)
        best_shift = None
        idx = np.array([j])
        for ddy in (-1, 0, 1):
            for ddx in (-1, 0, 1):
                if ddy == 0 and ddx == 0:
                    continue
                ny, nx = self.dy + ddy, self.dx + ddx
                if abs(ny) > self.max_drift or abs(nx) > self.max_drift:
                    continue
                s = float(sad_indexed(self.ref.frames, idx, image, ny, nx, self.margin)[0])
                if s < best:
                    best, best_shift = s, (ny, nx)
        if best_shift is not None:
            self.dy, self.dx = best_shift
