"""Captures that roll over into several files: every frame once, in order, across files;
each file complete on its own and handed on (to the copy) as soon as it is full."""

import sqlite3
import time

import h5py
import numpy as np
import pytest

from beamline_ls.frame import Frame
from beamline_ls.pipeline.copy_ledger import CopyLedger
from beamline_ls.pipeline.rolling import RollingFileWriter, frames_per_file, part_path


def _frame(k: int) -> Frame:
    return Frame(image=np.full((8, 6), k, np.uint16), frame_id=k, timestamp=0.01 * k,
                 exposure=0.005, z_um=float(k % 4))


def test_a_volumetric_capture_rolls_over_at_whole_volumes(tmp_path):
    closed = []
    w = RollingFileWriter(tmp_path / "scan.h5", (8, 6), max_frames_per_file=8,
                          planes_per_volume=4, attrs={"exposure_s": 0.005},
                          on_closed=closed.append)
    for k in range(20):  # 5 volumes of 4 planes, 2 volumes per file
        w.write(_frame(k))
    w.close({"frames_dropped": 0})
    names = [p.name for p in closed]
    assert names == ["scan.h5", "scan_001.h5", "scan_002.h5"]
    assert [p.frames for p in w.parts] == [8, 8, 4] and all(p.closed for p in w.parts)
    assert w.frames_written == 20 and w.complete_units == 5
    ids, volumes, images = [], [], []
    for i, path in enumerate(closed):
        with h5py.File(path, "r") as f:
            assert f["entry"].attrs["part"] == i
            assert f["entry"].attrs["first_frame"] == 8 * i
            assert f["entry"].attrs["exposure_s"] == 0.005
            ids.append(f["/entry/meta/frame_id"][...].ravel())
            volumes.append(f["/entry/meta/volume"][...].ravel())
            images.append(f["/entry/data/data"][...].reshape(-1, 8, 6))
    np.testing.assert_array_equal(np.concatenate(ids), np.arange(20))
    # volume numbers continue across files: volume 2 is the first of the second file
    np.testing.assert_array_equal(np.concatenate(volumes), np.repeat(np.arange(5), 4))
    np.testing.assert_array_equal(np.concatenate(images)[:, 0, 0], np.arange(20))
    with h5py.File(closed[-1], "r") as f:
        assert f["entry"].attrs["files_in_capture"] == 3


def test_lost_frames_stay_holes_across_files_and_at_the_end(tmp_path):
    w = RollingFileWriter(tmp_path / "h.h5", (8, 6), max_frames_per_file=4)
    for k in (0, 1, 2, 5, 6, 7, 8):  # 3, 4 and 9..11 were lost
        w.write(_frame(k), position=k)
    w.pad_to(12)
    w.close()
    ids = [h5py.File(part_path(tmp_path / "h.h5", i), "r")["/entry/meta/frame_id"][...]
           .tolist() for i in range(3)]
    assert ids == [[0, 1, 2, -1], [-1, 5, 6, 7], [8, -1, -1, -1]]
    assert w.frames_written == 7 and w.positions == 12


def test_the_background_goes_into_every_file(tmp_path):
    w = RollingFileWriter(tmp_path / "p.h5", (8, 6), max_frames_per_file=3)
    w.add_dataset("/entry/background/mean", np.ones((8, 6)), {"n_frames": 10})
    for k in range(7):
        w.write(_frame(k))
    w.close()
    for i in range(3):
        with h5py.File(part_path(tmp_path / "p.h5", i), "r") as f:
            assert f["/entry/background/mean"].attrs["n_frames"] == 10


def test_no_file_is_overwritten_and_sizes_must_be_whole_volumes(tmp_path):
    (tmp_path / "x_001.h5").write_bytes(b"precious")
    w = RollingFileWriter(tmp_path / "x.h5", (8, 6), max_frames_per_file=2)
    w.write(_frame(0))
    w.write(_frame(1))
    with pytest.raises(FileExistsError):
        w.write(_frame(2))
    assert (tmp_path / "x_001.h5").read_bytes() == b"precious"
    with pytest.raises(ValueError, match="multiple"):
        RollingFileWriter(tmp_path / "y.h5", (8, 6), max_frames_per_file=6,
                          planes_per_volume=4)


