"""Gated acquisition through real IOCs, scored against the simulated heart's TRUE phase.

Bound: the analyzer alone reaches a true-phase SD of ~0.6 ms (0.14 % of a period,
~0.009 rad) at 80 fps in virtual time (benchmarks/RESULTS.md). Here it runs in real
time in an IOC on a shared 2-core machine, where thread scheduling adds jitter of a
few ms; we allow a circular SD of 0.06 rad (~4 ms, 1 % of a period), still 1.5x
tighter than the established implementation at 40 fps, and every frame within 0.25 rad
(~17 ms) of the mean. A gating failure (wrong beat, drifting phase) gives errors of
~1 rad and more.

The phases are scored at the times the gating chose to fire. The simulated trigger is
software-timed, and a pulse that leaves late exposes late: how late is in the data
(exposure start minus scheduled time), a property of the machine's load rather than of
the gating, bounded here only generously and measured in
``benchmarks/bench_gated_first_scan.py``.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

TWO_PI = 2 * math.pi

#: The simulated heart's mean rate, and how far the period of the beats a reference was
#: folded from may lie from 1/mean: the rate is modulated +-5 % (7 s cycle) times an
#: Ornstein-Uhlenbeck wander of SD 2 %, so at a modulation trough with a 4-SD wander the
#: period is 1/(0.95 * 0.92) = 1.144 of the mean. When the scan starts within the heart's
#: history depends on the machine's speed, so a tighter bound fails at random (9.3 % was
#: seen on a CI machine). A gating error this check is for, locking on a harmonic, is off
#: by 50 % or 100 %; the 1 %-of-truth check of the period is in test_gating_analyzer.
MEAN_RATE_HZ = 2.33
RATE_ENVELOPE = 0.15


def circ_mean_sd(a: np.ndarray) -> tuple[float, float]:
    c = np.exp(1j * np.ravel(a)).mean()
    return float(np.angle(c) % TWO_PI), float(np.sqrt(-2 * np.log(abs(c))))


def circ_dist(a, b):
    return np.abs((np.asarray(a) - b + math.pi) % TWO_PI - math.pi)


def stream(session, result):
    session.flush()
    return session.catalog[result.run_start_uids[0]]["primary"]


@pytest.fixture(scope="module")
def gated(scope, session):
    from plans import gated_scan

    planes = [25.0, 40.0, 55.0, 70.0]
    result = session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, planes,
                                   frames_per_plane=2, md={"sample_name": "gated heart"}))
    return result, stream(session, result), planes


#: A pulse that left the output later than this is scored apart (see below).
LATE_S = 0.005


def lateness(prim) -> np.ndarray:
    """How late each frame's pulse left the output (exposure start less schedule)."""
    return prim["camera_timestamp"].read() - prim["camera_trigger_time"].read()


def true_phase_as_decided(prim) -> np.ndarray:
    """The heart's true phase at each trigger's scheduled time: the phase stored with
    the frame less what the heart advanced while the pulse was late (at the mean
    rate: exact for a pulse on time, off by up to lateness x the rate's excursion
    for a late one)."""
    true = prim["camera_true_phase"].read()
    return true - TWO_PI * lateness(prim) / prim["camera_period_s"].read()


def decided_on_time(prim) -> np.ndarray:
    """`true_phase_as_decided` of the frames whose pulse left on time."""
    return true_phase_as_decided(prim)[lateness(prim) < LATE_S]


