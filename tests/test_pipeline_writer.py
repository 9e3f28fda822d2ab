"""HDF5 frame files: layout, metadata, SWMR follow, no overwrite, counted drops."""

import threading
import time

import h5py
import numpy as np
import pytest
from conftest import wait_for

from beamline_ls.frame import Frame
from beamline_ls.pipeline.hdf5_writer import FrameFileWriter
from beamline_ls.pipeline.recorder import Recorder

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


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


@pytest.fixture
def stalled_disk(monkeypatch) -> threading.Event:
    """Every file write waits until the returned event is set (a stalled disk)."""
    gate = threading.Event()
    original = FrameFileWriter.write

    def slow_write(self, frame, position=None):
        gate.wait(5)
        original(self, frame, position)

    monkeypatch.setattr(FrameFileWriter, "write", slow_write)
    return gate


def test_recorder_counts_drops_when_the_writer_cannot_keep_up(tmp_path, stalled_disk):
    rec = Recorder(buffer_frames=4)
    rec.start(tmp_path / "d.h5", (8, 10), n_frames=20)
    accepted = [rec.submit(f) for f in frames(20)]
    stalled_disk.set()
    status = rec.stop()
    assert accepted.count(False) == status.frames_dropped > 0
    assert status.frames_written + status.frames_dropped == 20
    with h5py.File(tmp_path / "d.h5", "r") as f:
        ids = f["/entry/meta/frame_id"][...]
        assert f["entry"].attrs["frames_dropped"] == status.frames_dropped
    # every frame keeps its place: kept ids at their position, lost ones are holes (-1),
    # and the lost ids are exactly the reported ones
    assert len(ids) == 20
    assert all(i == k or i == -1 for k, i in enumerate(ids.tolist()))
    assert [k for k, i in enumerate(ids.tolist()) if i == -1] == status.dropped_ids


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


def test_frames_are_stored_bit_exact_by_the_direct_chunk_path_and_the_fallback(tmp_path):
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 65535, (8, 10), dtype=np.uint16) for _ in range(6)]
    w = FrameFileWriter(tmp_path / "b.h5", (8, 10), planes_per_volume=3)
    for i, im in enumerate(images):
        if i == 4:
            im = np.asfortranarray(im)  # not C-contiguous: written through h5py's path
        if i == 5:
            im = im.astype(np.int32)  # another dtype: converted by h5py
        w.write(Frame(im, i, float(i), 0.001, 0.0))
    w.close()
    with h5py.File(tmp_path / "b.h5", "r") as f:
        data = f["/entry/data/data"][...]
    np.testing.assert_array_equal(data.reshape(6, 8, 10), np.stack(images))


def test_a_swmr_reader_never_sees_frames_that_were_not_written(tmp_path):
    path = tmp_path / "p.h5"
    w = FrameFileWriter(path, (8, 10), flush_every=50)
    gen = frames(70)
    for _ in range(60):  # one flush at 50, then 10 unflushed frames
        w.write(next(gen))
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        ds = f["/entry/data/data"]
        assert ds.shape[0] <= 60
        np.testing.assert_array_equal(ds[:, 0, 0], np.arange(ds.shape[0]))
        for _ in range(10):
            w.write(next(gen))
        ds.refresh()
        assert ds.shape[0] <= 70
        np.testing.assert_array_equal(ds[:, 0, 0], np.arange(ds.shape[0]))
    w.close()
    with h5py.File(path, "r") as f:
        assert f["/entry/data/data"].shape == (70, 8, 10)
        np.testing.assert_array_equal(f["/entry/meta/frame_id"][...], np.arange(70))


def _wait_done(rec, timeout=5.0):
    deadline = time.monotonic() + timeout
    while rec.capturing and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not rec.capturing


def test_recorder_keeps_its_buffer_across_captures_and_counts_each_capture_afresh(
        tmp_path, stalled_disk):
    rec = Recorder(buffer_frames=4)
    ring = rec.prepare((8, 10), wait=True)
    assert ring.prefaulted.is_set() and rec._ring is ring
    # capture 1: a stalled writer makes frames drop
    rec.start(tmp_path / "1.h5", (8, 10), n_frames=10)
    accepted = [rec.submit(f) for f in frames(10)]
    stalled_disk.set()
    first = rec.stop()
    assert first.frames_dropped == accepted.count(False) > 0
    # a late frame arriving after the capture ended is stale at the next arm
    ring.push(Frame(np.full((8, 10), 999, np.uint16), 999, 0.0, 0.0, 0.0))
    # capture 2: same shape and size, so the same (already faulted-in) buffer
    rec.start(tmp_path / "2.h5", (8, 10), n_frames=3)
    assert rec._ring is ring and ring.stats.flushed >= 1
    for f in frames(3):
        assert rec.submit(f)
    _wait_done(rec)
    second = rec.status
    assert second.frames_dropped == 0 and second.dropped_ids == []
    assert second.frames_written == 3
    with h5py.File(tmp_path / "2.h5", "r") as f:
        np.testing.assert_array_equal(f["/entry/meta/frame_id"][...], [0, 1, 2])
        assert f["entry"].attrs["frames_dropped"] == 0
        assert "dropped" not in f["entry"]
    # another shape: a new buffer; release_buffer frees it
    rec.start(tmp_path / "3.h5", (4, 4), n_frames=1)
    assert rec._ring is not ring and rec._ring.shape == (4, 4)
    rec.submit(Frame(np.ones((4, 4), np.uint16), 0, 0.0, 0.0, 0.0))
    _wait_done(rec)
    rec.release_buffer()
    assert rec._ring is None