def test_files_are_sized_from_ram_in_whole_volumes():
    import os

    ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    frame = 2048 * 2048 * 2
    n = frames_per_file((2048, 2048), planes_per_volume=20)
    assert n % 20 == 0 and n * frame <= ram / 4 < (n + 20) * frame
    assert frames_per_file((2048, 2048), planes_per_volume=20, ram_fraction=1e-9) == 20
    assert frames_per_file((4, 4), planes_per_volume=0, ram_fraction=1e-12) == 1


def test_a_run_over_several_files_reads_back_whole_from_catalog_and_run_file(
        scope, session, settings, share):
    from plans import planar_scan

    hdf = scope.camera.hdf
    hdf.max_file_frames.set(12).wait(5)
    hdf.mirror_path.set(str(share)).wait(5)
    try:
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 30, 40.0, 0.002))
    finally:
        hdf.max_file_frames.set(0).wait(5)
        hdf.mirror_path.set("").wait(5)
    assert result.exit_status == "success"
    assert int(hdf.file_count.get(use_monitor=False)) == 3
    first = hdf.full_file_name.get(use_monitor=False)
    files = [part_path(first, i) for i in range(3)]
    expected = np.concatenate([h5py.File(f, "r")["/entry/data/data"][...] for f in files])
    assert expected.shape[0] == 30
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    name = scope.camera.name
    np.testing.assert_array_equal(run["primary"][f"{name}_frame_id"].read(), np.arange(30))
    np.testing.assert_array_equal(np.asarray(run["primary"][f"{name}_image"].read()),
                                  expected)
    from beamline_ls.runfile.writer import default_run_path

    run_file = default_run_path(settings.runs_dir, dict(run.metadata["start"]))
    with h5py.File(run_file, "r") as f:
        np.testing.assert_array_equal(f[f"streams/primary/data/{name}_image"][...], expected)
    # every file was copied, and the catalog reads each from its verified copy
    ledger = CopyLedger.in_directory(settings.frames_dir)
    deadline = time.monotonic() + 30
    while not all(ledger.latest().get(str(f)) for f in files):
        assert time.monotonic() < deadline, "copies not verified in time"
        time.sleep(0.1)
    assert all(ledger.latest()[str(f)].verified for f in files)
    session.copy_watcher.apply_now()  # (the watcher thread may have done it already)
    with sqlite3.connect(settings.catalog_dir / "catalog.db") as conn:
        uris = {row[0] for row in conn.execute("SELECT data_uri FROM assets")}
    for f in files:
        assert f"file://localhost{ledger.latest()[str(f)].destination}" in uris
        assert f"file://localhost{f}" not in uris
    np.testing.assert_array_equal(np.asarray(session.catalog[result.run_start_uids[0]][
        "primary"][f"{name}_image"].read()), expected)


def test_a_volumetric_run_rolls_over_between_volumes(scope, session):
    from plans import volumetric_scan

    hdf = scope.camera.hdf
    hdf.max_file_frames.set(14).wait(5)  # rounded down to 2 volumes of 6 planes
    try:
        result = session.RE(volumetric_scan(scope.camera, scope.scanboard, 3, 6, 20.0, 60.0,
                                            4.0))
    finally:
        hdf.max_file_frames.set(0).wait(5)
    assert result.exit_status == "success"
    assert int(hdf.file_frames.get(use_monitor=False)) == 12
    assert int(hdf.file_count.get(use_monitor=False)) == 2
    session.flush()
    prim = session.catalog[result.run_start_uids[0]]["primary"]
    name = scope.camera.name
    assert prim[f"{name}_image"].shape[:2] == (3, 6)
    np.testing.assert_array_equal(prim[f"{name}_volume"].read(), np.repeat(np.arange(3), 6)
                                  .reshape(3, 6))
    np.testing.assert_array_equal(prim[f"{name}_frame_id"].read().ravel(), np.arange(18))
