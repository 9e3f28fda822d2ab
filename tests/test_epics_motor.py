"""The positioners as motor records, driven by stock clients only (ophyd's EpicsMotor,
pyepics, caproto's command line) the way a beamline drives any motor. A private IOC on
the spare port: these tests recalibrate axes and restart the IOC."""

from __future__ import annotations

import subprocess
import sys
import time

import epics as ca  # pyepics (the `epics` fixture is the loopback set-up)
import pytest
from conftest import private_microscope, put_is_refused
from ophyd import EpicsMotor

PREFIX = "MTR:"


@pytest.fixture(scope="module")
def microscope(epics, tmp_path_factory):
    data = tmp_path_factory.mktemp("motor-data")
    with private_microscope(epics, PREFIX, data) as running:
        yield data, running


@pytest.fixture
def x(microscope):
    """The session's own stage X, a plain ophyd EpicsMotor. Not a new one: ophyd shares
    the channels of a second EpicsMotor on the same record in a process, and that
    one's first DMOV/RBV callbacks then sometimes never come (its connection timed out
    with "Pending operations: _move_changed subscription" in about half the runs)."""
    _data, (_ioc, scope, _session) = microscope
    m = scope.stage.x
    assert type(m) is EpicsMotor
    yield m
    # leave the axis as found: default calibration, at 0
    for field, value in (("SET", 0), ("FOFF", 0), ("DIR", 0), ("OFF", 0.0),
                         ("SPMG", 3), ("DHLM", 10_000.0), ("DLLM", -10_000.0)):
        ca.caput(f"{PREFIX}stage:X.{field}", value, wait=True, timeout=10)
    m.move(0.0, wait=True, timeout=30)


# a client connected after the limits changed: its own process, as another user's
_FRESH_CLIENT = """
import sys
from ophyd import EpicsMotor
from ophyd.utils.errors import LimitError
m = EpicsMotor(sys.argv[1], name="x")
m.wait_for_connection(timeout=10)
try:
    m.move(float(sys.argv[2]), wait=True, timeout=10)
except LimitError as exc:
    print(exc)
    sys.exit(0)
sys.exit("the move was sent")
"""


def test_no_limit_violation_or_alarm_shows_before_any_move(microscope):
    for axis in ("stage:Z", "galvo1", "galvo2"):  # axes no test here moves
        for field in ("LVIO", "SEVR"):
            assert ca.caget(f"{PREFIX}{axis}.{field}", use_monitor=False) == 0, (axis, field)


def test_set_current_position_recalibrates_without_moving(x):
    x.move(3000.0, wait=True, timeout=30)
    x.set_current_position(0.0)
    time.sleep(0.5)  # a stage told to move would be 1000 um away by now
    assert x.user_readback.get(use_monitor=False) == pytest.approx(0.0, abs=0.01)
    assert ca.caget(f"{PREFIX}stage:X.DRBV", use_monitor=False) == pytest.approx(3000.0)
    assert ca.caget(f"{PREFIX}stage:X.OFF", use_monitor=False) == pytest.approx(-3000.0)
    assert x.set_use_switch.get() == 0  # back to Use
    x.move(100.0, wait=True, timeout=30)  # user 100 is dial 3100
    assert ca.caget(f"{PREFIX}stage:X.DRBV", use_monitor=False) == pytest.approx(3100.0)
    # limits followed the offset
    assert x.high_limit == pytest.approx(7000.0) and x.low_limit == pytest.approx(-13_000.0)


