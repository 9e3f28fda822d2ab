"""Which pixels repeat with the heartbeat, read off the period search's buffer.

What: at the lock the period search holds a few periods of binned frames. Each
pixel's series, less its moving mean over one period (which keeps the beat whole and
takes out slow drift and bleaching), is compared with itself one period later: the
covariance at that lag is the part of its variance that comes back every beat. The
weight is that covariance over the variance, in [0, 1], per pixel.

Why: the first reference is one beat of frames, and a weight from the variance over
that beat (`phase.heartbeat_weight`) counts everything that changes in it, the heart
wall as much as blood texture flowing past or tissue drifting under the heart. On a
faint heart the change that does not repeat can outweigh the change that does, and
the frames of a whole stretch of the beat then read on one phase. The buffer already
holds several beats; what repeats a period later is the heart.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: fewest one-period pairs per pixel for a weight worth having
MIN_PAIRS = 8


def repeat_weight(binned: np.ndarray, period: float,
                  present: np.ndarray | None = None) -> np.ndarray | None:
    """Per binned pixel, the share of its variance that repeats ``period`` frames on.

    ``binned``: (n, h, w) frames at consecutive frame times, oldest first; ``period``
    in frames; ``present``: (n,) False where a frame is missing (its place kept, its
    pixels ignored; default: all present). Covariance and variance are summed over
    3 x 3 neighbourhoods before the ratio, so a weight from a few beats is not
    dominated by its own sampling noise. None when the frames hold too few pairs one
    period apart, or nothing repeats.
    """
    n = binned.shape[0]
    ok = np.ones(n, bool) if present is None else np.asarray(present, bool)
    win = max(2, int(round(period)))
    lo = int(math.floor(period))
    frac = period - lo
    if n - win + 1 - (lo + 1) < MIN_PAIRS:
        return None
    x = binned.astype(np.float64) * ok[:, None, None]
    zero = np.zeros((1, *x.shape[1:]))
    c = np.cumsum(np.concatenate([zero, x]), axis=0)
    k = np.cumsum(np.concatenate([[0], ok.astype(np.int64)]))
    # each frame less the mean of the period of frames around it (those present)
    count = k[win:] - k[:-win]
    mid = (c[win:] - c[:-win]) / np.maximum(count, 1)[:, None, None]
    sel = slice(win // 2, win // 2 + mid.shape[0])
    valid = ok[sel] & (2 * count >= win)
    y = (x[sel] - mid) * valid[:, None, None]
    cov = np.zeros(y.shape[1:])
    pairs = math.inf
    for lag, share in ((lo, 1.0 - frac), (lo + 1, frac)):
        both = valid[:-lag] & valid[lag:]
        pairs = min(pairs, int(both.sum()))
        if share > 0 and both.any():
            cov += share * (y[:-lag] * y[lag:]).sum(axis=0) / both.sum()
    if pairs < MIN_PAIRS:
        return None
    var = (y * y).sum(axis=0) / valid.sum()
    cov = ndimage.uniform_filter(cov, 3, mode="nearest")
    var = ndimage.uniform_filter(var, 3, mode="nearest")
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(var > 0, cov / var, 0.0)
    w = np.clip(w, 0.0, 1.0)
    if not w.any():
        return None
    return w.astype(np.float32)


def to_frame(weight: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """A binned weight back at frame size: each value over its ``factor`` x ``factor``
    block, the rows and columns the binning cropped taking their neighbour's."""
    full = np.repeat(np.repeat(weight, factor, axis=0), factor, axis=1)
    h, w = shape
    full = np.pad(full, ((0, max(0, h - full.shape[0])), (0, max(0, w - full.shape[1]))),
                  mode="edge")
    return np.ascontiguousarray(full[:h, :w])