def test_every_gated_frame_is_at_the_same_true_heart_phase(gated):
    """Scored at the times the gating chose. A pulse a loaded machine let leave late
    is moved back at the mean rate, which the heart's rate excursion makes inexact:
    those frames are held to a bound widened by that error and kept out of the SD
    (SD 0.069 rad with one late pulse on a loaded machine, 0.005 quiet)."""
    result, prim, planes = gated
    assert result.exit_status == "success"
    assert prim["camera_image"].shape == (2, 4, 256, 256)
    true, late = true_phase_as_decided(prim), lateness(prim)
    assert np.all(np.isfinite(true))
    on_time = late < LATE_S
    assert on_time.sum() >= on_time.size // 2, late.round(4).tolist()
    mean, sd = circ_mean_sd(true[on_time])
    assert sd < 0.06
    slack = TWO_PI * np.maximum(late, 0) * RATE_ENVELOPE / prim["camera_period_s"].read()
    assert np.all(circ_dist(true, mean) < 0.25 + slack)


def test_gated_frames_carry_trigger_time_phase_period_and_reference(gated):
    _, prim, planes = gated
    t_trig = prim["camera_trigger_time"].read()
    assert np.all(np.isfinite(t_trig))  # every frame was exposed by a fired gating trigger
    assert np.all(np.diff(t_trig.ravel()) > 0.2)  # at most one trigger per heartbeat-ish
    period = prim["camera_period_s"].read()
    assert np.all(np.abs(period * MEAN_RATE_HZ - 1) < RATE_ENVELOPE)
    # predicted phase at each trigger: the target, except a panic trigger (fired at
    # now + latency) sits up to one latency (~15 ms, ~0.25 rad) after it
    phase = prim["camera_gating_phase"].read()
    assert np.all(np.isfinite(phase))
    target, _ = circ_mean_sd(phase)
    assert circ_dist(phase, target).max() < 0.3
    assert np.all(prim["camera_reference_id"].read() >= 0)
    z = prim["camera_z"].read()
    np.testing.assert_allclose(z, np.array([planes, planes]), atol=0.1)


def test_the_trigger_lateness_is_measured_in_the_data(gated):
    """The simulated camera exposes when the scheduler's pulse actually left, so the
    stored exposure start minus the scheduled trigger time is the trigger's real
    lateness: never negative, and less than a quarter beat (a scheduler that waits for
    the wrong time; a busy machine delays a pulse by ms, see the module docstring)."""
    _, prim, _ = gated
    exposed = prim["camera_timestamp"].read().ravel()
    scheduled = prim["camera_trigger_time"].read().ravel()
    fired = prim["camera_fired_at"].read().ravel()
    assert np.array_equal(exposed, fired)
    late = exposed - scheduled
    assert np.all(late >= 0) and np.all(late < 0.1), late
    # the bright-field frame that decided each trigger came before it
    assert np.all(prim["camera_brightfield_time"].read().ravel() < scheduled)


