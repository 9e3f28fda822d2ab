"""Gated scan through the serial trigger box: absolute fire times go over a real pty
to the box emulator, which keeps its own clock and answers accepted or late; the
answers are stored with each frame. A second IOC runs with that hardware config."""

import math

import numpy as np
import pytest
from conftest import private_microscope


@pytest.fixture(scope="module")
def box_setup(epics, tmp_path_factory):
    from beamline_ls.hardware.emulators.trigger_box import TriggerBoxEmulator

    emulator = TriggerBoxEmulator().start()
    data = tmp_path_factory.mktemp("box")
    config = data / "microscope.toml"
    config.write_text(f'[hardware.trigger_box]\nbackend = "serial"\nport = "{emulator.port}"\n')
    try:
        with private_microscope(epics, "BOX:", data, config) as (_, scope, session):
            yield scope, session, emulator
    finally:
        emulator.stop()


def test_gated_scan_fires_through_the_trigger_box(box_setup):
    from plans import gated_scan

    scope, session, emulator = box_setup
    planes = [30.0, 45.0, 60.0]
    result = session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, planes,
                                   frames_per_plane=2))
    assert result.exit_status == "success"
    session.flush()
    prim = session.catalog[result.run_start_uids[0]]["primary"]
    assert prim["camera_image"].shape == (2, 3, 128, 128)
    # every frame was exposed by a trigger the box accepted over the serial protocol
    fire_commands = [c for c in emulator.commands if c.startswith("FIRE")]
    assert len(fire_commands) >= 6
    assert len(emulator.fired()) >= 6
    retries = prim["camera_late_retries"].read()
    assert np.all(np.isfinite(retries)) and np.all(retries >= 0)
    # late answers (if any) are counted both per frame and on the IOC
    assert int(scope.gating.late.get(use_monitor=False)) >= int(retries.sum())
    # and the box path gates as well as the software path (bound in test_gated.py)
    c = np.exp(1j * prim["camera_true_phase"].read().ravel()).mean()
    assert math.sqrt(-2 * math.log(abs(c))) < 0.06
    records = scope.gating.records()
    assert records and all(r["source"] == "trigger box" for r in records)
