"""NI scan board at the nidaqmx Task seam: fakes built from the real nidaqmx API.

Every task is ``create_autospec(nidaqmx.Task, instance=True)`` with spec'd channel
collections, timing, triggers, export signals and output stream, so a call with a
wrong signature or a misspelt property fails here as it would on a real board.
"""

from __future__ import annotations

import time
from unittest import mock

import nidaqmx
import nidaqmx.constants as c
import numpy as np
import pytest
from nidaqmx.errors import DaqError
from nidaqmx.task import ExportSignals, OutStream, Timing
from nidaqmx.task.channels import COChannel
from nidaqmx.task.collections import (
    AIChannelCollection,
    AOChannelCollection,
    COChannelCollection,
    DOChannelCollection,
)
from nidaqmx.task.triggering import StartTrigger, Triggers
from nidaqmx.types import CtrTick

from beamline_ls.hardware.nidaq_positioner import NidaqAxis
from beamline_ls.hardware.nidaq_scanboard import NidaqBoardConfig, NidaqError, NidaqScanBoard
from beamline_ls.waveforms import GalvoCalibration, VolumeScan

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

UM_PER_V = 40.0
OFFSET_V = 0.25


class FakeNI:
    """Hands out spec'd fake tasks and records every start/stop/close in order."""

    def __init__(self) -> None:
        self.tasks: dict[str, list] = {}
        self.events: list[tuple[str, str]] = []
        self.ai_volts = 0.0
        self.follow = False  # the piezo monitor follows static piezo writes

    def _static_write(self, task, data, auto_start=None, timeout=10.0):
        chans = [call.args[0] for call in task.ao_channels.add_ao_voltage_chan.call_args_list]
        values = data if isinstance(data, list) else [data]
        if self.follow and "Dev1/ao0" in chans:
            self.ai_volts = values[chans.index("Dev1/ao0")] - OFFSET_V

    def __call__(self, name: str):
        t = mock.create_autospec(nidaqmx.Task, instance=True)
        t.ao_channels = mock.create_autospec(AOChannelCollection, instance=True)
        t.ai_channels = mock.create_autospec(AIChannelCollection, instance=True)
        t.do_channels = mock.create_autospec(DOChannelCollection, instance=True)
        t.co_channels = mock.create_autospec(COChannelCollection, instance=True)
        t.co_channels.add_co_pulse_chan_ticks.return_value = mock.create_autospec(
            COChannel, instance=True, spec_set=True)
        t.timing = mock.create_autospec(Timing, instance=True, spec_set=True)
        trig = mock.create_autospec(Triggers, instance=True)
        trig.start_trigger = mock.create_autospec(StartTrigger, instance=True, spec_set=True)
        trig.start_trigger.cfg_dig_edge_start_trig.side_effect = \
            lambda *a, **k: self.events.append(("trigger", name))
        t.triggers = trig
        t.export_signals = mock.create_autospec(ExportSignals, instance=True, spec_set=True)
        t.out_stream = mock.create_autospec(OutStream, instance=True, spec_set=True)
        t.out_stream.total_samp_per_chan_generated = 0
        t.is_task_done.return_value = False
        t.read.side_effect = self._read
        if name == "bls-static-ao":
            t.write.side_effect = lambda *a, **k: self._static_write(t, *a, **k)
        for what in ("start", "stop", "close"):
            getattr(t, what).side_effect = (lambda w: lambda: self.events.append((w, name)))(what)
        self.tasks.setdefault(name, []).append(t)
        return t

    def _read(self, number_of_samples_per_channel=None, timeout=10.0):
        if number_of_samples_per_channel is None:
            return self.ai_volts
        time.sleep(0.01)  # a volume takes time to arrive on a real board
        return [self.ai_volts] * number_of_samples_per_channel

    def last(self, name: str):
        return self.tasks[name][-1]


def config(**kw) -> NidaqBoardConfig:
    base = dict(device="Dev1", piezo_um_per_volt=UM_PER_V, piezo_offset_v=OFFSET_V,
                piezo_range_v=(0.0, 10.5), settle_s=0.0)
    base.update(kw)
    return NidaqBoardConfig(**base)


