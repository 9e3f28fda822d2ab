"""Damaged frame files: a corrupt chunk or a truncated file gives an error, never
silent garbage, for every reader (h5py, the catalog through tiled)."""

from __future__ import annotations

import os
import re
import shutil
import threading

import h5py
import numpy as np
import pytest

from beamline_ls.frame import Frame
from beamline_ls.pipeline.hdf5_writer import FrameFileWriter


def write_frames(path, n=10, shape=(64, 64)):
    w = FrameFileWriter(path, shape)
    for k in range(n):
        w.write(Frame(np.full(shape, k + 1, np.uint16), k, 0.1 * k, 0.001))
    w.close()


def corrupt_frame(path, k: int) -> None:
    with h5py.File(path, "r") as f:
        info = f["/entry/data/data"].id.get_chunk_info_by_coord((k, 0, 0))
    with open(path, "r+b") as fh:  # two bytes in the middle of frame k
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xa5\x5a")


@pytest.mark.parametrize("swmr", [False, True])
def test_a_corrupt_frame_is_an_error_and_the_others_still_read(tmp_path, swmr):
    path = tmp_path / "f.h5"
    write_frames(path)
    corrupt_frame(path, 5)
    with h5py.File(path, "r", swmr=swmr) as f:
        data = f["/entry/data/data"]
        assert data[4].mean() == 5 and data[6].mean() == 7
        with pytest.raises(OSError, match="filter returned failure"):
            data[5]


def test_frames_past_the_end_of_a_truncated_file_are_an_error_under_swmr(tmp_path):
    """Read as SWMR readers (and tiled) do, HDF5 skips its end-of-file check and
    would return zeros for the missing frames; their checksums do not match zeros."""
    path = tmp_path / "f.h5"
    write_frames(path, n=40)
    cut = tmp_path / "cut.h5"
    shutil.copy(path, cut)
    with open(cut, "r+b") as fh:
        fh.truncate(cut.stat().st_size * 2 // 3)
    with pytest.raises(OSError, match="truncated file"):
        h5py.File(cut, "r")
    with h5py.File(cut, "r", swmr=True) as f:
        data = f["/entry/data/data"]
        assert data[0].mean() == 1
        with pytest.raises(OSError, match="filter returned failure"):
            data[39]


def read_in_thread(read, bound_s: float = 60.0):
    """Run ``read()`` on a thread; return what it raised (None if it returned), failing
    the test if it is still reading after ``bound_s`` (a hang, not a slow machine)."""
    outcome: list[BaseException | None] = []

    def target():
        try:
            read()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)
        else:
            outcome.append(None)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(bound_s)
    assert not t.is_alive(), f"reading the damaged run still hangs after {bound_s} s"
    return outcome[0]


def test_the_catalog_names_a_corrupt_frame_file(scope, session):
    from plans import planar_scan

    result = session.RE(planar_scan(scope.camera, scope.scanboard, 6, 40.0, 0.002))
    session.flush()
    path = scope.camera.hdf.full_file_name.get(use_monitor=False)
    corrupt_frame(path, 3)
    image = session.catalog[result.run_start_uids[0]]["primary"]["camera_image"]
    with pytest.raises(OSError, match=f"frame file {re.escape(path)} is damaged"):
        image.read()


def test_a_truncated_frame_file_is_named_through_a_new_catalog(scope, session, settings):
    """A later reader (another process opening the catalog) of a run whose file was
    cut short gets an error naming the file, promptly, never zeros and never a hang."""
    from beamline_ls.catalog import open_catalog
    from plans import planar_scan

    result = session.RE(planar_scan(scope.camera, scope.scanboard, 30, 40.0, 0.002))
    session.flush()
    path = scope.camera.hdf.full_file_name.get(use_monitor=False)
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) * 2 // 3)
    catalog = open_catalog(settings=settings)
    image = catalog[result.run_start_uids[0]]["primary"]["camera_image"]
    exc = read_in_thread(image.read)
    assert isinstance(exc, OSError), f"expected an error naming the file, got {exc!r}"
    assert f"frame file {path} is damaged" in str(exc)


def test_verify_names_the_damaged_and_the_missing_frame_files_of_a_run_file(
        scope, session, settings, tmp_path):
    """Plain h5py reads a run file's frames from a missing frame file as fill values
    without a word; ``beamline-ls verify`` names every missing or damaged file."""
    import subprocess
    import sys

    from beamline_ls.runfile import default_run_path
    from plans import planar_scan

    hdf = scope.camera.hdf
    hdf.max_file_frames.set(12).wait(5)  # three frame files behind one run file
    try:
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 30, 40.0, 0.002))
    finally:
        hdf.max_file_frames.set(0).wait(5)
    session.flush()
    start = dict(session.catalog[result.run_start_uids[0]].metadata["start"])
    run_file = default_run_path(settings.runs_dir, start)

    def verify():
        return subprocess.run([sys.executable, "-m", "beamline_ls.cli", "verify",
                               str(run_file)], capture_output=True, text=True, timeout=120)

    intact = verify()
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert ("3 frame file(s) and the run file's own datasets checked, 0 missing or "
            "damaged") in intact.stdout
    assert "run status: success" in intact.stdout  # what the run file says of the run

    # a self-contained copy (export --embed): its own chunks are checked too
    embedded = tmp_path / "embedded.h5"
    export = subprocess.run(
        [sys.executable, "-m", "beamline_ls.cli", "export", str(start["scan_id"]),
         "--catalog", str(settings.data_dir), "--to", str(embedded), "--embed"],
        capture_output=True, text=True, timeout=120)
    assert export.returncode == 0, export.stdout + export.stderr
    with h5py.File(embedded, "r") as f:
        frames = f["/streams/primary/data/camera_image"]
        info = frames.id.get_chunk_info_by_coord((7,) + (0,) * (frames.ndim - 1))
    with open(embedded, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(b"\xa5\x5a")
    damaged_copy = subprocess.run([sys.executable, "-m", "beamline_ls.cli", "verify",
                                   str(embedded)], capture_output=True, text=True,
                                  timeout=120)
    assert damaged_copy.returncode == 1, damaged_copy.stdout + damaged_copy.stderr
    assert f"run file {embedded} (a dataset stored in it) is damaged" in damaged_copy.stdout

    # a frame file is not a run file: refused, never "0 missing or damaged"
    frame_file = subprocess.run([sys.executable, "-m", "beamline_ls.cli", "verify",
                                 hdf.full_file_name.get(use_monitor=False)],
                                capture_output=True, text=True, timeout=120)
    assert frame_file.returncode == 2
    assert "is not a beamline-ls run file" in frame_file.stderr

    first = hdf.full_file_name.get(use_monitor=False)
    from beamline_ls.pipeline.rolling import part_path

    damaged, missing = part_path(first, 1), part_path(first, 2)
    corrupt_frame(damaged, 4)
    os.rename(missing, tmp_path / "moved-away.h5")
    checked = verify()
    assert checked.returncode == 1
    assert f"frame file {damaged} is damaged" in checked.stdout
    assert f"frame file {missing} is missing" in checked.stdout
    assert ("3 frame file(s) and the run file's own datasets checked, 2 missing or "
            "damaged") in checked.stdout
