"""Frames to JPEG for the browser: binned, contrast-stretched to 8 bits, encoded once.

A browser draws 8-bit pixels, so the contrast mapping happens here. Every browser may
choose its own (automatic or manual limits); the encoder caches each (frame, contrast)
result, so browsers with the same setting share one encoding of each frame.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from beamline_ls.frame import bin_down

#: largest side of an image sent to a browser (a 2048^2 frame is binned 4 x 4)
MAX_SIDE = 512
#: automatic contrast: these percentiles of the (binned) image map to black and white
AUTO_PERCENTILES = (0.5, 99.5)
JPEG_QUALITY = 90
#: pixels the automatic contrast looks at, at most (a regular grid over the image)
AUTO_SAMPLE = 65536


@dataclass(frozen=True)
class Contrast:
    """``low``/``high`` in counts; None for either means automatic (percentile)."""

    low: float | None = None
    high: float | None = None

    @classmethod
    def parse(cls, low: str | None, high: str | None) -> Contrast:
        """From query parameters; empty or 'auto' means automatic. Bad input is a
        ValueError that names the value."""
        def one(name: str, text: str | None) -> float | None:
            if text in (None, "", "auto"):
                return None
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"contrast {name} must be a number or 'auto', got "
                                 f"{text!r}") from None
            if not np.isfinite(value):
                raise ValueError(f"contrast {name} must be finite, got {text!r}")
            return value

        c = cls(one("low", low), one("high", high))
        if c.low is not None and c.high is not None and c.high <= c.low:
            raise ValueError(f"contrast high ({c.high:g}) must exceed low ({c.low:g})")
        return c


@dataclass(frozen=True)
class EncodedImage:
    data: bytes  # JPEG
    width: int  # pixels of the image sent
    height: int
    low: float  # counts shown black
    high: float  # counts shown white
    bin_factor: int  # frame pixels per image pixel, each way


def limits(image: np.ndarray, contrast: Contrast) -> tuple[float, float]:
    """The (black, white) counts: manual where given, else the automatic percentiles;
    never an empty range (a flat image maps its one value to mid grey)."""
    lo, hi = contrast.low, contrast.high
    if lo is None or hi is None:
        # every k-th pixel each way, <= ~65k of them: the percentiles of a 512^2 image
        # cost 15 ms in full, and a live view recomputes them on every frame
        k = max(1, int(np.sqrt(image.size / AUTO_SAMPLE)))
        p_lo, p_hi = np.percentile(image[::k, ::k], AUTO_PERCENTILES)
        lo = float(p_lo) if lo is None else lo
        hi = float(p_hi) if hi is None else hi
    if hi <= lo:
        if contrast.low is not None or contrast.high is not None:
            raise ValueError(
                f"contrast: black {lo:g} is not below white {hi:g} (one limit given, the "
                "other automatic): give both limits, or move the one given")
        lo, hi = lo - 0.5, lo + 0.5  # a flat image: its one value in mid grey
    return lo, hi


def encode_image(image: np.ndarray, contrast: Contrast = Contrast(),
                 max_side: int = MAX_SIDE) -> EncodedImage:
    """``image`` (2-D, any numeric type) binned to ``max_side``, stretched to 8 bits,
    JPEG (quality 90: ~1 ms for 512 x 512 where PNG took 12 ms on a noisy frame)."""
    small = bin_down(np.asarray(image), max_side)
    lo, hi = limits(small, contrast)
    scaled = np.clip((small - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(scaled, mode="L").save(buf, format="JPEG", quality=JPEG_QUALITY)
    factor = max(1, image.shape[1] // max(1, small.shape[1]))
    return EncodedImage(buf.getvalue(), small.shape[1], small.shape[0], lo, hi, factor)


def roi_stats(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> dict[str, float]:
    """Statistics of the full-resolution pixels in [x0, x1) x [y0, y1), clipped to the
    frame; a ValueError when nothing of the frame is inside."""
    h, w = image.shape
    xa, xb = max(0, min(x0, x1)), min(w, max(x0, x1))
    ya, yb = max(0, min(y0, y1)), min(h, max(y0, y1))
    if xb <= xa or yb <= ya:
        raise ValueError(f"ROI x {x0}..{x1}, y {y0}..{y1} lies outside the {w} x {h} "
                         "frame")
    part = image[ya:yb, xa:xb]
    return {"x0": xa, "y0": ya, "x1": xb, "y1": yb, "pixels": int(part.size),
            "mean": float(part.mean()), "min": float(part.min()),
            "max": float(part.max()), "sum": float(part.sum(dtype=np.float64))}


class EncoderCache:
    """Encodings of the newest frames, one per (source, frame number, contrast)."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, EncodedImage] = OrderedDict()
        self.encodes = 0  # encodings made (a cache hit makes none)

    def get(self, source: str, counter: int, image: np.ndarray,
            contrast: Contrast) -> EncodedImage:
        key = (source, counter, contrast)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        encoded = encode_image(image, contrast)
        with self._lock:
            self.encodes += 1
            self._cache[key] = encoded
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)
        return encoded
