"""Small helpers shared by plans."""

from __future__ import annotations

import time
import uuid

import bluesky.plan_stubs as bps


def file_name_for(kind: str) -> tuple[str, str]:
    """(directory relative to the camera IOC's data root, unique file name)."""
    return time.strftime("%Y/%m/%d"), f"{kind}_{time.strftime('%H%M%S')}_{uuid.uuid4().hex[:8]}"


def abort_camera_if_busy(camera):
    """Cleanup stub: abort the camera and its file writer if either is still running
    (no-op after a clean finish, so it can run unconditionally in finalize_wrapper)."""
    if camera.hdf.capture.get() or camera.cam.detector_state.get() != "Idle":
        yield from bps.abs_set(camera.cam.camera_mode, "Abort", wait=True)
