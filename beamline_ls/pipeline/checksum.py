"""HDF5's Fletcher-32 chunk checksum, computed while the frame is copied.

Why: every reader of the frame files (h5py, tiled's adapter, the run file's virtual
datasets) verifies HDF5's ``fletcher32`` filter on each chunk it reads, so a damaged
frame raises an error naming the checksum instead of returning silent garbage. The
writer hands whole chunks to HDF5 with ``write_direct_chunk`` (no filter pipeline), so
it appends the checksum itself: HDF5's algorithm (16-bit big-endian words, both sums
folded every 360 words, then once more) stored little-endian after the data. The
numba kernel copies the frame into the chunk buffer and sums it in one pass.
"""

from __future__ import annotations

import numba
import numpy as np


# compiled when this module is imported (from the on-disk cache after the first time),
# so the first frame of the first capture does not pay seconds of compilation
@numba.njit("uint32(uint16[::1], uint16[::1])", cache=True, nogil=True, boundscheck=False)
def _copy_fletcher32(src, dst):  # pragma: no cover - compiled
    """Copy the 16-bit words ``src`` into ``dst`` and return HDF5's Fletcher-32 of
    their bytes, in one pass (the frame is read once). Within each 360-word block
    HDF5's sums never overflow, so the block's effect is exact: s1 += sum(w) and
    s2 += L * s1 + sum((L - k) * w_k), two reductions the compiler vectorises (the
    word-by-word chain s1 += w; s2 += s1 does not). The folds between blocks are
    HDF5's own."""
    words = src.size
    s1 = np.uint64(0)
    s2 = np.uint64(0)
    mask = np.uint64(0xFFFF)
    sixteen = np.uint64(16)
    base = 0
    while words > 0:
        block = 360 if words > 360 else words
        words -= block
        # both fit 32 bits: total <= 360 * 65535, weighted <= 65535 * 360 * 361 / 2
        total = np.uint32(0)
        weighted = np.uint32(0)
        for k in range(block):
            v = src[base + k]
            dst[base + k] = v
            u = np.uint32(v)  # HDF5 reads each word big-endian: swap the bytes
            w = ((u & np.uint32(0xFF)) << np.uint32(8)) | (u >> np.uint32(8))
            total += w
            weighted += np.uint32(block - k) * w
        base += block
        s2 = s2 + np.uint64(block) * s1 + np.uint64(weighted)
        s1 = s1 + np.uint64(total)
        s1 = (s1 & mask) + (s1 >> sixteen)
        s2 = (s2 & mask) + (s2 >> sixteen)
    s1 = (s1 & mask) + (s1 >> sixteen)
    s2 = (s2 & mask) + (s2 >> sixteen)
    return np.uint32((s2 << sixteen) | s1)


def chunk_with_fletcher32(image: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``image``'s bytes followed by their HDF5 Fletcher-32 checksum, as the chunk a
    dataset with the ``fletcher32`` filter stores (``out``: a reusable uint8 buffer of
    ``image.nbytes + 4``). ``image`` holds 16-bit pixels (the camera's dtype)."""
    if image.dtype.itemsize != 2:
        raise ValueError(f"16-bit pixels expected, got {image.dtype}")
    src = np.ascontiguousarray(image).reshape(-1).view(np.uint16)
    if out is None or out.size != 2 * src.size + 4:
        out = np.empty(2 * src.size + 4, np.uint8)
    checksum = _copy_fletcher32(src, out[:-4].view(np.uint16))
    out[-4:] = np.array([checksum], "<u4").view(np.uint8)
    return out
