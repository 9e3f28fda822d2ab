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

VOLUMES = 25  # 5 s at 5 volumes/s


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
