"""Serial drivers against their protocol emulators on real pseudo-terminals.

Real bytes go through a real ``serial.Serial``; the emulators are slowed, garbled,
silenced, busy, unplugged and plugged back in. Every failure must be a clear error
within a bounded time, and the driver must work again afterwards.
"""

from __future__ import annotations

import threading
import time

import pytest

from beamline_ls.gating.scheduler import TriggerReport
from beamline_ls.hardware.asi_stage import AsiStage, AxisConfig
from beamline_ls.hardware.emulators import (
    AsiStageEmulator,
    CoboltLaserEmulator,
    TriggerBoxEmulator,
)
from beamline_ls.hardware.emulators.trigger_box import TICK_S
from beamline_ls.hardware.serial_laser import SerialLaser
from beamline_ls.hardware.serial_link import (
    DeviceDisconnected,
    DeviceRefused,
    DeviceTimeout,
    GarbledReply,
    SerialLink,
)
from beamline_ls.hardware.trigger_box import TriggerBox

TIMEOUT = 0.3
BOUND = TIMEOUT + 1.5  # generous: a clear error, never a hang


@pytest.fixture
def asi(tmp_path):
    emu = AsiStageEmulator(tmp_path / "ttyASI").start()
    link = SerialLink("stage", emu.port, 115200, TIMEOUT)
    stage = AsiStage(link, {"x": AxisConfig("X", (-5000.0, 5000.0)), "y": AxisConfig("Y"),
                            "z": AxisConfig("Z")}, cache_s=0.0)
    yield emu, stage
    link.close()
    emu.stop()


@pytest.fixture
def laser(tmp_path):
    emu = CoboltLaserEmulator(tmp_path / "ttyLaser", max_power_w=0.1).start()
    link = SerialLink("laser", emu.port, 115200, TIMEOUT)
    yield emu, SerialLaser(link, max_power_mw=200.0, wavelength_nm=488.0)
    link.close()
    emu.stop()


@pytest.fixture
def box(tmp_path):
    emu = TriggerBoxEmulator(tmp_path / "ttyBox", min_lead_ticks=400).start()  # ~1 ms lead
    link = SerialLink("trigger_box", emu.port, 115200, TIMEOUT)
    yield emu, TriggerBox(link)
    link.close()
    emu.stop()


def wait_until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# ------------------------------------------------------------------------ stage
def test_stage_moves_in_tenths_of_microns_and_reports_busy(asi):
    emu, stage = asi
    x = stage.axis("x")
    x.move(2345.6)
    assert "MOVE X=23456" in emu.commands
    assert x.is_moving()  # 2 mm/s: over a second of travel, whatever the load
    wait_until(lambda: not x.is_moving())
    assert x.position() == pytest.approx(2345.6)
    assert emu.position_um("X") == pytest.approx(2345.6)
    assert stage.where() == {"x": pytest.approx(2345.6), "y": 0.0, "z": 0.0}


def test_stage_jammed_axis_stays_busy_and_halt_is_sent(asi):
    emu, stage = asi
    emu.stuck_busy = True
    y = stage.axis("y")
    assert y.is_moving() and stage.busy()
    y.stop()
    assert emu.commands[-1] == "HALT"
    emu.stuck_busy = False
    assert not y.is_moving()


def test_stage_limits_and_controller_errors_are_clear(asi):
    emu, stage = asi
    with pytest.raises(ValueError, match="outside limits"):
        stage.axis("x").move(6000.0)
    assert not any(c.startswith("MOVE") for c in emu.commands)
    emu.travel_tenths = 100.0  # the controller's own range is smaller: it refuses
    with pytest.raises(DeviceRefused, match=r":N-4 \(parameter out of range\)"):
        stage.axis("x").move(4000.0)


def test_stage_slow_reply_times_out_in_bounded_time_then_recovers(asi):
    emu, stage = asi
    emu.reply_delay_s = 1.0
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match=r"stage on .*ttyASI: command 'WHERE X Y Z': no "
                                            r"reply within 0.3 s"):
        stage.where()
    assert time.monotonic() - t0 < BOUND  # the error comes, the call does not hang
    emu.reply_delay_s = 0.1  # slow but within the timeout; the late reply is flushed
    time.sleep(1.0)
    stage.axis("x").move(10.0)
    wait_until(lambda: not stage.is_moving("x"))
    assert stage.where()["x"] == pytest.approx(10.0)


def test_stage_garbage_is_reported_and_the_next_command_works(asi):
    emu, stage = asi
    emu.garble_replies = 1
    t = time.monotonic()
    with pytest.raises(GarbledReply, match="garbled reply"):
        stage.where()
    assert time.monotonic() - t < BOUND
    assert stage.where()["z"] == 0.0


def test_stage_unplugged_cable_is_a_clear_error_and_replugging_reconnects(asi):
    emu, stage = asi
    assert stage.where()["x"] == 0.0
    emu.unplug()
    t = time.monotonic()
    with pytest.raises(DeviceDisconnected, match=r"stage.*(cable|port)"):
        stage.where()
    with pytest.raises(DeviceDisconnected, match="cannot open serial port"):
        stage.where()  # the next call tries to reconnect, still unplugged
    assert time.monotonic() - t < 2 * BOUND
    emu.replug()
    assert stage.where() == {"x": 0.0, "y": 0.0, "z": 0.0}
    assert stage.link.connected