def test_remote_clients_see_the_gating_state(gated, prefix):
    pvs = [f"{prefix}gating:{n}" for n in ("State_RBV", "Period_RBV", "TriggersFired_RBV",
                                           "TriggersLate_RBV", "LastTriggers_RBV")]
    out = subprocess.run([sys.executable, "-m", "caproto.commandline.get", "--format",
                          "{pv_name}={response.data}", *pvs], capture_output=True,
                         text=True, timeout=60, env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    values = dict(line.split("=", 1) for line in out.stdout.strip().splitlines())
    assert "Locked" in values[pvs[0]]
    assert abs(float(values[pvs[1]].strip("[]")) * MEAN_RATE_HZ - 1) < RATE_ENVELOPE
    assert int(values[pvs[2]].strip("[]")) >= 8


def test_trigger_records_over_channel_access(gated, scope):
    """The IOC's record of the last triggers (LastTriggers_RBV, JSON over CA) agrees
    with what the camera file stored for the same exposures."""
    _, prim, _ = gated
    records = scope.gating.records()
    assert 1 <= len(records) <= 5
    assert all(r["status"] in ("accepted", "late") for r in records)
    accepted = [r for r in records if r["status"] == "accepted"]
    stored = prim["camera_trigger_time"].read().ravel()
    assert accepted[-1]["trigger_time"] == pytest.approx(stored.max(), abs=1e-6)
    phases = prim["camera_gating_phase"].read().ravel()
    assert accepted[-1]["gating_phase"] == pytest.approx(phases[np.argmax(stored)], abs=1e-6)


def test_target_phase_moves_the_true_phase_by_the_same_amount(gated, scope, session):
    from plans import gated_scan

    _, prim, _ = gated
    base_true, _ = circ_mean_sd(decided_on_time(prim))
    base_target, _ = circ_mean_sd(prim["camera_gating_phase"].read())
    new_target = (base_target + math.pi) % TWO_PI
    result = session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [40.0, 60.0],
                                   frames_per_plane=2, target_phase=new_target))
    shifted = stream(session, result)
    true, sd = circ_mean_sd(decided_on_time(shifted))
    assert sd < 0.06
    # phase in reference coordinates maps onto heart phase up to rate modulation (5 %)
    assert circ_dist(true, (base_true + math.pi) % TWO_PI) < 0.35

    # target_phase=None goes back to the automatic target, not the last user value,
    # and by the rule the lock used: on the same reference, the same heart phase (the
    # raw one-beat reference's rule moved it by 0.33 rad of true phase)
    result = session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [50.0]))
    back = stream(session, result)
    auto, _ = circ_mean_sd(back["camera_gating_phase"].read())
    assert circ_dist(auto, new_target) > 1.0
    if np.all(back["camera_reference_id"].read() == prim["camera_reference_id"].read()[0, 0]):
        assert circ_dist(auto, base_target) < 0.15, (auto, base_target)


@pytest.mark.slow
def test_timelapse_keeps_the_same_heart_phase_across_reference_refreshes(scope, session):
    from plans import gated_timelapse

    result = session.RE(gated_timelapse(scope.camera, scope.gating, scope.piezo,
                                        [35.0, 50.0, 65.0], n_timepoints=3, interval_s=2.5))
    prim = stream(session, result)
    assert prim["camera_image"].shape == (3, 3, 256, 256)
    refs = prim["camera_reference_id"].read()
    assert len(np.unique(refs)) >= 2  # the reference was refreshed between stacks
    true = true_phase_as_decided(prim)
    mean, sd = circ_mean_sd(true)
    assert sd < 0.08
    per_stack = [circ_mean_sd(true[i])[0] for i in range(3)]
    assert max(circ_dist(per_stack, mean)) < 0.15


def test_no_lock_means_no_frames_and_a_clear_error(scope, session):
    from plans import gated_scan

    scope.gating.enable.set("Off").wait(5)  # analyzer restarts: needs > 1 s to lock
    with pytest.raises(TimeoutError, match="did not lock onto a heartbeat within 0.2 s"):
        session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, [40.0],
                              lock_timeout=0.2))
    assert int(scope.gating.armed.get(use_monitor=False)) == 0


@pytest.mark.parametrize("kwargs, param", [
    (dict(z_positions=[10.0, 500.0]), "z_positions"),
    (dict(z_positions=[]), "z_positions"),
    (dict(frames_per_plane=0), "frames_per_plane"),
    (dict(target_phase=7.0), "target_phase"),
    (dict(exposure=0.2), "exposure"),
    (dict(lock_timeout=-5), "lock_timeout"),
    (dict(lock_timeout=0), "lock_timeout"),
    (dict(lock_timeout=float("nan")), "lock_timeout"),
    (dict(lock_timeout="x"), "lock_timeout"),
])
def test_gated_scan_rejects_bad_arguments(scope, session, kwargs, param):
    """Refused, naming the parameter, before anything is switched or moved (a bad
    lock_timeout was taken as the time the heart had to lock, after the gating had
    been switched on, and the error blamed the heart)."""
    from plans import gated_scan

    scope.gating.enable.set("Off").wait(5)
    args = dict(z_positions=[40.0, 50.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=param):
        session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, **args))
    assert scope.gating.enable.get(use_monitor=False) == "Off"
