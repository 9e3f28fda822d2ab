"""HDF5 frame files: layout, metadata, SWMR follow, no overwrite, counted drops."""

import threading
import time

import h5py
import numpy as np
import pytest

from beamline_ls.frame import Frame
from beamline_ls.pipeline.hdf5_writer import FrameFileWriter
from beamline_ls.pipeline.recorder import Recorder


def frames(n, shape=(8, 10)):
    for i in range(n):
        yield Frame(np.full(shape, i, np.uint16), i, 100.0 + i * 0.01, 0.005, 10.0 + i)


def test_volumes_are_stored_as_volumes_planes_y_x_with_per_frame_metadata(tmp_path):
    w = FrameFileWriter(tmp_path / "v.h5", (8, 10), planes_per_volume=4,
                        attrs={"exposure_s": 0.005, "roi": [0, 0, 10, 8], "nested": {"a": 1}})
    for f in frames(12):
        w.write(f)
    w.close()
    with h5py.File(tmp_path / "v.h5", "r") as f:
        data = f["/entry/data/data"]
        assert data.shape == (3, 4, 8, 10)
        assert data.chunks == (1, 1, 8, 10)
        assert data[2, 1, 0, 0] == 9
        np.testing.assert_array_equal(f["/entry/meta/frame_id"][...], np.arange(12).reshape(3, 4))
        np.testing.assert_array_equal(f["/entry/meta/plane"][1], [0, 1, 2, 3])
        np.testing.assert_array_equal(f["/entry/meta/volume"][:, 0], [0, 1, 2])
        assert f["/entry/meta/z_um"].attrs["units"] == "um"
        assert f["entry"].attrs["exposure_s"] == 0.005
        assert f["entry"].attrs["nested"] == '{"a": 1}'


def test_an_existing_file_is_never_overwritten(tmp_path):
    path = tmp_path / "x.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        FrameFileWriter(path, (4, 4))
    assert path.read_bytes() == b"precious"


def test_a_reader_follows_the_live_file_volume_by_volume(tmp_path):
    path = tmp_path / "live.h5"
    w = FrameFileWriter(path, (8, 10), planes_per_volume=5)
    gen = frames(10)
    for _ in range(5):
        w.write(next(gen))
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        ds = f["/entry/data/data"]
        assert ds.shape[0] == 1 and ds[0, 4, 0, 0] == 4
        for _ in range(5):
            w.write(next(gen))
        ds.refresh()
        assert ds.shape[0] == 2 and ds[1, 4, 0, 0] == 9
    w.close()


def test_recorder_counts_drops_when_the_writer_cannot_keep_up(tmp_path, monkeypatch):
    gate = threading.Event()
    original = FrameFileWriter.write

    def slow_write(self, frame):
        gate.wait(5)
        original(self, frame)

    monkeypatch.setattr(FrameFileWriter, "write", slow_write)
    rec = Recorder(buffer_frames=4)
    rec.start(tmp_path / "d.h5", (8, 10), n_frames=20)
    accepted = [rec.submit(f) for f in frames(20)]
    gate.set()
    status = rec.stop()
    assert accepted.count(False) == status.frames_dropped > 0
    assert status.frames_written + status.frames_dropped == 20
    with h5py.File(tmp_path / "d.h5", "r") as f:
        ids = f["/entry/meta/frame_id"][...]
        assert f["entry"].attrs["frames_dropped"] == status.frames_dropped
    # what was kept is in order, and the lost ids are exactly the reported ones
    assert list(ids) == sorted(ids)
    assert sorted(set(range(20)) - set(ids.tolist())) == status.dropped_ids


def test_recorder_refuses_a_partial_last_volume(tmp_path):
    with pytest.raises(ValueError, match="whole number"):
        Recorder().start(tmp_path / "p.h5", (8, 10), n_frames=10, planes_per_volume=3)
    assert not (tmp_path / "p.h5").exists()


def test_recorder_closes_the_file_when_all_frames_are_written(tmp_path):
    rec = Recorder()
    rec.start(tmp_path / "c.h5", (8, 10), n_frames=6, planes_per_volume=3)
    for f in frames(6):
        rec.submit(f)
    deadline = time.monotonic() + 5
    while rec.capturing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not rec.capturing
    assert rec.status.complete_units == 2
    with h5py.File(tmp_path / "c.h5", "r") as f:
        assert f["/entry/data/data"].shape == (2, 3, 8, 10)
