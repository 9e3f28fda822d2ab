"""Frames by reference: HDF5 virtual datasets into the camera's own files.

A StreamResource names one dataset in one file; StreamDatum documents declare which
index ranges of it belong to the run's stream. The run file shows a data key as one
virtual dataset that concatenates those ranges, resource after resource, so a reader
sees exactly the frames the catalog sees, as (frames, y, x) or (volumes, planes, y, x),
without a byte copied. Source files are named by paths RELATIVE to the run file's
directory: HDF5 resolves them from there, so a data folder moved or copied as a whole
keeps working.

Caveat of virtual datasets: HDF5 reads a missing source file as the dataset's fill
value, with no error, and no HDF5 setting makes it fail. So the fill value is one no
camera delivers as a whole frame: the largest value of an unsigned type (a saturated
frame), the smallest of a signed one, NaN for floats. A run file copied without its
frame files then shows white frames in h5web or silx, not plausible black ones, and
the attribute ``missing_frames_read_as`` (``MISSING_ATTR``) of every linked dataset
says what that value means;
the ``file`` attribute of ``external/<key>`` names the frame file.
``runfile.open_run_file`` refuses such a file outright.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import h5py
import numpy as np

HDF5_MIMETYPES = {"application/x-hdf5"}


def uri_to_path(uri: str) -> Path:
    """Local path of a ``file://host/abs/path`` URI (or of a plain path)."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        raise ValueError(f"not a local file URI: {uri}")
    return Path(unquote(parsed.path))


def relative_to(target: Path, base_dir: Path) -> str:
    """``target`` relative to ``base_dir`` in POSIX form (absolute if impossible)."""
    try:
        return Path(os.path.relpath(target, base_dir)).as_posix()
    except ValueError:  # e.g. another drive on Windows
        return target.as_posix()


def merge_ranges(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted ranges with touching or overlapping ones merged (batching-independent)."""
    out: list[tuple[int, int]] = []
    for start, stop in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], stop))
        else:
            out.append((start, stop))
    return out


@dataclass
class SourceResource:
    """One StreamResource as the run file needs it."""

    uri: str
    mimetype: str
    parameters: dict
    ranges: list[tuple[int, int]] = field(default_factory=list)

    @property
    def dataset(self) -> str:
        return str(self.parameters.get("dataset", ""))

    @property
    def linkable(self) -> bool:
        join = self.parameters.get("join_method", "stack")
        return self.mimetype in HDF5_MIMETYPES and bool(self.dataset) and join == "stack"

    def merged(self) -> list[tuple[int, int]]:
        return merge_ranges(self.ranges)


def write_virtual(group: h5py.Group, name: str, resources: list[SourceResource],
                  unit_shape: tuple[int, ...], dtype: np.dtype, run_dir: Path) -> h5py.Dataset:
    """(Re)create ``group[name]`` as a virtual dataset over ``resources``' ranges.

    ``unit_shape`` is the shape of one datum index (the descriptor's data key shape),
    so the result has shape ``(n_indices, *unit_shape)``.
    """
    total = sum(stop - start for r in resources for start, stop in r.merged())
    layout = h5py.VirtualLayout(shape=(total, *unit_shape), dtype=dtype)
    at = 0
    for res in resources:
        ranges = res.merged()
        if not ranges:
            continue
        source_file = relative_to(uri_to_path(res.uri), run_dir)
        extent = max(stop for _, stop in ranges)
        source = h5py.VirtualSource(source_file, res.dataset, shape=(extent, *unit_shape),
                                    dtype=dtype)
        for start, stop in ranges:
            layout[at:at + stop - start] = source[start:stop]
            at += stop - start
    if name in group:
        del group[name]
    fill = missing_value(dtype)
    dataset = group.create_virtual_dataset(name, layout, fillvalue=fill)
    dataset.attrs[MISSING_ATTR] = (
        f"{fill} here means the frame file this range is read from is missing "
        "(see external/<key>.attrs['file'])")
    return dataset


#: attribute of a linked dataset: what its fill value means
MISSING_ATTR = "missing_frames_read_as"


def missing_value(dtype: np.dtype) -> int | float:
    """What a linked dataset of ``dtype`` reads where its frame file is missing."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return float("nan")
    if dtype.kind == "u":
        return int(np.iinfo(dtype).max)
    if dtype.kind == "i":
        return int(np.iinfo(dtype).min)
    return 0
