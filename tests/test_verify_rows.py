"""``verify`` on a run file that maps more rows of a frame file than the file holds
(a writer that died before flushing them: HDF5 reads the missing rows as fill values,
with no error, and verify said "0 missing or damaged")."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from beamline_ls.runfile.verify import check_source, mapped_rows, virtual_sources

pytestmark = pytest.mark.offline


def _run_file_mapping(tmp_path, rows_mapped: int, rows_held: int):
    frames = tmp_path / "frames.h5"
    with h5py.File(frames, "w") as f:
        f.create_dataset("/entry/data/data", data=np.ones((rows_held, 4, 4), np.uint16),
                         maxshape=(None, 4, 4), chunks=(1, 4, 4))
    layout = h5py.VirtualLayout(shape=(rows_mapped, 4, 4), dtype=np.uint16)
    layout[:] = h5py.VirtualSource(str(frames), "/entry/data/data",
                                   shape=(rows_mapped, 4, 4))
    run = tmp_path / "run.h5"
    with h5py.File(run, "w") as f:
        f.create_virtual_dataset("/streams/primary/camera_image", layout, fillvalue=0)
    return run, frames


def test_a_frame_file_shorter_than_the_run_maps_is_named_short(tmp_path):
    run, frames = _run_file_mapping(tmp_path, rows_mapped=12, rows_held=10)
    (src, pairs), = virtual_sources(run).items()
    result = check_source(src, pairs, rows_mapped=mapped_rows(run))
    assert not result.ok
    assert result.problem == (
        f"frame file {frames.resolve()} is short: /entry/data/data holds 10 rows, the run "
        "maps 12 (the rows it lacks read as fill values in streams/primary/camera_image)")


def test_a_frame_file_holding_every_mapped_row_is_fine(tmp_path):
    run, _ = _run_file_mapping(tmp_path, rows_mapped=10, rows_held=10)
    (src, pairs), = virtual_sources(run).items()
    assert check_source(src, pairs, rows_mapped=mapped_rows(run)).ok