def test_stage_access_is_serialized_between_threads(asi):
    emu, stage = asi
    emu.reply_delay_s = 0.002
    x = stage.axis("x")
    x.move(50.0)
    wait_until(lambda: not x.is_moving())
    errors: list[BaseException] = []
    seen: list[float] = []
    seen_busy: list[bool] = []

    def worker():
        try:
            for _ in range(15):
                seen.append(stage.where()["x"])
                seen_busy.append(stage.busy())
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    n_before = len(emu.commands)
    threads = [threading.Thread(target=worker) for _ in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not errors
    assert seen == [50.0] * 90 and seen_busy == [False] * 90
    # the controller only ever saw whole commands
    during = emu.commands[n_before:]
    assert len(during) == 180 and set(during) == {"WHERE X Y Z", "/"}


# ------------------------------------------------------------------------ laser
def test_laser_power_in_milliwatts_on_off_and_readback(laser):
    emu, las = laser
    las.set_power(25.0)
    assert emu.commands[-1] == "p 0.025000"
    assert las.setpoint() == pytest.approx(25.0)
    assert las.power() == 0.0 and not las.enabled()
    las.set_enabled(True)
    assert las.enabled() and las.power() == pytest.approx(25.0)
    las.set_enabled(False)
    assert not emu.emission
    assert las.identify() == "20455"


def test_laser_refusals_and_limits(laser):
    emu, las = laser
    with pytest.raises(ValueError, match=r"power must be in \[0, 200.0\] mW"):
        las.set_power(250.0)
    with pytest.raises(DeviceRefused, match="value out of range"):
        las.set_power(150.0)  # within the configured limit, beyond the head's
    assert emu.setpoint_w == 0.0


def test_laser_silence_garbage_and_unplug_are_bounded(laser):
    emu, las = laser
    emu.mute = True
    t = time.monotonic()
    with pytest.raises(DeviceTimeout, match="laser on .*'pa\\?': no reply"):
        las.power()
    assert time.monotonic() - t < BOUND
    emu.mute = False
    emu.garble_replies = 1
    with pytest.raises(GarbledReply):
        las.enabled()
    assert las.enabled() is False
    emu.unplug()
    with pytest.raises(DeviceDisconnected):
        las.power()
    emu.replug()
    assert las.power() == 0.0


def test_laser_busy_query_reflects_a_command_in_flight(laser):
    emu, las = laser
    emu.reply_delay_s = 0.2
    th = threading.Thread(target=las.power)
    th.start()
    wait_until(lambda: las.busy, timeout=2)
    th.join(timeout=5)
    assert not las.busy


# ------------------------------------------------------------------------ trigger box
def test_trigger_box_answers_accepted_or_late_per_trigger(box):
    emu, tb = box
    reports: list[TriggerReport] = []
    tb.on_report = reports.append
    m = tb.sync()
    assert m.tick_s == pytest.approx(TICK_S) and m.rtt_s < 0.2
    now = tb.clock.now()
    times = [now + 0.05, now - 0.01, now + 0.08, now + 0.0001, now + 0.12]
    answers = [tb.schedule(t, tag=i) for i, t in enumerate(times)]
    assert [r.status for r in answers] == ["accepted", "late", "accepted", "late", "accepted"]
    assert [r.tag for r in reports] == [0, 1, 2, 3, 4]
    assert tb.pending() == 3
    wait_until(lambda: len(emu.fired()) == 3)
    fired = emu.fired()
    # the box fired the accepted ones, in time order, at the ticks the host mapped
    assert [ident for _, ident in fired] == [1, 3, 5]
    for (tick, _), t in zip(fired, (times[0], times[2], times[4]), strict=True):
        assert abs(tb.map.to_host(tick) - t) < 1e-5
    assert tb.pending() == 0


def test_trigger_box_as_a_trigger_sink_never_raises(box):
    emu, tb = box
    tb.fire(tb.clock.now() + 0.05, "beat 1")
    emu.mute = True
    t = time.monotonic()
    tb.fire(tb.clock.now() + 0.05, "beat 2")  # no answer: logged and recorded, not raised
    assert time.monotonic() - t < BOUND
    assert [(r.tag, r.status) for r in tb.reports] == [("beat 1", "accepted"),
                                                      ("beat 2", "error")]


def test_trigger_box_clock_mapping_follows_the_box(box):
    emu, tb = box
    tb.sync()
    t_host = tb.clock.now()
    assert abs(tb.box_time() - t_host) < 0.05
    assert abs(tb.map.to_ticks(t_host) - emu.now_ticks()) < 0.05 / TICK_S


def test_trigger_box_garbage_and_refusal_are_clear(box):
    emu, tb = box
    tb.sync()
    emu.garble_replies = 1
    with pytest.raises(GarbledReply):
        tb.schedule(tb.clock.now() + 0.05)
    assert tb.schedule(tb.clock.now() + 0.05).status == "accepted"
    with pytest.raises(DeviceRefused, match="SYNC"):
        TriggerBox(tb.link, tick_s=1e-6).sync()  # configured tick disagrees with the box


def test_trigger_box_unplug_and_replug(box):
    emu, tb = box
    tb.sync()
    emu.unplug()
    with pytest.raises(DeviceDisconnected):
        tb.schedule(tb.clock.now() + 0.05)
    emu.replug()
    tb.sync()
    assert tb.schedule(tb.clock.now() + 0.05).status == "accepted"
