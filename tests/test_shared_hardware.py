"""Two sessions on one microscope (IPython beside the queue worker): a scan started
while another session's scan runs is refused before it changes anything, and the
running scan goes on to its end untouched."""

from __future__ import annotations

import uuid

import pytest
from conftest import (
    end_scan_in_another_process,
    private_microscope,
    scan_in_another_process,
    tagged_run,
    wait_for,
)

# 10 s at 5 volumes/s: the second scan must meet the first still running; with 5 s (4 s
# left once 20 frames were seen) it once ran without refusal on a CI machine
VOLUMES = 50


@pytest.fixture
def shared(epics, tmp_path):
    with private_microscope(epics, "SHRD:", tmp_path) as microscope:
        yield microscope


def test_a_scan_on_busy_hardware_is_refused_and_the_running_scan_goes_on(shared):
    from plans import volumetric_scan

    ioc, scope, session = shared
    tag = f"first {uuid.uuid4().hex[:8]}"
    other = scan_in_another_process(ioc.data_dir, "SHRD:", tag, VOLUMES)
    try:
        hdf = scope.camera.hdf
        wait_for(lambda: scope.scanboard.running.get(use_monitor=False) == 1
                 and hdf.capture.get(use_monitor=False) == 1
                 and int(hdf.num_captured.get(use_monitor=False)) >= 20, 120,
                 "the other session's scan writing frames")
        settings_before = (scope.scanboard.volume_rate.get(), scope.scanboard.num_planes.get())
        with pytest.raises(RuntimeError, match="another scan is using the hardware") as refused:
            session.RE(volumetric_scan(scope.camera, scope.scanboard, 3, 4, 20.0, 60.0, 2.0))
        assert "the scan board is running" in str(refused.value)
        assert "nothing was changed or stopped" in str(refused.value)
        # nothing of the running scan was touched: it goes on and ends complete
        assert (scope.scanboard.volume_rate.get(), scope.scanboard.num_planes.get()) \
            == settings_before
        assert other.wait(120) == 0
        run = tagged_run(session.catalog, tag)
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run["primary"]["camera_image"].shape[:2] == (VOLUMES, 5)
    finally:
        end_scan_in_another_process(other, scope)


def test_what_a_killed_worker_left_running_is_stopped_so_the_next_scan_goes(shared):
    """A queue stopped without waiting for its plan (Ctrl-C twice) kills the worker in
    the middle of a scan: its camera capture and scan board went on, and every later
    scan was refused as busy. ``stop_hardware`` (what that stop now does) ends both."""
    from beamline_ls.queue import stop_hardware
    from plans import volumetric_scan

    ioc, scope, session = shared
    other = scan_in_another_process(ioc.data_dir, "SHRD:", f"killed {uuid.uuid4().hex[:8]}",
                                    VOLUMES)
    try:
        hdf = scope.camera.hdf
        wait_for(lambda: int(hdf.num_captured.get(use_monitor=False)) >= 20, 120,
                 "the other session's scan writing frames")
        other.kill()  # the worker, killed mid-scan: the IOC goes on without it
        other.wait(30)
        said = stop_hardware("SHRD:")
        assert said == ["the camera and its capture stopped (SHRD:cam1:CameraMode = Abort)",
                        "the scan board stopped (SHRD:scan:Stop = 1)"]
        wait_for(lambda: int(hdf.capture_rbv.get(use_monitor=False)) == 0
                 and int(scope.scanboard.running.get(use_monitor=False)) == 0, 30,
                 "the capture closed and the board stopped")
        session.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 4, 20.0, 60.0, 2.0))
    finally:
        end_scan_in_another_process(other, scope)
