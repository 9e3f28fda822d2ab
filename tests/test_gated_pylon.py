"""A gated scan whose gating camera is a GenICam camera through pylon: pylon's own
camera emulator (``PYLON_CAMEMU=1``) plays a recorded zebrafish heartbeat
(``../shared/data/heartbeats``) into the IOC's gating; the scan locks, and every stored
frame carries the pylon frame number and time of the brightfield frame that decided
its trigger, when that trigger actually fired, and no simulator-only field."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tifffile
from conftest import private_microscope

from beamline_ls.gating import corpus

FPS = 40.0


@pytest.fixture(scope="module")
def pylon_setup(epics, tmp_path_factory):
    data = tmp_path_factory.mktemp("pylon")
    images = data / "heart-images"
    images.mkdir()
    case = next(c for c in corpus.hearts() if c.name.endswith("0013"))
    video = case.make(5, 61)
    frames = video.render(np.arange(int(60 * FPS)) / FPS)
    for i, f in enumerate(frames):
        tifffile.imwrite(images / f"frame{i:05d}.tif", f)
    h, w = frames.shape[1:]
    config = data / "microscope.toml"
    config.write_text(f'[hardware.brightfield]\nbackend = "pylon"\nroi = [0, 0, {w}, {h}]\n'
                      f'exposure_us = 1000\nimage_filename = "{images}"\n')
    saved = os.environ.get("PYLON_CAMEMU")
    os.environ["PYLON_CAMEMU"] = "1"  # the IOC process finds the emulated camera
    try:
        with private_microscope(epics, "PYL:", data, config) as (_, scope, session):
            scope.gating.frame_rate.set(FPS).wait(10)
            yield scope, session, video
            scope.gating.enable.set("Off").wait(10)
    finally:
        if saved is None:
            os.environ.pop("PYLON_CAMEMU", None)
        else:
            os.environ["PYLON_CAMEMU"] = saved


@pytest.mark.slow
def test_a_gated_scan_locks_on_the_pylon_camera_and_stores_its_frame_numbers(pylon_setup):
    from plans import gated_scan

    scope, session, video = pylon_setup
    assert scope.gating.fields.get() == ("trigger_time,fired_at,gating_phase,period_s,"
                                         "reference_id,late_retries,brightfield_frame,"
                                         "brightfield_time")
    result = session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [40.0, 60.0],
                                   frames_per_plane=3))
    assert result.exit_status == "success"
    assert scope.gating.source.get().startswith("Emulation (0815-0000) -> software")
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    prim = run["primary"]
    assert "camera_true_phase" not in prim  # a real specimen has no known phase
    numbers = prim["camera_brightfield_frame"].read().ravel()
    when = prim["camera_brightfield_time"].read().ravel()
    fired = prim["camera_fired_at"].read().ravel()
    scheduled = prim["camera_trigger_time"].read().ravel()
    exposed = prim["camera_timestamp"].read().ravel()
    assert len(numbers) == 6
    # each frame was triggered from its own, later pylon frame, stamped before the fire
    assert np.all(np.diff(numbers) > 0) and np.all(numbers == np.round(numbers))
    assert np.all(np.diff(when) > 0) and np.all(when < fired)
    # the simulated fluorescence camera exposed when each trigger actually left
    assert np.array_equal(exposed, fired)
    delay = fired - scheduled
    assert np.all(delay >= 0) and np.all(delay < 0.05), delay
    # the period the gating locked on is the heart's (its mean over the video)
    truth = video.true_phase(np.array([0.0, 60.0]))
    true_period = 60.0 * 2 * math.pi / float(truth[1] - truth[0])
    period = float(np.median(prim["camera_period_s"].read()))
    assert abs(period - true_period) < 0.1 * true_period, (period, true_period)