def scan(**kw) -> VolumeScan:
    base = dict(volume_rate_hz=5.0, n_planes=10, z_start_um=20.0, z_stop_um=80.0,
                exposure_s=0.004, skip_start=2, skip_end=1, sample_rate_hz=20_000.0,
                piezo_lag_s=0.008,
                galvos=(GalvoCalibration(0.1, 0.02), GalvoCalibration(-0.3, 0.025)))
    base.update(kw)
    return VolumeScan(**base)


def ao_write_data(task) -> np.ndarray:
    (args, kwargs), = task.write.call_args_list
    assert kwargs.get("auto_start") is False
    return np.asarray(args[0])


def test_ao_task_plays_the_scan_waveforms_sample_for_sample():
    ni = FakeNI()
    board = NidaqScanBoard(config(camera_output="do"), task_factory=ni)
    s = scan()
    w = s.waveforms()
    board.start_volumes(s, 3)
    ao = ni.last("bls-scan-ao")
    data = ao_write_data(ao)
    assert data.shape == (3, w.n_samples)
    np.testing.assert_allclose(data[0], OFFSET_V + w.piezo_um / UM_PER_V, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(data[1:], w.galvo_v)
    assert [call.args[0] for call in ao.ao_channels.add_ao_voltage_chan.call_args_list] == \
        ["Dev1/ao0", "Dev1/ao1", "Dev1/ao2"]
    ao.timing.cfg_samp_clk_timing.assert_called_once_with(
        20_000.0, source="", sample_mode=c.AcquisitionType.FINITE,
        samps_per_chan=3 * w.n_samples)
    assert ao.out_stream.regen_mode == c.RegenerationMode.ALLOW_REGENERATION
    assert ao.out_stream.output_buf_size == w.n_samples
    # camera line: the camera waveform itself, clocked and started by the AO task
    do = ni.last("bls-scan-camera")
    assert do.do_channels.add_do_chan.call_args.args[0] == "Dev1/port0/line0"
    assert ao_write_data(do).tolist() == w.camera.tolist()
    assert do.timing.cfg_samp_clk_timing.call_args.kwargs["source"] == "/Dev1/ao/SampleClock"
    do.triggers.start_trigger.cfg_dig_edge_start_trig.assert_called_once_with(
        "/Dev1/ao/StartTrigger")


def test_counter_pulse_train_reproduces_the_camera_waveform():
    ni = FakeNI()
    board = NidaqScanBoard(config(camera_output="counter", camera_terminal="/Dev1/PFI12"),
                           task_factory=ni)
    s = scan()
    w = s.waveforms()
    board.start_volumes(s, None)
    co = ni.last("bls-scan-camera")
    chan_call = co.co_channels.add_co_pulse_chan_ticks.call_args
    assert chan_call.args[:2] == ("Dev1/ctr0", "/Dev1/ao/SampleClock")
    assert co.co_channels.add_co_pulse_chan_ticks.return_value.co_pulse_term == "/Dev1/PFI12"
    specs = co.write.call_args.args[0]
    assert all(isinstance(x, CtrTick) for x in specs)
    # rebuild the output line for 3 volumes: idle low for the delay, then high/low specs
    n_vol = 3
    line = [0] * chan_call.kwargs["initial_delay"]
    while len(line) < n_vol * w.n_samples:
        for spec in specs:
            line += [1] * spec.high_tick + [0] * spec.low_tick
    np.testing.assert_array_equal(np.array(line[: n_vol * w.n_samples], dtype=bool),
                                  np.tile(w.camera, n_vol))
    co.timing.cfg_implicit_timing.assert_called_once_with(
        sample_mode=c.AcquisitionType.CONTINUOUS, samps_per_chan=len(specs))
    ao = ni.last("bls-scan-ao")
    assert ao.timing.cfg_samp_clk_timing.call_args.kwargs["sample_mode"] == \
        c.AcquisitionType.CONTINUOUS
    assert board.running and board.volumes_done == 0
    ao.out_stream.total_samp_per_chan_generated = 5 * w.n_samples + 7
    assert board.volumes_done == 5


def test_slaves_are_armed_before_the_master_starts():
    ni = FakeNI()
    ni.follow = True
    board = NidaqScanBoard(config(piezo_ai_channel="ai0", export_start_trigger="/Dev1/PFI1"),
                           task_factory=ni)
    board.start_volumes(scan(), 2)
    ev = [e for e in ni.events if e[1].startswith("bls-scan")]
    starts = [name for what, name in ev if what == "start"]
    assert starts[-1] == "bls-scan-ao"
    assert set(starts[:-1]) == {"bls-scan-ai", "bls-scan-camera"}
    # every slave's trigger is configured before anything starts
    first_start = ev.index(("start", starts[0]))
    triggered = {name for what, name in ev[:first_start] if what == "trigger"}
    assert triggered == {"bls-scan-ai", "bls-scan-camera"}
    ni.last("bls-scan-ao").export_signals.export_signal.assert_called_once_with(
        c.Signal.START_TRIGGER, "/Dev1/PFI1")
    ai = ni.last("bls-scan-ai")
    ai.ai_channels.add_ai_voltage_chan.assert_called_once_with("Dev1/ai0", min_val=-10.0,
                                                               max_val=10.0)
    board.stop()
    assert not board.running


def test_prepositions_at_the_first_sample_before_arming():
    ni = FakeNI()
    board = NidaqScanBoard(config(), task_factory=ni)
    s = scan()
    w = s.waveforms()
    board.start_volumes(s, 1)
    static = ni.last("bls-static-ao")
    written = static.write.call_args
    assert written.kwargs["auto_start"] is True
    expected = [OFFSET_V + w.piezo_um[0] / UM_PER_V, *w.galvo_v[:, 0]]
    np.testing.assert_allclose(written.args[0], expected, atol=1e-12)
    names = [n for what, n in ni.events if what == "close"]
    assert names.index("bls-static-ao") < [n for w_, n in ni.events if w_ == "start"].index(
        "bls-scan-ao")


def test_preposition_waits_for_the_monitor_and_says_when_it_never_arrives():
    ni = FakeNI()  # monitor stuck at 0 V: the piezo never gets there
    board = NidaqScanBoard(config(piezo_ai_channel="ai0", preposition_timeout_s=0.1),
                           task_factory=ni)
    with pytest.raises(RuntimeError, match=r"piezo did not reach .* Dev1/ai0"):
        board.start_volumes(scan(), 1)
    assert "bls-scan-ao" not in ni.tasks


def test_stop_stops_and_releases_every_task():
    ni = FakeNI()
    ni.follow = True
    board = NidaqScanBoard(config(piezo_ai_channel="ai0"), task_factory=ni)
    board.start_volumes(scan(), None)
    board.stop()
    for name in ("bls-scan-ao", "bls-scan-camera", "bls-scan-ai"):
        t = ni.last(name)
        t.stop.assert_called_once_with()
        t.close.assert_called_once_with()
    assert not board.running


def test_an_ni_error_names_device_channel_and_setting_and_releases_tasks():
    ni = FakeNI()
    real_factory = ni.__call__

    def factory(name):
        t = real_factory(name)
        if name == "bls-scan-ao":
            t.ao_channels.add_ao_voltage_chan.side_effect = [
                None, DaqError("Physical channel specified does not exist on this device.",
                               -200170, task_name=name)]
        return t

    board = NidaqScanBoard(config(), task_factory=factory)
    with pytest.raises(NidaqError) as err:
        board.start_volumes(scan(), 1)
    msg = str(err.value)
    assert "Dev1" in msg and "Dev1/ao1" in msg and "range" in msg and "-200170" in msg
    assert "does not exist" in msg
    ni.last("bls-scan-ao").close.assert_called_once_with()
    assert not board.running


def test_a_sample_clock_error_names_the_rate():
    ni = FakeNI()

    def factory(name):
        t = ni(name)
        if name == "bls-scan-ao":
            t.timing.cfg_samp_clk_timing.side_effect = DaqError(
                "Requested value is not a supported value for this property.", -200077)
        return t

    board = NidaqScanBoard(config(), task_factory=factory)
    with pytest.raises(NidaqError, match=r"sample_rate_hz=20000.*-200077"):
        board.start_volumes(scan(), 1)


def test_without_the_ni_driver_the_error_says_so():
    board = NidaqScanBoard(config())  # the real nidaqmx.Task: no driver on this machine
    with pytest.raises(NidaqError, match=r"NI board Dev1: creating task .*(driver|NI-DAQmx)"):
        board.park(30.0, (GalvoCalibration(), GalvoCalibration()))


def test_a_board_polled_while_absent_is_logged_once_and_again_after_it_worked(caplog):
    """The piezo's position is polled several times a second: an absent board (no
    NI-DAQmx here) filled the IOC's log with the same ERROR 4-5 times a second. Every
    poll still fails with the reason; the log says it once, and again once the board
    has answered in between."""
    ni = FakeNI()
    absent = [True]

    def factory(name):
        if absent[0]:
            return nidaqmx.Task(name)  # the real class: no driver on this machine
        return ni(name)

    board = NidaqScanBoard(config(piezo_ai_channel="ai0", piezo_ai_um_per_volt=40.0),
                           task_factory=factory)
    with caplog.at_level("ERROR", logger="beamline_ls.hardware.nidaq_scanboard"):
        for _ in range(20):
            with pytest.raises(NidaqError, match="creating task 'bls-static-ai'"):
                board.read_piezo_um()
        assert len(caplog.records) == 1
        absent[0] = False
        assert board.read_piezo_um() == pytest.approx(0.0)
        absent[0] = True
        with pytest.raises(NidaqError):
            board.read_piezo_um()
        assert len(caplog.records) == 2


def test_out_of_range_waveform_is_refused_before_any_task():
    ni = FakeNI()
    board = NidaqScanBoard(config(piezo_range_v=(0.0, 1.0)), task_factory=ni)
    with pytest.raises(ValueError, match=r"Dev1/ao0.*piezo_range_v"):
        board.start_volumes(scan(), 1)
    assert ni.tasks == {}


def test_park_writes_static_voltages_and_reads_the_monitor():
    ni = FakeNI()
    board = NidaqScanBoard(config(piezo_ai_channel="ai0", piezo_ai_um_per_volt=40.0),
                           task_factory=ni)
    cals = (GalvoCalibration(0.1, 0.02), GalvoCalibration(-0.3, 0.025))
    board.park(40.0, cals)
    np.testing.assert_allclose(ni.last("bls-static-ao").write.call_args.args[0],
                               [OFFSET_V + 1.0, 0.1 + 0.8, -0.3 + 1.0])
    ni.ai_volts = 0.5  # monitor says 20 um: not there yet
    assert not board.is_parked()
    ni.ai_volts = 1.0
    assert board.is_parked()


def test_piezo_and_galvo_positioners_move_through_static_writes():
    ni = FakeNI()
    board = NidaqScanBoard(config(), task_factory=ni)
    piezo = NidaqAxis(board, "ao0", "piezo")
    galvo = NidaqAxis(board, "ao2", "galvo")
    assert piezo.limits == (-10.0, 410.0)
    piezo.move(100.0)
    ao = ni.last("bls-static-ao")
    ao.ao_channels.add_ao_voltage_chan.assert_called_once_with("Dev1/ao0", min_val=0.0,
                                                               max_val=10.5)
    assert ao.write.call_args.args[0] == pytest.approx(OFFSET_V + 2.5)
    assert piezo.position() == 100.0 and not piezo.is_moving()
    galvo.move(-1.5)
    assert ni.last("bls-static-ao").write.call_args.args[0] == -1.5
    with pytest.raises(ValueError, match="outside limits"):
        galvo.move(11.0)
    board.start_volumes(scan(), None)
    with pytest.raises(RuntimeError, match="stop the scan"):
        piezo.move(50.0)
    assert piezo.is_moving()
    board.stop()
