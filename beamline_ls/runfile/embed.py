"""Run files whose frames are all there: a checked opener and a self-contained copy.

HDF5 reads a virtual dataset whose source file is missing as fill values, without an
error, so a run file mailed alone shows saturated frames (the fill value, see
``links.missing_value``) in h5py, h5web or MATLAB.
:func:`open_run_file` refuses such a file naming the missing frame files;
:func:`embed_frames` (``beamline-ls export RUN --to F.h5 --embed``) turns every virtual
dataset into a real one, so the file carries its frames and needs nothing beside it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

from beamline_ls.damage import DamagedFrameFile, describe_failure
from beamline_ls.runfile.links import MISSING_ATTR
from beamline_ls.runfile.verify import virtual_sources

log = logging.getLogger(__name__)

#: Bytes copied per step while embedding (bounds memory whatever the run's size).
SLAB_BYTES = 64 * 2**20


def missing_frame_files(run_file: str | Path) -> list[Path]:
    """The frame files ``run_file``'s virtual datasets read from that are not there."""
    return [src for src in virtual_sources(run_file) if not src.exists()]


def _missing_error(run_file: Path, missing: list[Path],
                   embedding: bool = False) -> FileNotFoundError:
    listed = ", ".join(str(p) for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
    remedy = ("Restore them from a copy and export again; without --embed the file is "
              "written and names what is missing" if embedding else
              "Copy the data folder as a whole (runs/ with frames/), or write a "
              "self-contained file with `beamline-ls export RUN --to FILE.h5 --embed`")
    return FileNotFoundError(
        f"{run_file}: {len(missing)} frame file(s) it reads its frames from are missing "
        f"({listed}); HDF5 would return their frames as fill values (65535). {remedy}")


def open_run_file(run_file: str | Path) -> h5py.File:
    """Open a run file for reading; raise ``FileNotFoundError`` naming every missing
    frame file instead of handing out frames that would read as fill values (65535)."""
    run_file = Path(run_file)
    missing = missing_frame_files(run_file)
    if missing:
        raise _missing_error(run_file, missing)
    return h5py.File(run_file, "r")


def embed_frames(run_file: str | Path,
                 progress: Callable[[str, int, int], None] | None = None) -> int:
    """Replace every virtual dataset of ``run_file`` by a real copy of its data (chunks of
    at most 1 MiB or one frame, fletcher32 checksums, like the camera's files); returns the bytes
    copied. Refuses, changing nothing, when a frame file is missing."""
    run_file = Path(run_file)
    missing = missing_frame_files(run_file)
    if missing:
        raise _missing_error(run_file, missing, embedding=True)
    copied = 0
    with h5py.File(run_file, "r+") as f:
        names: list[str] = []
        f.visititems(lambda name, obj: names.append(name)
                     if isinstance(obj, h5py.Dataset) and obj.is_virtual else None)
        for name in names:
            copied += _embed_one(f, name, progress)
    return copied


def _embed_one(f: h5py.File, name: str,
               progress: Callable[[str, int, int], None] | None) -> int:
    virtual = f[name]
    shape, dtype = virtual.shape, virtual.dtype
    frame_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize if shape else 0
    step = max(1, SLAB_BYTES // max(1, frame_bytes))
    tmp = f"{name}.embedding"
    if tmp in f:
        del f[tmp]
    per_chunk = max(1, min(shape[0] if shape else 1, 2**20 // max(1, frame_bytes)))
    chunks = (per_chunk, *shape[1:]) if shape and shape[0] > 0 else None
    real = f.create_dataset(tmp, shape=shape, dtype=dtype, chunks=chunks,
                            fletcher32=chunks is not None,
                            fillvalue=virtual.fillvalue)
    for key, value in virtual.attrs.items():
        if key != MISSING_ATTR:  # the frames are inside now: nothing can be missing
            real.attrs[key] = value
    n = shape[0] if shape else 0
    for at in range(0, n, step):
        try:
            real[at:at + step] = virtual[at:at + step]
        except OSError as exc:  # HDF5 names neither the frame file nor the remedy
            here = Path(f.filename).parent  # sources are relative to the run file
            sources = sorted({str((here / vs.file_name).resolve())
                              for vs in virtual.virtual_sources()})
            raise DamagedFrameFile(describe_failure(sources, exc)) from exc
        if progress is not None:
            progress(name, min(n, at + step), n)
    if not shape:
        real[()] = virtual[()]
    del f[name]
    f.move(tmp, name)
    return n * frame_bytes
