"""Real IOC on loopback, real Channel Access clients (caproto CLI and ophyd)."""

import os
import subprocess
import sys
import time

import pytest


def caget(pv: str) -> str:
    """Read a PV the way a remote user would: caproto-get in another process."""
    out = subprocess.run([sys.executable, "-m", "caproto.commandline.get", "--format",
                          "{response.data}", pv], capture_output=True, text=True, timeout=30,
                         env=os.environ.copy())
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_a_remote_client_reads_piezo_camera_and_scan_parameters(scope, prefix):
    scope.piezo.move(47.25, wait=True, timeout=10)
    assert float(caget(f"{prefix}piezo.RBV").strip("[]")) == pytest.approx(47.25, abs=0.06)
    assert "Idle" in caget(f"{prefix}cam1:DetectorState_RBV")
    assert float(caget(f"{prefix}scan:VolumeRate").strip("[]")) > 0
    assert caget(f"{prefix}piezo.EGU").strip("[]'b") == "um"


def test_piezo_is_an_epics_motor_with_limits(scope):
    from ophyd.utils.errors import LimitError

    piezo = scope.piezo
    assert piezo.limits == (0.0, 400.0)
    piezo.move(62.5, wait=True, timeout=10)
    assert piezo.position == pytest.approx(62.5, abs=0.06)
    assert piezo.motor_done_move.get() == 1
    with pytest.raises(LimitError):
        piezo.move(450.0)
    assert piezo.position == pytest.approx(62.5, abs=0.06)


def test_stage_axes_move_at_their_velocity(scope):
    import time

    x = scope.stage.x
    start = x.position
    t0 = time.monotonic()
    x.move(start + 500.0, wait=True, timeout=10)  # 2000 um/s -> 0.25 s
    assert time.monotonic() - t0 > 0.2
    assert x.position == pytest.approx(start + 500.0, abs=0.01)
    x.move(start, wait=True, timeout=10)


def test_laser_power_with_limits_and_units(scope):
    from ophyd.utils.errors import LimitError

    laser = scope.laser
    laser.set(35.0).wait(5)
    assert laser.power.get() == pytest.approx(35.0)
    with pytest.raises(LimitError):
        laser.set(1000.0)
    assert laser.describe()["laser_power"]["units"] == "mW"
    laser.set(20.0).wait(5)


def test_a_choice_pv_takes_a_state_or_its_index_and_refuses_others_naming_the_states(
        scope, prefix):
    """As an EPICS record does: "1" as text (what EPICS base's caput sends) is state 1;
    a name or index that is no state is refused with the states, not an empty error."""
    from caproto import ChannelType, ErrorResponseReceived
    from caproto.sync.client import read, write

    pv = prefix + "laser:Enable"

    def put(value, data_type=None):
        write(pv, [value], data_type=data_type, notify=True, timeout=10, repeater=False)

    def state() -> bytes:
        return read(pv, data_type=ChannelType.STRING, timeout=10, repeater=False).data[0]

    before = state()
    try:
        put("1", ChannelType.STRING)
        assert state() == b"On"
        put("Off", ChannelType.STRING)
        assert state() == b"Off"
        for value, data_type, reason in (
                ("Maybe", ChannelType.STRING, "'Maybe' is not one of the states 'Off', 'On'"),
                ("7", ChannelType.STRING, "7 is not a state index (0 to 1: 'Off', 'On')"),
                (7, ChannelType.LONG, "7 is not a state index (0 to 1: 'Off', 'On')"),
                (1.5, ChannelType.DOUBLE, "1.5 is not a state index")):
            with pytest.raises(ErrorResponseReceived) as refused:
                put(value, data_type)
            assert reason in bytes(refused.value.args[0].error_message).decode("latin-1")
            assert state() == b"Off"
    finally:
        put(before, ChannelType.STRING)


def test_camera_settings_are_configuration_with_units(scope):
    cam = scope.camera
    config = cam.read_configuration()
    for key in ("camera_cam_acquire_time", "camera_cam_bin_x", "camera_cam_size_x",
                "camera_cam_trigger_mode"):
        assert key in config
    assert cam.describe_configuration()["camera_cam_acquire_time"]["units"] == "s"


def test_camera_refuses_an_roi_outside_the_sensor(scope):
    from ophyd.utils.errors import LimitError

    with pytest.raises(LimitError):
        scope.camera.cam.size_x.set(100_000)


def test_a_refused_plain_put_is_one_line_in_the_ioc_log(scope, prefix, ioc):
    """EPICS' plain ``caput`` (no -c) puts and closes at once: the refusal is logged on
    one line, without caproto's KeyError traceback for the reply it could not send."""
    log = ioc.log_file
    before = log.stat().st_size
    out = subprocess.run([sys.executable, "-m", "caproto.commandline.put",
                          prefix + "stage:X.VAL", "987654"], capture_output=True, text=True,
                         timeout=30, env=os.environ.copy())
    assert out.returncode == 0, out.stderr  # a plain put is not told the outcome

    def logged() -> str:
        with open(log, "rb") as f:
            f.seek(before)
            return f.read().decode("utf-8", "replace")
    deadline = time.monotonic() + 10
    while "987654 is outside the limits" not in logged():
        assert time.monotonic() < deadline, logged()[-2000:]
        time.sleep(0.1)
    time.sleep(1.0)  # caproto's failed reply comes right after the refusal
    text = logged()
    assert "refused: ValueError" in text
    assert "Task exception was never retrieved" not in text and "Traceback" not in text, text


def test_camera_modes_preview_then_abort(scope):
    import time

    cam = scope.camera.cam
    cam.acquire_time.set(0.005).wait(5)
    cam.acquire_period.set(0.0).wait(5)  # as fast as exposure + readout allow
    before = int(cam.array_counter.get(use_monitor=False))
    cam.camera_mode.set("Preview").wait(5)
    t0 = time.monotonic()
    while cam.array_rate.get(use_monitor=False) == 0 and time.monotonic() - t0 < 15:
        time.sleep(0.05)
    # areaDetector's ArrayCounter counts on across acquisitions (clients reset it)
    assert int(cam.array_counter.get(use_monitor=False)) >= before + 2
    # internal trigger runs at 1 / (exposure + readout): ~133 Hz for 5 ms + 256 rows
    readout = cam.readout_time.get(use_monitor=False)
    assert cam.array_rate.get(use_monitor=False) == pytest.approx(1 / (0.005 + readout),
                                                                  rel=0.02)
    cam.camera_mode.set("Abort").wait(5)
    time.sleep(0.1)
    assert cam.detector_state.get(use_monitor=False) == "Idle"
    assert cam.camera_mode.get(use_monitor=False) == "Paused"


def test_long_text_reads_whole_after_a_shorter_monitor_update(scope):
    """pyepics asks a read for as many characters as the last monitor update held;
    the devices' text signals must still read a longer new text whole."""
    name = scope.camera.hdf.file_name
    seen = []
    cid = name.subscribe(lambda value=None, **_: seen.append(value), run=False)
    try:
        name.set("a").wait(5)
        deadline = time.monotonic() + 5
        while "a" not in seen:
            assert time.monotonic() < deadline, "no monitor update"
            time.sleep(0.02)
        long = "a_much_longer_file_name_than_the_previous_one"
        from caproto.sync.client import write

        write(name.pvname, long, notify=True)  # another client writes it
        assert name.get(use_monitor=False) == long
    finally:
        name.unsubscribe(cid)