def test_recorder_subtracts_the_background_and_writes_extra_fields(tmp_path):
    from beamline_ls.pipeline.background import Background

    bg = Background(np.full((8, 10), 1.0, np.float32), 5, ())
    rec = Recorder(buffer_frames=8)
    rec.start(tmp_path / "bg.h5", (8, 10), n_frames=4, extra_fields=("phase",),
              background=bg)
    for f in frames(4):
        f.extra["phase"] = 0.5 * f.frame_id
        rec.submit(f)
    _wait_done(rec)
    with h5py.File(tmp_path / "bg.h5", "r") as f:
        # frame i is full of i; minus 1, saturating at 0
        np.testing.assert_array_equal(f["/entry/data/data"][:, 0, 0], [0, 0, 1, 2])
        np.testing.assert_array_equal(f["/entry/meta/phase"][...], [0.0, 0.5, 1.0, 1.5])
        assert f["entry"].attrs["background_subtracted"]
        assert f["/entry/background/mean"].attrs["n_frames"] == 5


def test_a_lost_frame_leaves_a_hole_and_later_planes_stay_in_place(tmp_path, stalled_disk):
    rec = Recorder(buffer_frames=3)
    rec.start(tmp_path / "v.h5", (8, 10), n_frames=12, planes_per_volume=4)
    shots = list(frames(12))
    for f in shots:
        f.z_um = 10.0 * (f.frame_id % 4)  # plane p sits at z = 10 p
    accepted = [rec.submit(f) for f in shots]
    stalled_disk.set()
    status = rec.stop()
    assert 0 < status.frames_dropped == accepted.count(False)
    with h5py.File(tmp_path / "v.h5", "r") as f:
        ids = f["/entry/meta/frame_id"][...]
        z = f["/entry/meta/z_um"][...]
        data = f["/entry/data/data"][...]
    assert ids.shape == (3, 4) and data.shape == (3, 4, 8, 10)
    for v in range(3):
        for p in range(4):
            if ids[v, p] == -1:  # a lost frame: a hole, not a shifted neighbour
                assert np.isnan(z[v, p]) and not data[v, p].any()
            else:
                assert ids[v, p] == 4 * v + p and z[v, p] == 10.0 * p


def test_a_frame_file_opens_in_the_hdf5_1_10_tools_data_users_have(tmp_path):
    """Debian 12's h5dump (HDF5 1.10, as many analysis hosts, MATLAB and Fiji builds)
    reads a camera file whole: its boolean attributes, its extendable checksummed
    frame dataset and the per-frame metadata. Written with the library's newest format
    it failed on /entry ("error getting attribute information")."""
    import os
    import shutil
    import subprocess

    h5dump = shutil.which("h5dump")
    if h5dump is None:
        if os.environ.get("CI"):
            pytest.fail("h5dump (Debian's hdf5-tools) is missing: .ci/run installs it")
        pytest.skip("h5dump (Debian's hdf5-tools) is not installed here")
    rec = Recorder(buffer_frames=16)
    rec.start(tmp_path / "v.h5", (8, 10), n_frames=6, planes_per_volume=3,
              attrs={"background_subtracted": False, "roi": [0, 0, 10, 8]})
    for k in range(6):
        rec.submit(Frame(np.full((8, 10), k, np.uint16), k, 100.0 + k, 0.005, 1.5 * k))
    wait = time.monotonic() + 30
    while rec.status.capturing and time.monotonic() < wait:
        time.sleep(0.01)
    assert rec.stop().frames_written == 6
    path = str(tmp_path / "v.h5")

    def dump(*args: str) -> str:
        out = subprocess.run([h5dump, *args, path], capture_output=True, text=True,
                             timeout=60)
        assert out.returncode == 0, out.stderr
        return out.stdout

    assert 'ATTRIBUTE "background_subtracted"' in dump("-A")
    ids = dump("-d", "/entry/meta/frame_id")
    assert "(0,0): 0, 1, 2," in ids and "(1,0): 3, 4, 5" in ids
    assert "DATASPACE  SIMPLE { ( 2, 3, 8, 10 )" in dump("-H", "-d", "/entry/data/data")


def test_a_short_capture_faults_in_only_its_own_slots_of_a_fresh_buffer(tmp_path):
    """Faulting in a fresh buffer stalls the camera IOC's other threads (the gating
    triggers came 26-39 ms late); a capture of 3 frames has only 3 slots put in
    place, and an explicit allocation (PreAllocBuffers) all of them."""
    from beamline_ls.pipeline.ring import populate_pages

    if not populate_pages(np.empty(1 << 16, np.uint8)):
        pytest.skip("this kernel cannot populate pages (MADV_POPULATE_WRITE)")
    rec = Recorder(buffer_frames=64)
    rec.start(tmp_path / "short.h5", (256, 256), n_frames=3)
    ring = rec._ring
    assert all(rec.submit(f) for f in frames(3, (256, 256)))
    _wait_done(rec)
    wait_for(lambda: ring.slots_in_place >= 3, 10, "3 slots in place")
    assert ring.slots_in_place == 3  # one populate step would have taken 16
    with h5py.File(tmp_path / "short.h5") as f:
        assert [int(f["/entry/data/data"][i, 0, 0]) for i in range(3)] == [0, 1, 2]
    rec.prepare((256, 256))
    wait_for(lambda: ring.slots_in_place >= 64, 10, "all 64 slots in place")
    assert ring.slots_in_place == 64
