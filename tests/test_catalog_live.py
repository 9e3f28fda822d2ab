"""The catalog holds a scan's frames while it runs, and keeps them when the process that
runs it dies: other hosts watch a long scan from the catalog, a crashed RunEngine
loses nothing it had collected, and the next session closes its run as failed."""

from __future__ import annotations

import uuid

import h5py
import numpy as np
import pytest
from conftest import (
    end_scan_in_another_process,
    private_microscope,
    scan_in_another_process,
    tagged_run,
    wait_for,
)

VOLUMES = 200  # 40 s at 5 volumes/s


def _camera_image(catalog, tag: str):
    """The tagged run's frames node, or None while the run or its frames are not there."""
    run = tagged_run(catalog, tag)
    if run is None or "primary" not in run or "camera_image" not in run["primary"]:
        return None
    return run, run["primary"]["camera_image"]


@pytest.fixture
def live(epics, tmp_path):
    with private_microscope(epics, "LIVE:", tmp_path) as microscope:
        yield microscope


def test_a_running_scans_frames_are_in_the_catalog_and_survive_a_killed_runengine(live):
    ioc, scope, session = live
    tag = f"live {uuid.uuid4().hex[:8]}"
    proc = scan_in_another_process(ioc.data_dir, "LIVE:", tag, VOLUMES)
    try:
        wait_for(lambda: (found := _camera_image(session.catalog, tag)) is not None
                 and found[1].shape[0] >= 3, timeout=120,
                 what="three volumes of the running scan in the catalog")
        run, seen = _camera_image(session.catalog, tag)
        # read while the scan goes: not at its end, when every volume arrives at once
        assert seen.shape[0] < VOLUMES and run.metadata.get("stop") is None
        proc.kill()  # the RunEngine dies mid-run: no stop document, no final flush
        proc.wait(30)
        run, frames = _camera_image(session.catalog, tag)
        n = frames.shape[0]
        assert 3 <= n < VOLUMES and frames.shape[1:] == (5, 128, 128)
        assert run.metadata.get("stop") is None
        stored = frames.read()
        with h5py.File(scope.camera.hdf.full_file_name.get(), "r", swmr=True) as f:
            on_disk = f["/entry/data/data"][:n]
        np.testing.assert_array_equal(stored, on_disk)  # the frames, not placeholders
        assert stored.std() > 0
        # the next session to start on this data directory closes the run as failed
        from beamline_ls.config import load_settings
        from beamline_ls.session import make_session

        make_session(load_settings(data_dir=ioc.data_dir, prefix="LIVE:"),
                     progress_bar=False, run_files=False).close()
        run = tagged_run(session.catalog, tag)
        assert run.metadata["stop"]["exit_status"] == "fail"
        assert f"process {proc.pid}" in run.metadata["stop"]["reason"]
        assert run["primary"].read()["camera_image"].shape[0] >= n
    finally:
        end_scan_in_another_process(proc, scope)
