"""The frame pipeline behind the camera IOC, driven as users drive it (real IOC)."""

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import h5py
import numpy as np
import pytest


def run_file(scope):
    return scope.camera.hdf.full_file_name.get(use_monitor=False)


def test_every_frame_id_appears_once_in_order_after_a_sustained_run(scope, session):
    from plans import planar_scan

    result = session.RE(planar_scan(scope.camera, scope.scanboard, 400, 40.0, 0.002))
    assert result.exit_status == "success"
    with h5py.File(run_file(scope), "r") as f:
        ids = f["/entry/meta/frame_id"][...]
        assert "dropped" not in f["entry"]
    np.testing.assert_array_equal(ids, np.arange(400))


def test_a_slow_disk_loses_frames_and_the_run_says_so(scope, session, caplog):
    from plans import planar_scan

    hdf = scope.camera.hdf
    hdf.buffer_frames.set(8).wait(5)
    hdf.sim_write_delay.set(0.03).wait(5)  # ~33 frames/s disk against ~250 frames/s
    try:
        with caplog.at_level("WARNING", logger="beamline_ls.session"):
            result = session.RE(planar_scan(scope.camera, scope.scanboard, 80, 40.0,
                                            0.002))
    finally:
        hdf.buffer_frames.set(0).wait(5)
        hdf.sim_write_delay.set(0.0).wait(5)
    session.flush()
    stop = session.catalog[result.run_start_uids[0]].metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "dropped by the writer" in stop["reason"]
    dropped = int(hdf.dropped_frames.get(use_monitor=False))
    assert dropped > 0 and f"{dropped} frame(s)" in stop["reason"]
    with h5py.File(run_file(scope), "r") as f:
        kept = f["/entry/meta/frame_id"][...]
        lost = f["/entry/dropped/frame_id"][...]
        lost_t = f["/entry/dropped/timestamp"][...]
    kept = kept[kept >= 0]
    # nothing silent: every frame id is either kept (in order) or listed as lost
    assert sorted(np.concatenate([kept, lost]).tolist()) == list(range(80))
    assert np.all(np.diff(kept) > 0) and len(lost) == dropped and np.all(lost_t > 0)
    assert f"first lost frame id {int(lost[0])}" in stop["reason"]
    # the plan returned normally (RE's result says success): the session says it failed
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("stored as failed" in m and "dropped by the writer" in m for m in said), said


def test_background_is_subtracted_until_the_settings_change(scope, session):
    from plans import acquire_background, planar_scan

    cam = scope.camera.cam
    cam.acquire_time.set(0.004).wait(5)
    session.RE(acquire_background(scope.camera, 20, laser=scope.laser))
    assert scope.laser.enable.get(use_monitor=False) == "On"  # restored
    assert int(cam.background_valid.get(use_monitor=False)) == 1
    assert cam.background_level.get(use_monitor=False) == pytest.approx(100.0, abs=1.0)

    session.RE(planar_scan(scope.camera, scope.scanboard, 3, 40.0, 0.004))
    with h5py.File(run_file(scope), "r") as f:
        assert bool(f["entry"].attrs["background_subtracted"])
        subtracted = f["/entry/data/data"][0]
        assert f["/entry/background/mean"].shape == subtracted.shape
    assert np.median(subtracted) < 10  # the 100 ADU dark offset is gone, no wrap-around
    assert subtracted.max() > 50  # signal kept

    cam.acquire_time.set(0.005).wait(5)  # a new exposure invalidates the background
    deadline = time.monotonic() + 5
    while int(cam.background_valid.get(use_monitor=False)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert int(cam.background_valid.get(use_monitor=False)) == 0
    session.RE(planar_scan(scope.camera, scope.scanboard, 3, 40.0, 0.005))
    with h5py.File(run_file(scope), "r") as f:
        assert not bool(f["entry"].attrs["background_subtracted"])
        assert np.median(f["/entry/data/data"][0]) > 90


def test_preview_reaches_a_python_callback_and_never_blocks_saving(scope):
    got = []
    seen = threading.Event()

    def on_preview(image):
        got.append(image.shape)
        time.sleep(0.5)  # a slow viewer: previews are dropped, acquisition goes on
        seen.set()

    cam = scope.camera.cam
    cid = scope.camera.subscribe_preview(on_preview)
    try:
        cam.acquire_period.set(0.0).wait(5)
        cam.camera_mode.set("Preview").wait(5)
        assert seen.wait(10)
        deadline = time.monotonic() + 30  # the camera goes on while the viewer dawdles
        while int(cam.array_counter.get(use_monitor=False)) <= 100:
            assert time.monotonic() < deadline, "the camera stopped with the viewer"
            time.sleep(0.05)
        frames = int(cam.array_counter.get(use_monitor=False))
    finally:
        cam.camera_mode.set("Abort").wait(5)
        scope.camera.cam.preview.unsubscribe(cid)
    assert got[0] == (128, 128)
    assert len(got) < frames / 10  # previews were dropped, not queued


KILL_TARGET = textwrap.dedent("""
    import sys, numpy as np
    from beamline_ls.frame import Frame
    from beamline_ls.pipeline.hdf5_writer import FrameFileWriter
    w = FrameFileWriter(sys.argv[1], (32, 32), planes_per_volume=4)
    i = 0
    while True:
        w.write(Frame(np.full((32, 32), i, np.uint16), i, float(i), 0.001, float(i)))
        i += 1
        if i % 4 == 0:
            print("flushed", i // 4, flush=True)
""")


def test_kill_9_of_the_writer_leaves_a_file_readable_up_to_the_last_flushed_volume(tmp_path):
    path = tmp_path / "killed.h5"
    proc = subprocess.Popen([sys.executable, "-c", KILL_TARGET, str(path)],
                            stdout=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        flushed = 0
        for line in proc.stdout:
            flushed = int(line.split()[1])
            if flushed >= 5:
                break
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert flushed >= 5
    # a SWMR file whose writer died keeps its "open for write" flag: SWMR readers open
    # it as it is (plain readers need `h5clear -s` first)
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        data = f["/entry/data/data"]
        assert data.shape[0] >= flushed
        for v in range(flushed):
            assert data[v, 3, 0, 0] == 4 * v + 3
        np.testing.assert_array_equal(f["/entry/meta/frame_id"][:flushed].ravel(),
                                      np.arange(4 * flushed))
