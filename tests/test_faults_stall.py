"""A stalled disk must not freeze the IOC: Abort returns at once, every other PV
(a motor's .STOP above all) keeps answering, and the capture ends after the frame the
disk is stuck on, counting the rest as lost. Slow disk: the IOC's simulated write delay
(HDF1:SimWriteDelay), 1 s per frame."""

from __future__ import annotations

import time
import uuid

import epics
import h5py
import pytest


def wait_until(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def slow_disk(scope):
    hdf = scope.camera.hdf
    hdf.sim_write_delay.set(1.0).wait(5)
    yield hdf
    hdf.sim_write_delay.set(0.0).wait(5)


def test_abort_during_a_stalled_write_leaves_the_ioc_responsive(scope, slow_disk):
    cam, hdf = scope.camera.cam, slow_disk
    n = 30  # 30 s of writing at 1 s per frame
    cam.trigger_mode.set("Internal").wait(5)
    cam.image_mode.set("Multiple").wait(5)
    cam.num_images.set(n).wait(5)
    cam.acquire_period.set(0.0).wait(5)
    hdf.num_capture.set(n).wait(5)
    hdf.frames_per_volume.set(0).wait(5)
    hdf.file_path.set(".").wait(5)
    hdf.file_name.set(f"stall_{uuid.uuid4().hex[:8]}").wait(5)
    capturing = hdf.capture.set(1)  # a busy record: completes when the capture ends
    wait_until(lambda: int(hdf.capture_rbv.get(use_monitor=False)) == 1, 10)
    cam.acquire.set("Acquire").wait(30)  # the camera is done; the disk is not
    wait_until(lambda: int(hdf.num_captured.get(use_monitor=False)) >= 1, 10)

    t0 = time.monotonic()
    cam.camera_mode.set("Abort").wait(10)
    abort_s = time.monotonic() - t0
    t0 = time.monotonic()
    assert epics.caput(scope.piezo.motor_stop.pvname, 1, wait=True, timeout=10) == 1
    scope.piezo.user_readback.get(use_monitor=False)
    stop_s = time.monotonic() - t0
    # blocked, each waited for the drain: ~30 s; answered at once, well under a second
    assert abort_s < 2.0 and stop_s < 2.0, (abort_s, stop_s)

    wait_until(lambda: int(hdf.capture.get(use_monitor=False)) == 0, 10)
    capturing.wait(10)  # the aborted capture's put completed
    written = int(hdf.num_captured.get(use_monitor=False))
    assert 1 <= written < n
    assert int(hdf.lost_frames.get(use_monitor=False)) == n - written
    message = hdf.write_message.get(use_monitor=False)
    assert f"aborted after {written} frames" in message and f"{n - written} lost" in message
    with h5py.File(hdf.full_file_name.get(use_monitor=False), "r") as f:
        assert f["/entry/data/data"].shape[0] == written
        assert f["entry"].attrs["frames_lost"] == n - written