def test_user_limits_are_enforced_and_read_back_as_enforced(x):
    ca.caput(f"{PREFIX}stage:X.HLM", 100.0, wait=True, timeout=10)
    time.sleep(0.2)
    assert ca.caget(f"{PREFIX}stage:X.HLM", use_monitor=False) == pytest.approx(100.0)
    assert ca.caget(f"{PREFIX}stage:X.DHLM", use_monitor=False) == pytest.approx(100.0)
    # a client connected now knows the new limits, and refuses before sending
    fresh = subprocess.run([sys.executable, "-c", _FRESH_CLIENT, f"{PREFIX}stage:X", "150"],
                           capture_output=True, text=True, timeout=60)
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    # one connected before the change sends the move: the record refuses it, and the
    # move ends at once as failed (never a hang)
    t0 = time.monotonic()
    with pytest.raises(Exception, match="has failed"):
        x.move(150.0, wait=True, timeout=10)
    assert time.monotonic() - t0 < 5
    # a client that does not check (caput) is refused by the record: LVIO, no motion
    ca.caput(f"{PREFIX}stage:X.VAL", 150.0, wait=True, timeout=10)
    time.sleep(0.3)
    assert ca.caget(f"{PREFIX}stage:X.LVIO", use_monitor=False) == 1
    assert x.user_readback.get(use_monitor=False) == pytest.approx(0.0, abs=0.01)
    assert ca.caget(f"{PREFIX}stage:X.SEVR", use_monitor=False) == 2  # MAJOR, WRITE
    # the next accepted move ends the refusal's alarm, as a record processing again
    x.move(50.0, wait=True, timeout=30)
    for field in ("SEVR", "STAT", "LVIO"):
        assert ca.caget(f"{PREFIX}stage:X.{field}", use_monitor=False) == 0, field
    # beyond the hardware travel: clamped, and read back clamped
    ca.caput(f"{PREFIX}stage:X.HLM", 1e9, wait=True, timeout=10)
    time.sleep(0.2)
    assert ca.caget(f"{PREFIX}stage:X.HLM", use_monitor=False) == pytest.approx(10_000.0)


def test_a_motor_left_beyond_a_lowered_limit_refuses_further_out_and_comes_back(x):
    """HLM lowered below where the motor stands (a facility narrowing the range after a
    crash). The motor record takes the limit, refuses a target further out (LVIO,
    DMOV back to 1) and moves a target inside the limits, its put completing at the
    target. The readback's own limits refused the IOC's readback writes: the HLM put
    failed while taking effect, DMOV stayed 0 for good after the refused move, and
    the move back completed at once with RBV still out."""
    x.move(900.0, wait=True, timeout=30)
    assert not put_is_refused(f"{PREFIX}stage:X.HLM", 700.0)
    assert ca.caget(f"{PREFIX}stage:X.HLM", use_monitor=False) == pytest.approx(700.0)
    assert put_is_refused(f"{PREFIX}stage:X.VAL", 950.0)
    assert ca.caget(f"{PREFIX}stage:X.LVIO", use_monitor=False) == 1
    deadline = time.monotonic() + 5
    while ca.caget(f"{PREFIX}stage:X.DMOV", use_monitor=False) != 1:
        assert time.monotonic() < deadline, "DMOV stayed 0 after a refused move"
        time.sleep(0.05)
    assert not put_is_refused(f"{PREFIX}stage:X.VAL", 100.0)  # completes with the move
    assert ca.caget(f"{PREFIX}stage:X.RBV", use_monitor=False) == pytest.approx(100.0)
    assert ca.caget(f"{PREFIX}stage:X.DMOV", use_monitor=False) == 1
    for field in ("SEVR", "LVIO"):
        assert ca.caget(f"{PREFIX}stage:X.{field}", use_monitor=False) == 0, field
    ca.caput(f"{PREFIX}stage:X.HLM", 10_000.0, wait=True, timeout=10)


