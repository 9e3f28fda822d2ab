"""Laser power series on the simulated microscope IOC: one run, collated per step."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def series(scope, session):
    from plans import power_series

    laser = scope.laser
    before = (laser.enable.get(), float(laser.power.get_setpoint()))
    powers = [5.0, 20.0, 60.0]
    result = session.RE(power_series(scope.camera, laser, powers, 4, exposure=0.002,
                                     md={"sample_name": "beads"}))
    session.flush()
    return result, powers, before


def test_one_run_with_a_stream_per_step_and_the_powers_collated(series, session):
    result, powers, _ = series
    assert result.exit_status == "success"
    run = session.catalog[result.run_start_uids[0]]
    start = run.metadata["start"]
    assert start["plan_name"] == "power_series" and start["sample_name"] == "beads"
    assert start["powers_mw"] == powers
    assert start["step_streams"] == ["step_000", "step_001", "step_002"]
    steps = run["power_steps"]
    assert steps["step"].read().tolist() == [0, 1, 2]
    assert steps["power_setpoint_mw"].read().tolist() == powers
    np.testing.assert_allclose(steps["laser_power"].read(), powers, atol=0.01)
    means = []
    for name in start["step_streams"]:
        img = run[name]["camera_image"]
        assert img.shape == (4, 256, 256)
        assert run[name]["camera_frame_id"].read().tolist() == [0, 1, 2, 3]
        means.append(float(img.read().mean()))
    # more excitation, more signal: the camera really saw the steps
    assert means[0] < means[1] < means[2]


def test_the_laser_is_restored_afterwards(series, scope):
    _, _, before = series
    laser = scope.laser
    assert laser.enable.get(use_monitor=False) == before[0]
    assert float(laser.power.get_setpoint()) == pytest.approx(before[1])


@pytest.mark.parametrize("kwargs, param", [
    (dict(powers=[]), "powers must hold"),
    (dict(powers="10"), "powers must be a sequence"),
    (dict(powers=[5.0, -1.0]), r"powers\[1\]"),
    (dict(powers=[5.0, 1e6]), r"powers\[1\] must be in \[0, 100\]"),
    (dict(powers=[float("nan")]), r"powers\[0\]"),
    (dict(frames_per_step=0), "frames_per_step"),
    (dict(frames_per_step=2.5), "frames_per_step"),
    (dict(exposure=0.0), "exposure"),
    (dict(exposure=60.0), "exposure"),
])
def test_bad_arguments_are_refused_before_anything_moves(scope, session, kwargs, param):
    from plans import power_series

    args = dict(powers=[5.0, 10.0], frames_per_step=2, exposure=0.005)
    args.update(kwargs)
    power_before = float(scope.laser.power.get_setpoint())
    n_runs = len(session.catalog)
    with pytest.raises(ValueError, match=param):
        session.RE(power_series(scope.camera, scope.laser, **args))
    assert float(scope.laser.power.get_setpoint()) == power_before
    session.flush()
    assert len(session.catalog) == n_runs
