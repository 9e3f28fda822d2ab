"""Sum-of-absolute-differences kernels: the only per-pixel work of the gating path.

Why numba: measured on the development machine (one core, 39 references), a numba loop
over uint8 rows computed as ``max(a, b) - min(a, b)`` vectorises to SIMD and takes
0.14 ms at 128x128 and 2.0 ms at 512x512, against 1.0 ms and 11.4 ms for the
equivalent numpy ``abs(a - b).sum()`` on int16 (which must also materialise a
temporary). Everything else in the package is plain numpy.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["as_work_dtype", "bin_image", "sad_indexed", "sad_stack"]


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def _sad_stack(stack, idx, img, oy, ox, m):  # pragma: no cover - compiled
    n = idx.shape[0]
    h = stack.shape[1]
    w = stack.shape[2]
    out = np.zeros(n, np.int64)
    for k in range(n):
        acc = np.int64(0)
        for y in range(m, h - m):
            r = stack[idx[k], y, m:w - m]
            a = img[y + oy, m + ox:w - m + ox]
            row = np.uint32(0)
            for x in range(r.shape[0]):
                p = r[x]
                q = a[x]
                row += np.uint32(max(p, q) - min(p, q))
            acc += row
        out[k] = acc
    return out


def sad_indexed(stack: np.ndarray, idx: np.ndarray, img: np.ndarray, oy: int = 0,
                ox: int = 0, margin: int = 0) -> np.ndarray:
    """SAD of ``img`` shifted by (oy, ox) against ``stack[idx]`` over the interior.

    Compares ``stack[k, y, x]`` with ``img[y + oy, x + ox]`` for ``margin <= y < h -
    margin`` (same for x); requires ``|oy|, |ox| <= margin``. ``stack`` and ``img``
    must share dtype uint8 or uint16 (uint16 rows of up to 65536 px cannot overflow
    the uint32 row accumulator). Returns int64 array of len(idx).
    """
    if abs(oy) > margin or abs(ox) > margin:
        raise ValueError("shift larger than margin")
    if stack.dtype != img.dtype:
        raise TypeError("stack and image dtypes differ")
    return _sad_stack(stack, np.ascontiguousarray(idx, dtype=np.int64), img,
                      int(oy), int(ox), int(margin))


def sad_stack(stack: np.ndarray, img: np.ndarray, oy: int = 0, ox: int = 0,
              margin: int = 0) -> np.ndarray:
    """SAD of ``img`` against every frame of ``stack`` (see `sad_indexed`)."""
    return sad_indexed(stack, np.arange(stack.shape[0]), img, oy, ox, margin)


def as_work_dtype(img: np.ndarray) -> np.ndarray:
    """Return a C-contiguous uint8/uint16 view or copy of a 2-D image.

    Floats and wider integers are clipped into uint16, so the SAD kernel only ever
    sees the two camera dtypes it is compiled and checked for.
    """
    if img.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {img.shape}")
    if img.dtype == np.uint8 or img.dtype == np.uint16:
        return np.ascontiguousarray(img)
    return np.clip(np.rint(img), 0, 65535).astype(np.uint16)


@numba.njit(cache=True, nogil=True, boundscheck=False)
def _bin(img, f, out):  # pragma: no cover - compiled
    ho, wo = out.shape
    half = (f * f) // 2
    acc = np.zeros(wo, np.uint32)
    for yo in range(ho):
        acc[:] = 0
        for dy in range(f):
            row = img[yo * f + dy]
            for xo in range(wo):
                s = np.uint32(0)
                for dx in range(f):
                    s += np.uint32(row[xo * f + dx])
                acc[xo] += s
        for xo in range(wo):
            out[yo, xo] = (acc[xo] + half) // (f * f)
    return out


def bin_image(img: np.ndarray, factor: int) -> np.ndarray:
    """Block-average by an integer factor (cropping the remainder); keeps the dtype.

    Used for the period search (needs the heartbeat signal, not full resolution) and
    to cap the phase-matching size. numba: 0.1 ms at 512x512 vs 1.7 ms for numpy's
    reshape-sum on the development machine.
    """
    if factor <= 1:
        return img
    if img.dtype.kind == "f":  # weights: the compiled kernel sums integers
        h, w = img.shape[0] // factor, img.shape[1] // factor
        block = img[:h * factor, :w * factor].reshape(h, factor, w, factor)
        return block.mean(axis=(1, 3), dtype=np.float64).astype(img.dtype)
    out = np.empty((img.shape[0] // factor, img.shape[1] // factor), img.dtype)
    return _bin(np.ascontiguousarray(img), int(factor), out)


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def _scale_to(img, scale, out):  # pragma: no cover - compiled
    h, w = img.shape
    for y in range(h):
        for x in range(w):
            v = img[y, x] * scale + 0.5
            out[y, x] = np.uint16(v if v < 65535.0 else 65535.0)
    return out


#: mean grey level every frame is scaled to before any SAD (uint16 keeps 1/16 DN steps
#: of an 8-bit camera and the full range of a 12-bit one)
NORMALISED_MEAN = 4096.0


def normalise_brightness(img: np.ndarray, mean: float = NORMALISED_MEAN) -> np.ndarray:
    """The frame scaled so its mean is ``mean``, as uint16.

    Why: illumination flicker multiplies the whole frame; unscaled, a 2 % flicker adds
    ~3 DN to every pixel's absolute difference, as much as the heartbeat itself on a
    small or faint heart, and the SAD would track the lamp instead of the heart.
    """
    m = float(img.mean())
    scale = mean / m if m > 0 else 1.0
    return _scale_to(img, scale, np.empty(img.shape, np.uint16))


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def _products(rows, img, mean, weight, g, dy, dx):  # pragma: no cover - compiled
    m, h, w = rows.shape
    c = np.zeros(m, np.float64)
    xx = 0.0
    xrow = np.empty(w, np.float32)
    for y in range(h):
        for x in range(w):
            xrow[x] = np.float32(img[y + g + dy, x + g + dx]) - mean[y, x]
        s = np.float32(0.0)
        for x in range(w):
            s += weight[y, x] * xrow[x] * xrow[x]
        xx += s
        for k in range(m):
            s = np.float32(0.0)
            r = rows[k, y]
            for x in range(w):
                s += r[x] * xrow[x]
            c[k] += s
    return c, xx


def centred_products(rows: np.ndarray, img: np.ndarray, mean: np.ndarray,
                     weight: np.ndarray, margin: int, dy: int = 0, dx: int = 0
                     ) -> tuple[np.ndarray, float]:
    """Weighted inner products of the centred, shifted frame with reference frames.

    ``rows`` (m, h', w') float32 are reference frames cropped by ``margin`` on every
    side, minus ``mean`` (h', w'), times the pixel ``weight`` (h', w'); the frame's
    window is shifted by (dy, dx), |dy|, |dx| <= margin. Returns (products (m,),
    weighted squared norm of the centred window).
    Why numba: no cropped or float copies of the frame, and no BLAS thread pool
    competing with the camera threads (measured: BLAS threads of two processes on two
    cores stalled single frames for ~80 ms).
    """
    if max(abs(dy), abs(dx)) > margin:
        raise ValueError("shift larger than margin")
    return _products(rows, img, mean, weight, int(margin), int(dy), int(dx))


#: the drift offsets `drift_costs` compares, relative to the current one (diagonals
#: take two frames)
DRIFT_STEPS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=True)
def _drift_costs(img, mean, frames, wts, weight, g, dy, dx, reach, step):  # pragma: no cover
    m, h, w = frames.shape
    out = np.full(5, np.inf)
    model = np.empty(w, np.float32)
    for j in range(5):
        sy = dy + (-1 if j == 1 else 1 if j == 2 else 0)
        sx = dx + (-1 if j == 3 else 1 if j == 4 else 0)
        if max(abs(sy), abs(sx)) <= reach:
            out[j] = 0.0
    for y in range(0, h, step):
        for x in range(0, w, step):
            model[x] = (wts[0] * frames[0, y, x] + wts[1] * frames[1, y, x]
                        + wts[2] * frames[2, y, x] + wts[3] * frames[3, y, x])
        for j in range(5):
            if out[j] == np.inf:
                continue
            sy = dy + (-1 if j == 1 else 1 if j == 2 else 0)
            sx = dx + (-1 if j == 3 else 1 if j == 4 else 0)
            s = np.float32(0.0)
            for x in range(0, w, step):
                d = np.float32(img[y + g + sy, x + g + sx]) - mean[y, x] - model[x]
                s += weight[y, x] * d * d
            out[j] += s
    return out


def drift_costs(img: np.ndarray, mean: np.ndarray, frames: np.ndarray, weights: np.ndarray,
                weight: np.ndarray, margin: int, dy: int, dx: int, reach: int,
                step: int = 1) -> np.ndarray:
    """Weighted squared distances between the centred frame window and a model image,
    with the window at the drift offsets ``DRIFT_STEPS`` from (dy, dx); inf where an
    offset is beyond ``reach`` (<= ``margin``). The model is ``weights`` (4,) times the
    four centred reference ``frames`` (4, h', w') around a position, made row by row
    here (no image-sized temporaries); every ``step``-th row and column is compared (a
    drift decision needs no more)."""
    if reach > margin or max(abs(dy), abs(dx)) > reach:
        raise ValueError("drift beyond the margin")
    return _drift_costs(img, mean, frames, np.asarray(weights, np.float32), weight,
                        int(margin), int(dy), int(dx), int(reach), int(step))
