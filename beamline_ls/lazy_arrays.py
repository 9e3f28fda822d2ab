"""Lazy (dask) frames from the catalog, in chunks of whole volumes or blocks of frames.

Why: tiled's dask array client makes an array under 100 MiB one single dask chunk, and
larger ones chunks of up to 100 MiB. A data user who opens a run lazily and computes
one plane waits for the whole run, or for 100 MiB of it. Here the array is cut along
its leading axes (volumes, then planes) on the boundaries of the chunks the server
declares, into chunks of at most :data:`CHUNK_BYTES`, each fetched by one request when
computed. The price is more requests for a whole run (figures and command:
``benchmarks/RESULTS.md``, "Lazy reads"). Built only from the client's public
``read(slice)``.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

import dask.array
from tiled.client.array import DaskArrayClient
from tiled.ndslice import NDSlice

#: upper bound of one chunk, unless one declared chunk along the leading axes is larger
CHUNK_BYTES = 16 << 20


def _groups(chunks: tuple[int, ...], unit_bytes: int) -> list[tuple[int, int]]:
    """Consecutive runs of the declared ``chunks`` along one axis, each run at most
    CHUNK_BYTES (``unit_bytes`` per index), as ``(start, stop)`` index ranges."""
    groups, start, size = [], 0, 0
    for n in chunks:
        if size and (size + n) * unit_bytes > CHUNK_BYTES:
            groups.append((start, start + size))
            start, size = start + size, 0
        size += n
    if size:
        groups.append((start, start + size))
    return groups


class ChunkedDaskArrayClient(DaskArrayClient):
    """tiled's dask array client, whose whole-array ``read()`` is chunked as above."""

    def read(self, slice: Any = None) -> Any:  # tiled names it so
        if slice is not None and NDSlice(slice):
            return super().read(slice)
        shape, declared = tuple(self.shape), tuple(tuple(c) for c in self.chunks)
        if not shape or 0 in shape or len(shape) < 2:
            return super().read()
        itemsize = self.dtype.itemsize
        # split the first axis; split the second too (planes of a volume) when one
        # index of the first axis is already over the bound
        plane_bytes = math.prod(shape[2:]) * itemsize
        outer = _groups(declared[0], shape[1] * plane_bytes)
        split_second = len(shape) >= 4 and shape[1] * plane_bytes > CHUNK_BYTES
        inner = _groups(declared[1], plane_bytes) if split_second else [(0, shape[1])]
        biggest = (max(b - a for a, b in outer) * max(b - a for a, b in inner)
                   * plane_bytes)
        if biggest >= self.RESPONSE_BYTESIZE_LIMIT:
            # a declared chunk over tiled's response limit: tiled splits it itself, and
            # its split arrays of one node share a name, so they cannot be combined
            return super().read()
        parent = super()
        rows = [dask.array.concatenate(
                    [parent.read(NDSlice(builtins.slice(a0, b0), builtins.slice(a1, b1)))
                     for a1, b1 in inner], axis=1)
                for a0, b0 in outer]
        return dask.array.concatenate(rows, axis=0)
