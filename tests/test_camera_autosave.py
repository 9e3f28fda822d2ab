"""The camera keeps binning, ROI, exposure and period across an IOC restart, as an
areaDetector IOC with autosave does: a session that set a 256 x 256 ROI and whose IOC
was restarted scans at that ROI, not at full frame (which the simulated camera cannot
render fast enough, so the next scan failed as a stall). A private IOC on the spare
port, stopped and started by its own PID."""

from __future__ import annotations

import json

import epics as ca  # pyepics
from conftest import private_microscope, wait_for

PREFIX = "CAS:"


def fresh(suffix: str) -> float | None:
    return ca.caget(f"{PREFIX}cam1:{suffix}", use_monitor=False, timeout=2)


def test_camera_settings_survive_an_ioc_restart(epics, tmp_path):
    from plans import planar_scan

    with private_microscope(epics, PREFIX, tmp_path) as (ioc, scope, session):
        cam = scope.camera
        cam.set_centered_roi(256)
        cam.cam.acquire_time.set(0.0042).wait(10)
        saved = tmp_path / "autosave" / "camera.json"
        wait_for(lambda: saved.exists() and json.loads(saved.read_text())["SizeX"] == 256
                 and json.loads(saved.read_text())["AcquireTime"] == 0.0042, 10,
                 "the camera settings saved")
        ioc.stop()
        ioc.start()
        wait_for(lambda: fresh("ArraySizeX_RBV") == 256, 30, "the restarted IOC")
        assert fresh("SizeX") == 256 and fresh("SizeY") == 256
        assert fresh("MinX") == (2048 - 256) // 2 and fresh("MinY") == (2048 - 256) // 2
        assert fresh("AcquireTime") == 0.0042
        # the session's devices reconnect; its next scan takes 256 x 256 frames
        wait_for(lambda: cam.connected and scope.scanboard.connected, 30,
                 "the session's devices reconnected")
        result = session.RE(planar_scan(cam, scope.scanboard, 5, 40.0, 0.002))
        assert result.exit_status == "success"
        session.flush()
        assert session.catalog[-1]["primary"]["camera_image"].shape == (5, 256, 256)