def test_put_completion_on_val_ends_with_the_move(x):
    """caput -c and pyepics wait=True return when the move is done (DMOV = 1 at the
    target), not when it started."""
    t0 = time.monotonic()
    ca.caput(f"{PREFIX}stage:X.VAL", 2000.0, wait=True, timeout=30)
    elapsed = time.monotonic() - t0
    assert ca.caget(f"{PREFIX}stage:X.DMOV", use_monitor=False) == 1
    assert ca.caget(f"{PREFIX}stage:X.RBV", use_monitor=False) == pytest.approx(2000.0)
    assert elapsed >= 0.9  # 2000 um at 2000 um/s
    done = subprocess.run([sys.executable, "-m", "caproto.commandline.put", "-c",
                           f"{PREFIX}stage:X.VAL", "0"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert ca.caget(f"{PREFIX}stage:X.RBV", use_monitor=False) == pytest.approx(0.0)
    # pyepics' cached PV: a PV object collected later on another thread crashes libca
    rbv = ca.get_pv(f"{PREFIX}stage:X.RBV", form="ctrl")
    assert rbv.get_ctrlvars(timeout=5)["precision"] == 2  # screens show 0.00, not 0


def test_stop_spmg_tweak_and_jog(x):
    x.move(5000.0, wait=False)
    time.sleep(0.3)
    x.stop()
    deadline = time.monotonic() + 20  # a stop ends when the axis is at rest
    while ca.caget(f"{PREFIX}stage:X.DMOV", use_monitor=False) != 1:
        assert time.monotonic() < deadline, "the stop did not end"
        time.sleep(0.05)
    where = x.user_readback.get(use_monitor=False)
    assert 100 < where < 4900
    # VAL is where it came to rest, not where it was when told to stop
    assert x.user_setpoint.get(use_monitor=False) == pytest.approx(where, abs=0.05)
    # Pause keeps the target; Go goes on to it
    ca.caput(f"{PREFIX}stage:X.SPMG", "Pause", wait=True)
    ca.caput(f"{PREFIX}stage:X.VAL", 1000.0, wait=True, timeout=10)
    time.sleep(0.3)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(where, abs=0.05)
    ca.caput(f"{PREFIX}stage:X.SPMG", "Go", wait=True)
    deadline = time.monotonic() + 20
    while abs(x.user_readback.get(use_monitor=False) - 1000.0) > 0.05:
        assert time.monotonic() < deadline, "Go did not resume the move"
        time.sleep(0.05)
    # tweak by TWV
    ca.caput(f"{PREFIX}stage:X.TWV", 250.0, wait=True)
    ca.caput(f"{PREFIX}stage:X.TWF", 1, wait=True, timeout=10)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(1250.0, abs=0.05)
    ca.caput(f"{PREFIX}stage:X.TWR", 1, wait=True, timeout=10)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(1000.0, abs=0.05)
    # jog forward while 1
    ca.caput(f"{PREFIX}stage:X.JOGF", 1, wait=True)
    time.sleep(0.4)
    ca.caput(f"{PREFIX}stage:X.JOGF", 0, wait=True)
    deadline = time.monotonic() + 20  # the axis slows to rest (ACCL), then DMOV 1
    while ca.caget(f"{PREFIX}stage:X.DMOV", use_monitor=False) != 1:
        assert time.monotonic() < deadline, "the jog did not end"
        time.sleep(0.05)
    jogged = x.user_readback.get(use_monitor=False)
    assert 1200 < jogged < 10_000
    assert x.user_setpoint.get(use_monitor=False) == pytest.approx(jogged, abs=0.05)


def test_a_new_target_during_a_move_is_done_only_when_that_move_is(x):
    """ophyd's EpicsMotor given a new target mid-move stops the first move (STOP) and
    puts the new VAL at once; the second status must end at the new target, not when
    the halt of the first move ends (which left the axis moving, DMOV 1 with MOVN 1)."""
    first = x.set(3000.0)
    time.sleep(0.2)  # 400 um on its way
    second = x.set(500.0)
    second.wait(timeout=30)
    assert ca.caget(f"{PREFIX}stage:X.MOVN", use_monitor=False) == 0
    assert x.user_readback.get(use_monitor=False) == pytest.approx(500.0, abs=0.05)
    assert x.user_setpoint.get(use_monitor=False) == pytest.approx(500.0)
    with pytest.raises(Exception):  # noqa: B017 - ophyd fails it as it likes
        first.wait(timeout=1)
    # the same with raw Channel Access, no waits between STOP and VAL
    ca.caput(f"{PREFIX}stage:X.VAL", 3000.0)
    time.sleep(0.2)
    ca.caput(f"{PREFIX}stage:X.STOP", 1)
    ca.caput(f"{PREFIX}stage:X.VAL", 1000.0, wait=True, timeout=30)
    assert ca.caget(f"{PREFIX}stage:X.MOVN", use_monitor=False) == 0
    assert ca.caget(f"{PREFIX}stage:X.RBV", use_monitor=False) == pytest.approx(1000.0,
                                                                               abs=0.05)
    assert ca.caget(f"{PREFIX}stage:X.VAL", use_monitor=False) == pytest.approx(1000.0)


def test_descriptors_and_screens_get_the_motor_records_metadata(x):
    """EpicsMotor.describe() (every bluesky descriptor) takes its limits from RBV, and
    screens their units and precision from each field: as a motor record serves them,
    not 0 to 0 and unitless."""
    lo = ca.caget(f"{PREFIX}stage:X.LLM", use_monitor=False)
    hi = ca.caget(f"{PREFIX}stage:X.HLM", use_monitor=False)
    described = x.describe()[x.name]
    assert (described["lower_ctrl_limit"], described["upper_ctrl_limit"]) == (lo, hi)
    egu = ca.caget(f"{PREFIX}stage:X.EGU", use_monitor=False)
    prec = ca.caget(f"{PREFIX}stage:X.PREC", use_monitor=False)
    # pyepics' cached PVs: one collected later on another thread crashes libca
    drbv = ca.get_pv(f"{PREFIX}stage:X.DRBV", form="ctrl").get_ctrlvars(timeout=5)
    assert (drbv["lower_ctrl_limit"], drbv["upper_ctrl_limit"]) == (
        ca.caget(f"{PREFIX}stage:X.DLLM", use_monitor=False),
        ca.caget(f"{PREFIX}stage:X.DHLM", use_monitor=False))
    velo = ca.get_pv(f"{PREFIX}stage:X.VELO", form="ctrl").get_ctrlvars(timeout=5)
    assert velo["units"] == f"{egu}/sec" and velo["precision"] == prec
    for field in ("MRES", "ACCL", "RDBD", "BDST"):  # ACCL 0.2 s is not shown as "0"
        ctrl = ca.get_pv(f"{PREFIX}stage:X.{field}", form="ctrl").get_ctrlvars(timeout=5)
        assert ctrl["precision"] == prec, field


def test_a_jog_that_runs_into_a_limit_leaves_val_there_and_says_so(x):
    """The motor record ends a jog with VAL = RBV: a tweak after a jog that the soft
    limit stopped starts from the limit (it went back from the jog's start: a move of
    the whole way plus the step)."""
    ca.caput(f"{PREFIX}stage:X.HLM", 300.0, wait=True, timeout=10)
    ca.caput(f"{PREFIX}stage:X.JOGF", 1, wait=True)
    deadline = time.monotonic() + 20
    while ca.caget(f"{PREFIX}stage:X.DMOV", use_monitor=False) != 1 or \
            x.user_readback.get(use_monitor=False) < 299.9:
        assert time.monotonic() < deadline, "the jog did not reach the limit"
        time.sleep(0.05)
    ca.caput(f"{PREFIX}stage:X.JOGF", 0, wait=True)
    assert ca.caget(f"{PREFIX}stage:X.VAL", use_monitor=False) == pytest.approx(300.0)
    assert ca.caget(f"{PREFIX}stage:X.DVAL", use_monitor=False) == pytest.approx(300.0)
    assert ca.caget(f"{PREFIX}stage:X.LVIO", use_monitor=False) == 1
    assert x.user_setpoint.get(use_monitor=False) == pytest.approx(300.0)
    ca.caput(f"{PREFIX}stage:X.TWV", 50.0, wait=True)
    ca.caput(f"{PREFIX}stage:X.TWR", 1, wait=True, timeout=10)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(250.0, abs=0.05)
    assert ca.caget(f"{PREFIX}stage:X.LVIO", use_monitor=False) == 0
    ca.caput(f"{PREFIX}stage:X.HLM", 10_000.0, wait=True, timeout=10)


def disp() -> int:
    """The X axis's DISP (a CHAR field: a 0 reads as an empty string)."""
    from caproto.sync.client import read

    data = read(f"{PREFIX}stage:X.DISP", timeout=10, repeater=False).data
    return int(data[0]) if len(data) else 0


def test_the_screens_disable_refuses_every_put_until_enabled(x):
    """motorx's Enable/Disable (``_able``, which writes DISP): disabled, a move, a
    tweak and a limit change are refused at once, with the reason; enabled, they go."""
    ca.caput(f"{PREFIX}stage:X_able", "Disable", wait=True)
    try:
        assert disp() == 1
        for field, value in (("", 100.0), (".TWF", 1), (".HLM", 500.0), (".JOGF", 1)):
            assert put_is_refused(f"{PREFIX}stage:X{field}", value), field
        assert x.user_readback.get(use_monitor=False) == pytest.approx(0.0, abs=0.05)
        assert ca.caget(f"{PREFIX}stage:X.DESC", use_monitor=False) == "stage:X"
    finally:
        ca.caput(f"{PREFIX}stage:X_able", "Enable", wait=True)
    assert disp() == 0
    x.move(100.0, wait=True, timeout=30)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(100.0, abs=0.05)


def test_set_keeps_dval_and_moves_only_the_offset(microscope):
    """SET then VAL: OFF = VAL - DVAL * DIR with DVAL as it was (the motor record's
    rule). Taking the piezo's settling readback instead moved DVAL by its settling
    error, and recalibrating there and back left an offset behind."""
    piezo = f"{PREFIX}piezo"
    ca.caput(f"{piezo}.VAL", 140.0, wait=True, timeout=30)
    dval = ca.caget(f"{piezo}.DVAL", use_monitor=False)
    ca.caput(f"{piezo}.SET", 1, wait=True)
    try:
        ca.caput(f"{piezo}.VAL", 200.0, wait=True, timeout=10)
        assert ca.caget(f"{piezo}.DVAL", use_monitor=False) == dval
        assert ca.caget(f"{piezo}.OFF", use_monitor=False) == pytest.approx(200.0 - dval,
                                                                           abs=1e-12)
        ca.caput(f"{piezo}.VAL", dval, wait=True, timeout=10)
        assert ca.caget(f"{piezo}.OFF", use_monitor=False) == 0.0
    finally:
        ca.caput(f"{piezo}.SET", 0, wait=True)
        ca.caput(f"{piezo}.OFF", 0.0, wait=True)


def test_velo_sets_the_speed_of_the_move(x):
    """EpicsMotor.velocity changes how long a move takes; out of range is refused."""
    vmax = x.velocity.get()
    assert ca.caget(f"{PREFIX}stage:X.VMAX", use_monitor=False) == pytest.approx(vmax)
    x.velocity.set(vmax / 4).wait(10)
    try:
        t0 = time.monotonic()
        x.move(1000.0, wait=True, timeout=30)
        slow = time.monotonic() - t0
        assert x.position == pytest.approx(1000.0)
        assert slow >= 0.9 * 1000.0 / (vmax / 4)  # a quarter of the speed it had
        assert put_is_refused(f"{PREFIX}stage:X.VELO", vmax * 10)
        assert x.velocity.get(use_monitor=False) == pytest.approx(vmax / 4)
    finally:
        x.velocity.set(vmax).wait(10)


def test_a_refused_speed_leaves_no_alarm_that_fails_the_next_move(x):
    """A speed beyond VMAX is refused; it must not leave RBV in alarm: ophyd's EpicsMotor
    calls a move failed when RBV is in alarm as it ends, so one mistyped VELO on a
    screen failed every later move on the axis."""
    vmax = x.velocity.get()
    assert put_is_refused(f"{PREFIX}stage:X.VELO", vmax * 10)
    x.move(300.0, wait=True, timeout=30)  # raises if ophyd calls it failed
    assert x.position == pytest.approx(300.0)
    rbv = ca.get_pv(f"{PREFIX}stage:X.RBV", form="time")  # pyepics keeps it (a PV
    # object collected after its IOC stopped crashed the process in libca)
    assert rbv.get_with_metadata(use_monitor=False, timeout=10)["severity"] == 0
    # a refused field put, then an accepted one: the record is out of alarm again
    assert put_is_refused(f"{PREFIX}stage:X.MRES", 0.5)
    x.velocity.set(vmax).wait(10)
    assert rbv.get_with_metadata(use_monitor=False, timeout=10)["severity"] == 0


def test_piezo_speed_is_fixed_and_says_so(microscope):
    _data, (_ioc, scope, _session) = microscope
    assert isinstance(scope.piezo, EpicsMotor) and scope.piezo.connected
    assert ca.caget(f"{PREFIX}piezo.VMAX", use_monitor=False) == 0
    assert put_is_refused(f"{PREFIX}piezo.VELO", 123.0)
    assert put_is_refused(f"{PREFIX}piezo.ACCL", 5.0)


def test_home_goes_to_the_switch_and_sets_homed(x):
    x.move(1500.0, wait=True, timeout=30)
    x.home("reverse", wait=True, timeout=30)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(0.0, abs=0.01)
    msta = int(ca.caget(f"{PREFIX}stage:X.MSTA", use_monitor=False))
    assert msta & (1 << 14) and msta & (1 << 1)  # HOMED, DONE


def test_direction_flips_user_coordinates(x):
    x.move(500.0, wait=True, timeout=30)
    ca.caput(f"{PREFIX}stage:X.DIR", "Neg", wait=True)
    time.sleep(0.3)
    assert x.user_readback.get(use_monitor=False) == pytest.approx(-500.0, abs=0.01)
    x.move(-200.0, wait=True, timeout=30)  # user -200 is dial +200
    assert ca.caget(f"{PREFIX}stage:X.DRBV", use_monitor=False) == pytest.approx(200.0)


def test_the_calibration_survives_an_ioc_restart(microscope):
    data, (ioc, scope, _session) = microscope
    y = scope.stage.y
    y.move(400.0, wait=True, timeout=30)
    y.set_current_position(10.0)
    ca.caput(f"{PREFIX}stage:Y.HLM", 500.0, wait=True, timeout=10)
    # the galvo calibration (operator's console or a plan) is kept the same way
    ca.caput(f"{PREFIX}scan:Galvo1Offset", -0.09, wait=True, timeout=10)
    ca.caput(f"{PREFIX}scan:Galvo2Slope", 0.0123, wait=True, timeout=10)
    ioc.stop()
    ioc.start()
    def fresh(suffix: str) -> float:
        """A read of the restarted IOC; a reconnecting client may first time out."""
        deadline = time.monotonic() + 30
        while (value := ca.caget(PREFIX + suffix, use_monitor=False, timeout=2)) is None:
            assert time.monotonic() < deadline, f"the restarted IOC did not answer {suffix}"
        return value

    assert fresh("stage:Y.OFF") == pytest.approx(-390.0)
    assert fresh("stage:Y.HLM") == pytest.approx(500.0)
    # the restarted simulator's stage is back at dial 0, which reads -390
    assert fresh("stage:Y.RBV") == pytest.approx(-390.0)
    assert (data / "autosave" / "stage-y.json").exists()
    assert fresh("scan:Galvo1Offset") == pytest.approx(-0.09)
    assert fresh("scan:Galvo2Slope") == pytest.approx(0.0123)
    assert fresh("scan:Galvo1Slope") == pytest.approx(0.02)
