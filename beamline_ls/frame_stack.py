"""Frames of one dataset across frame files, read with h5py when asked for.

Why: the catalog builds a new adapter for every request (tiled has no place to keep
one between requests, and a live run's shape changes). tiled's HDF5 adapter builds a
dask graph with one task per chunk on every request: for a 10,000-frame run written
one frame per chunk, that graph cost more than the rest of the request together, to
read one plane. A :class:`FrameStack` only opens the files for their shapes, and a read
opens the files that hold the frames asked for and reads just those.

The array the catalog serves (``structure_shape``) is the files' frames end to end
along the first axis, the first ``prod(leading dims)`` of them laid out in the leading
dimensions (volumes, planes) and the trailing dimensions as in the files. Frames
written after the catalog recorded the shape (a live run) are not served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tiled.adapters.hdf5 import h5open
from tiled.ndslice import NDSlice


class FrameStack:
    """The frames of ``dataset`` in ``files``, end to end, served as ``structure_shape``.

    Opening reads each file's shape (raising h5py's error for a missing or damaged
    file). :meth:`fits` says whether the files hold the structure; :meth:`read` reads a
    numpy-style selection of it.
    """

    def __init__(self, files: Sequence[str | Path], dataset: str | None,
                 structure_shape: Sequence[int], **open_kwargs: Any) -> None:
        self.files = [str(f) for f in files]
        self.dataset = dataset
        self.open_kwargs = open_kwargs
        self.shape = tuple(int(n) for n in structure_shape)
        shapes, dtypes = [], []
        for path in self.files:
            with h5open(path, dataset, **open_kwargs) as ds:
                shapes.append(tuple(ds.shape))
                dtypes.append(ds.dtype)
        self.dtype = dtypes[0]
        self.frame_shape = shapes[0][1:] if shapes[0] else ()
        self.offsets = np.cumsum([0] + [s[0] if s else 0 for s in shapes])
        n_lead = len(self.shape) - len(self.frame_shape)
        self.lead_shape = self.shape[:n_lead]
        self._uniform = (
            n_lead >= 1 and all(s and s[1:] == self.frame_shape for s in shapes)
            and len({d for d in dtypes}) == 1 and self.dtype != np.dtype("O"))

    def fits(self) -> bool:
        """True when the files hold every frame of the structure, frames shaped as in
        the structure's trailing dimensions."""
        return (self._uniform and self.shape[len(self.lead_shape):] == self.frame_shape
                and math.prod(self.lead_shape) <= int(self.offsets[-1]))

    def read(self, selection: NDSlice | tuple = ()) -> np.ndarray:
        """``array[selection]`` of the structure-shaped array (ints and slices)."""
        key = NDSlice(*selection).expand_for_shape(self.shape) if selection \
            else NDSlice(*(slice(None),) * len(self.shape))
        n_lead = len(self.lead_shape)
        grid = np.arange(math.prod(self.lead_shape)).reshape(self.lead_shape)
        frames = np.asarray(grid[tuple(key[:n_lead])])
        frame_key = tuple(key[n_lead:])
        wanted, where = np.unique(frames.ravel(), return_inverse=True)
        block = (self._read_frames(wanted, frame_key) if wanted.size
                 else self._empty(frame_key))
        return block[where].reshape(frames.shape + block.shape[1:])

    def _empty(self, frame_key: tuple) -> np.ndarray:
        return np.empty((0, *self.frame_shape), self.dtype)[(slice(None), *frame_key)]

    def _read_frames(self, wanted: np.ndarray, frame_key: tuple) -> np.ndarray:
        """The frames ``wanted`` (sorted, unique), ``frame_key`` applied to each."""
        # h5py reads slices with a positive step; anything else is applied in memory
        direct = all(isinstance(k, int) or k.step is None or k.step > 0 for k in frame_key)
        in_file = frame_key if direct else ()
        out = []
        file_of = np.searchsorted(self.offsets, wanted, side="right") - 1
        for f in np.unique(file_of):
            local = wanted[file_of == f] - self.offsets[f]
            first, last = int(local[0]), int(local[-1])
            rows = slice(first, last + 1) if last - first + 1 == local.size else local
            with h5open(self.files[f], self.dataset, **self.open_kwargs) as ds:
                out.append(ds[(rows, *in_file)])
        block = out[0] if len(out) == 1 else np.concatenate(out)
        return block if direct else block[(slice(None), *frame_key)]
