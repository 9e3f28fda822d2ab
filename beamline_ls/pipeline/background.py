"""Background (laser-off mean image) and its saturating subtraction.

A background is valid only for the camera settings it was taken with; any change of
exposure, binning or ROI invalidates it, because dark offset and fixed-pattern noise
depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Background:
    mean: np.ndarray  # float32 (y, x)
    n_frames: int
    settings_key: tuple  # (exposure_s, binning, roi) it was taken with

    def matches(self, settings_key: tuple) -> bool:
        return self.settings_key == settings_key

    def subtract(self, image: np.ndarray) -> np.ndarray:
        """``image - mean`` rounded and clipped at zero, in the image's dtype."""
        if image.shape != self.mean.shape:
            raise ValueError(f"image {image.shape} and background {self.mean.shape} differ")
        out = image.astype(np.float32)
        out -= self.mean
        np.rint(out, out=out)
        np.clip(out, 0, np.iinfo(image.dtype).max, out=out)
        return out.astype(image.dtype)


class BackgroundAccumulator:
    """Mean of ``n`` frames, accumulated one frame at a time (camera thread)."""

    def __init__(self, n: int, settings_key: tuple):
        if n < 1:
            raise ValueError("n must be >= 1")
        self.n = n
        self.settings_key = settings_key
        self.count = 0
        self._sum: np.ndarray | None = None

    def add(self, image: np.ndarray) -> bool:
        """Add a frame; True once ``n`` frames are in."""
        if self._sum is None:
            self._sum = np.zeros(image.shape, np.float64)
        if self.count < self.n:
            self._sum += image
            self.count += 1
        return self.count >= self.n

    def result(self) -> Background:
        if self._sum is None or self.count == 0:
            raise RuntimeError("no frames accumulated")
        return Background((self._sum / self.count).astype(np.float32), self.count,
                          self.settings_key)
