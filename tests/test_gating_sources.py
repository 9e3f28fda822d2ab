"""Gating assembled from its parts: brightfield sources (pylon's camera emulator playing
a recorded zebrafish heartbeat, a recorded TIFF replayed live, the simulated heart) and
trigger outputs (software scheduler, NI counter or line at the nidaqmx seam).

The pylon tests run pypylon's own camera emulator (``PYLON_CAMEMU=1``): the recorded
heartbeat from ``../shared/data/heartbeats`` is rendered with a known true phase into
image files that the emulator plays at the set frame rate; every frame the gating sees
is matched back to the rendered frame it is, so triggers are scored against the true
phase of the heart the emulated camera was looking at.
"""

from __future__ import annotations

import math
import os
import threading
import time
from unittest import mock

import numpy as np
import pytest
import tifffile
from conftest import wait_for

os.environ.setdefault("PYLON_CAMEMU", "1")  # before pylon initialises

from beamline_ls.clock import RealTimeClock  # noqa: E402
from beamline_ls.frame import GATING_FIELDS, Frame  # noqa: E402
from beamline_ls.gating import corpus  # noqa: E402
from beamline_ls.gating.score import wrap_pm_pi  # noqa: E402
from beamline_ls.hardware.brightfield import FrameSource, TiffReplaySource  # noqa: E402
from beamline_ls.hardware.gating import GatingSystem  # noqa: E402
from beamline_ls.hardware.trigger_output import (  # noqa: E402
    NidaqOutput,
    NidaqTriggerConfig,
    ScheduledOutput,
)

FPS = 40.0
SECONDS = 30.0


@pytest.fixture(scope="module")
def heart_video(tmp_path_factory):
    """A recorded heartbeat rendered as a live video (rate wander, irregular beats,
    noise), one image file per frame, with the true phase of every frame."""
    case = next(c for c in corpus.hearts() if c.name.endswith("0001"))
    video = case.make(3, SECONDS + 1)
    times = np.arange(int(SECONDS * FPS)) / FPS
    frames = video.render(times)
    truth = np.mod(video.true_phase(times), 2 * math.pi)
    folder = tmp_path_factory.mktemp("heart-images")
    for i, f in enumerate(frames):
        tifffile.imwrite(folder / f"frame{i:05d}.tif", f)
    stack = folder.parent / "heart.tif"
    tifffile.imwrite(stack, frames, photometric="minisblack")
    return folder, stack, frames, truth, video


class Tap(FrameSource):
    """Passes a source's frames on and remembers, per frame number, when the host got
    it and which rendered frame it shows (found by its bytes)."""

    def __init__(self, inner: FrameSource, frames: np.ndarray) -> None:
        self.inner = inner
        self.index = {f.tobytes(): i for i, f in enumerate(frames)}
        self.seen: dict[int, tuple[float, int]] = {}
        self.true_phase = inner.true_phase

    name = property(lambda self: self.inner.name)
    frame_shape = property(lambda self: self.inner.frame_shape)
    dtype = property(lambda self: self.inner.dtype)
    failure = property(lambda self: self.inner.failure)

    def start(self, fps, sink):
        def tap(frame: Frame) -> None:
            self.seen[frame.frame_id] = (time.time(),
                                         self.index.get(frame.image.tobytes(), -1))
            sink(frame)
        self.inner.start(fps, tap)

    def stop(self):
        self.inner.stop()

    def close(self):
        self.inner.close()


def _true_phase_at_triggers(system: GatingSystem, tap: Tap, truth_of, fps: float):
    """True heart phase at each fired trigger. The emulator makes each frame in
    software when it sends it, so the heart it shows is the rendered frame's at the
    moment the host got it: the phase at a trigger is that of the last frame received
    before it, advanced by the time since (the test's own clock, not the gating's
    stamps)."""
    got = np.array([t for t, _ in tap.seen.values()])
    shown = np.array([i for _, i in tap.seen.values()])
    assert np.all(shown >= 0), "the emulator delivered an image that was never rendered"
    out = []
    for rec in system.last_records(10_000):
        if rec.status == "accepted" and math.isfinite(rec.fired_at):
            k = int(np.searchsorted(got, rec.fired_at)) - 1
            out.append(truth_of(shown[k] / fps + (rec.fired_at - got[k])))
    return np.array(out)


def _arrival_scatter(tap: Tap, t0: float, t1: float) -> float:
    """SD (s) of the host's arrival times of the frames received between t0 and t1
    about the straight line of arrival time against frame number."""
    items = sorted((fid, t) for fid, (t, _) in tap.seen.items() if t0 - 1.0 <= t <= t1)
    ids = np.array([i for i, _ in items], float)
    got = np.array([t for _, t in items])
    resid = got - np.polyval(np.polyfit(ids, got, 1), ids)
    return float(resid.std())


def _circ_sd(phases: np.ndarray) -> float:
    r = abs(np.exp(1j * phases).mean())
    return math.sqrt(-2 * math.log(r))


def _gate(system: GatingSystem, n_triggers: int, lock_s: float = 20.0) -> None:
    system.enable(True, FPS)
    try:
        wait_for(lambda: system.status().state == "locked", lock_s, "a lock")
        system.arm(n_triggers)
        wait_for(lambda: system.status().fired >= n_triggers, 30,
                 f"{n_triggers} triggers to fire")
    finally:
        system.enable(False)


@pytest.mark.slow
def test_pylon_emulator_playing_a_recorded_heart_gates_on_its_true_phase(heart_video):
    from beamline_ls.hardware.pylon_camera import PylonSource

    folder, _, frames, truth, video = heart_video
    h, w = frames.shape[1:]
    camera = PylonSource(exposure_us=1000, roi=(0, 0, w, h), image_filename=str(folder))
    tap = Tap(camera, frames)
    system = GatingSystem(tap, ScheduledOutput(RealTimeClock()), RealTimeClock())
    assert system.fields == tuple(f for f in GATING_FIELDS if f != "true_phase")
    try:
        _gate(system, 15)
        st = system.status()
        true = _true_phase_at_triggers(
            system, tap, lambda t: float(np.mod(video.true_phase(t), 2 * math.pi)), FPS)
    finally:
        system.close()
    assert "Emulation" in system.description
    assert len(true) >= 15
    # the pylon frame numbers are consecutive: none lost
    ids = sorted(tap.seen)
    assert st.frames_lost == 0 and ids == list(range(ids[0], ids[-1] + 1))
    # the same heart phase at every trigger. The 40 frames/s bound is 0.05 rad
    # on an ideal camera; this one makes each frame in software and is stamped when the
    # host gets it, so the host's scheduling delays move both the gating's stamps and
    # this test's truth. Measured here as the scatter of the arrival times about a
    # steady frame rate over the triggering, they widen the bound: once for the
    # frames the prediction is made from, once for the frame the truth is read from.
    # Capped at 0.2 rad, so that no amount of load hides a gating gone wrong.
    fired = [r.fired_at for r in system.last_records(10_000)
             if r.status == "accepted" and math.isfinite(r.fired_at)]
    jitter_s = _arrival_scatter(tap, min(fired), max(fired))
    period_s = float(st.period_s)
    timing = 2 * math.pi * jitter_s / period_s
    bound = min(math.sqrt(0.1 ** 2 + 2 * timing ** 2), 0.2)
    print(f"true-phase SD at the triggers: {_circ_sd(true):.3f} rad over {len(true)}; "
          f"arrival scatter {jitter_s * 1e3:.2f} ms = {timing:.3f} rad; bound {bound:.3f}")
    assert _circ_sd(true) < bound, (true, jitter_s)


def test_the_emulator_plays_images_at_their_own_size(heart_video):
    from beamline_ls.hardware.pylon_camera import PylonSource

    folder, _, frames, *_ = heart_video
    camera = PylonSource(image_filename=str(folder))
    try:
        assert camera.frame_shape == frames.shape[1:]
    finally:
        camera.close()


def test_pylon_settings_fail_with_the_camera_the_setting_and_the_range():
    from beamline_ls.hardware.pylon_camera import PylonSource

    with pytest.raises(ValueError, match=r"Emulation \(0815-0000\): ExposureTime: cannot "
                                         r"set 1000000000.0; allowed: \[1.0, 10000000.0\]"):
        PylonSource(exposure_us=1e9).open()
    with pytest.raises(RuntimeError, match=r"Basler camera 123: not found \(cameras "
                                           r"present: 0815-0000\)"):
        PylonSource(serial="123").open()
    with pytest.raises(ValueError, match="pixel_format must be one of"):
        PylonSource(pixel_format="RGB8")


def test_gating_on_a_missing_camera_fails_to_enable_with_the_cameras_words():
    from beamline_ls.hardware.pylon_camera import PylonSource

    system = GatingSystem(PylonSource(serial="4711"), ScheduledOutput(RealTimeClock()),
                          RealTimeClock())
    try:
        with pytest.raises(RuntimeError, match=r"Basler camera 4711: not found \(cameras "
                                               r"present: 0815-0000\)"):
            system.enable(True, 40.0)
        assert system.status().state == "off" and not system.status().enabled
    finally:
        system.close()


def test_without_the_emulator_switched_on_the_message_says_how():
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "PYLON_CAMEMU"}
    code = ("from beamline_ls.hardware.pylon_camera import PylonSource\n"
            "PylonSource(image_filename='/data/frames').open()")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0
    assert ("Basler camera (first found): not found (cameras present: none); pylon's "
            "camera emulator appears only with PYLON_CAMEMU=1") in out.stderr


def test_a_replayed_tiff_locks_and_carries_no_simulator_field(heart_video):
    _, stack, frames, truth, video = heart_video
    source = TiffReplaySource(stack, FPS)
    system = GatingSystem(source, ScheduledOutput(RealTimeClock()), RealTimeClock())
    try:
        _gate(system, 5)
        rec = [r for r in system.last_records(100) if r.status == "accepted"][-1]
        frame = Frame(np.zeros((4, 4), np.uint16), 0, rec.fired_at, 0.002)
        system.annotate(frame)
    finally:
        system.close()
    assert "replay of heart.tif" in system.description
    assert frame.extra["fired_at"] == rec.fired_at
    assert frame.extra["brightfield_frame"] == rec.brightfield_frame
    assert "true_phase" not in frame.extra and "true_phase" not in system.fields


def test_a_replay_enabled_at_another_rate_says_the_rate_it_plays_at(epics, heart_video,
                                                                     tmp_path):
    """A recording keeps its own frame rate: FrameRate read 40 while frames came at 80
    a second (said only in the IOC's log, at INFO). Now Enable sets FrameRate to the
    rate in use and says so."""
    from conftest import private_microscope

    _, stack, *_ = heart_video
    config = tmp_path / "microscope.toml"
    config.write_text(f'[hardware.brightfield]\nbackend = "tiff"\npath = "{stack}"\n'
                      f"fps = {FPS:g}\n")
    with private_microscope(epics, "TIFFRATE:", tmp_path / "data", config) as (_, scope, _s):
        gating = scope.gating
        try:
            gating.frame_rate.set(2 * FPS).wait(10)
            gating.enable.set("On").wait(30)
            assert gating.frame_rate.get(use_monitor=False) == pytest.approx(FPS)
            assert gating.message.get(use_monitor=False) == \
                f"gating on at {FPS:g} frames/s, the source's own rate"
        finally:
            gating.enable.set("Off").wait(30)


def test_a_missing_recording_is_named():
    with pytest.raises(ValueError, match="no such file: /nowhere/heart.tif"):
        TiffReplaySource("/nowhere/heart.tif", 40.0)


# -- the simulated camera exposes when the trigger actually fired ----------------------
def test_the_simulated_camera_exposes_when_a_slow_output_actually_fires():
    """An output that takes 4 ms to send its pulse: the simulated fluorescence camera
    exposes 4 ms after the scheduled time, the frame says so, and its true phase is
    the heart's at that later exposure."""
    from beamline_ls.hardware.camera import CameraSettings, SimCamera
    from beamline_ls.hardware.factory import build_drivers

    drivers = build_drivers()
    m = drivers.microscope
    system = drivers.gating
    system.output = ScheduledOutput(m.clock, pulse=lambda: time.sleep(0.004))
    camera = SimCamera(m)
    frames: list[Frame] = []
    camera.start(CameraSettings(exposure_s=0.002, roi=(0, 0, 128, 128),
                                trigger_mode="External"), 6, frames.append)
    try:
        _gate(system, 6)
        wait_for(lambda: len(frames) >= 6, 10, "6 triggered frames")
    finally:
        camera.stop()
        drivers.close()
    for f in frames:
        system.annotate(f)
    delay = np.array([f.timestamp - f.extra["trigger_time"] for f in frames])
    assert np.all(delay >= 0.004), delay  # never at the scheduled time
    assert np.all(delay < 0.05), delay
    assert all(f.extra["fired_at"] == f.timestamp for f in frames)
    true = np.array([f.extra["true_phase"] for f in frames])
    at_exposure = np.array([m.heart.true_phase_wrapped(f.timestamp + 0.001)
                            for f in frames])
    assert np.allclose(wrap_pm_pi(true - at_exposure), 0, atol=1e-9)


def test_pulses_that_leave_late_are_counted_as_off_phase():
    """An output whose pulse leaves 40 ms after its time (a loaded host's timer, a slow
    output call): every trigger fires, and every one is counted as having left late
    (TriggersLeftLate_RBV), since 40 ms is ~0.6 rad of this heart's beat. They were
    counted as fired on time, only the frames' fired_at said otherwise."""
    from beamline_ls.hardware.factory import build_drivers

    drivers = build_drivers()
    system = drivers.gating
    system.output = ScheduledOutput(drivers.microscope.clock, pulse=lambda: time.sleep(0.04))
    try:
        _gate(system, 6)
    finally:
        drivers.close()
    st = system.status()
    assert st.fired >= 6
    assert st.left_late == st.fired, (st.left_late, st.fired)


def test_failures_before_a_pause_make_no_streak_with_one_after_it():
    """The output is called broken only when every trigger failed for 2 s (at least 3
    of them). Two that failed before a pause (Arm 0) and one seconds after the resume
    are no such streak: counted as one, resuming a paused gated scan after a glitch
    ended it at once as "the trigger output fails". Without the pause, the same three
    are one."""
    from beamline_ls.gating.analyzer import Decision
    from beamline_ls.gating.scheduler import TriggerReport
    from beamline_ls.hardware.factory import build_drivers

    drivers = build_drivers()
    system = drivers.gating
    # what the output reports back (the callback it is started with) for a failed FIRE
    failed = [TriggerReport(t, t, "error", Decision(frame_id=0, timestamp=t, state="locked",
                                                     period_s=0.4), "no reply within 0.2 s")
              for t in (100.0, 100.4, 105.0)]
    try:
        system.arm(1)
        for report in failed[:2]:
            system._on_report(report)
        system.arm(0)  # the RunEngine pauses
        system.arm(1)  # and resumes
        system._on_report(failed[2])
        assert system.status().output_error == ""
        system.arm(1)
        for report in failed:
            system._on_report(report)
        assert "no reply within 0.2 s" in system.status().output_error
    finally:
        drivers.close()


# -- NI trigger output at the nidaqmx seam ------------------------------------------------
class FakeNI:
    """Tasks built with create_autospec from the real nidaqmx classes."""

    def __init__(self) -> None:
        import nidaqmx
        from nidaqmx.task.collections import COChannelCollection, DOChannelCollection

        self.events: list[tuple] = []
        self.tasks = []
        self._classes = (nidaqmx.Task, COChannelCollection, DOChannelCollection)

    def __call__(self, name: str):
        task_cls, co_cls, do_cls = self._classes
        t = mock.create_autospec(task_cls, instance=True)
        t.co_channels = mock.create_autospec(co_cls, instance=True)
        t.do_channels = mock.create_autospec(do_cls, instance=True)
        for what in ("start", "stop", "close"):
            getattr(t, what).side_effect = (
                lambda w: lambda: self.events.append((w, time.perf_counter())))(what)
        t.control.side_effect = lambda action: self.events.append(("control", action))
        t.write.side_effect = lambda data, **kw: self.events.append(("write", data))
        self.tasks.append(t)
        return t


@pytest.mark.parametrize("output", ["counter", "do"])
def test_an_ni_output_sends_one_pulse_per_trigger_at_its_time(output):
    ni = FakeNI()
    clock = RealTimeClock()
    out = NidaqOutput(NidaqTriggerConfig(device="Dev2", output=output, counter="ctr3",
                                         do_line="port1/line4"), clock, ni)
    fired: list[tuple[float, float]] = []
    done = threading.Event()

    def on_fired(t, actual, tag):
        fired.append((t, actual))
        if len(fired) == 3:
            done.set()

    out.start(lambda r, s: None, on_fired)
    try:
        t0 = clock.now() + 0.05
        for k in range(3):
            out.submit(t0 + 0.02 * k, None)
        assert done.wait(5)
    finally:
        out.stop()
        out.close()
    (task,) = ni.tasks
    if output == "counter":
        task.co_channels.add_co_pulse_chan_time.assert_called_once_with(
            "Dev2/ctr3", low_time=1e-4, high_time=1e-4, initial_delay=0.0)
        starts = [e for e in ni.events if e[0] == "start"]
        assert len(starts) == 3  # one single-pulse generation per trigger
        # committed once, before the first: a start then only re-arms the counter
        from nidaqmx.constants import TaskMode

        assert [e for e in ni.events if e[0] == "control"] == [("control",
                                                                TaskMode.TASK_COMMIT)]
        assert ni.events.index(("control", TaskMode.TASK_COMMIT)) < ni.events.index(starts[0])
    else:
        task.do_channels.add_do_chan.assert_called_once_with("Dev2/port1/line4")
        writes = [e[1] for e in ni.events if e[0] == "write"]
        assert writes == [False] + [True, False] * 3  # idle low, then three pulses
    assert ("close", mock.ANY) in ni.events
    lateness = np.array([a - t for t, a in fired])
    assert np.all(lateness >= 0) and np.all(lateness < 0.05)


def test_an_ni_output_that_cannot_open_fails_enable_with_nis_words(heart_video):
    """Refused in NI's words and left Off: the state stayed Searching (forever, with
    Enable Off) after the refusal."""
    import nidaqmx.errors

    def no_board(name):
        raise nidaqmx.errors.DaqError("Device identifier is invalid: Dev9", -200220)

    _, stack, *_ = heart_video
    out = NidaqOutput(NidaqTriggerConfig(device="Dev9"), RealTimeClock(), no_board)
    system = GatingSystem(TiffReplaySource(stack, FPS), out, RealTimeClock())
    try:
        with pytest.raises(nidaqmx.errors.DaqError, match="Device identifier is invalid"):
            system.enable(True, FPS)
        assert system.status().state == "off" and not system.status().enabled
    finally:
        system.close()


@pytest.mark.parametrize("port", ["missing", "silent"])
def test_a_trigger_box_that_is_absent_or_silent_fails_enable_before_any_scan(
        heart_video, port):
    """A serial trigger box on a port that is not there, or a box that does not answer:
    gating is not enabled, in the link's words. Before, Enable succeeded, the scan
    locked, opened its run and failed at its first trigger, leaving a failed run."""
    import pty

    from beamline_ls.hardware.serial_link import SerialLink
    from beamline_ls.hardware.trigger_box import TriggerBox
    from beamline_ls.hardware.trigger_output import BoxOutput

    _, stack, *_ = heart_video
    fds: list[int] = []
    if port == "missing":
        path, why = "/dev/ttyNOPE0", "cannot open serial port /dev/ttyNOPE0"
    else:  # a pty nobody answers on: a box switched off behind its adapter
        controller, device = pty.openpty()
        fds += [controller, device]
        path, why = os.ttyname(device), "SYNC"
    link = SerialLink("trigger box", path, 115200, timeout_s=0.3, read_terminator=b"\n",
                      write_terminator=b"\n")
    output = BoxOutput(TriggerBox(link), RealTimeClock())
    system = GatingSystem(TiffReplaySource(stack, FPS), output, RealTimeClock())
    try:
        with pytest.raises(RuntimeError, match=why):
            system.enable(True, FPS)
        assert system.status().state == "off" and not system.status().enabled
    finally:
        system.close()
        link.close()
        for fd in fds:
            os.close(fd)


# -- assembled from the configuration ----------------------------------------------------
def test_the_configuration_assembles_gating_without_a_simulated_heart(heart_video):
    from beamline_ls.hardware.factory import build_drivers

    _, stack, *_ = heart_video
    d = build_drivers({"brightfield": {"backend": "tiff", "path": str(stack), "fps": 40},
                       "trigger_box": {"backend": "nidaq", "device": "Dev1",
                                       "output": "do"}}, task_factory=FakeNI())
    try:
        assert d.microscope is not None and d.microscope.heart is None
        assert "true_phase" not in d.gating.fields
        assert d.gating.description == (f"replay of heart.tif ({int(SECONDS * FPS)} frames "
                                        "at 40 frames/s) -> NI do Dev1/port0/line1")
        # the simulated fluorescence camera still sees the pulses the NI line sends
        assert d.gating.camera_line is d.microscope.camera_trigger
    finally:
        d.close()
    with pytest.raises(ValueError, match=r"hardware.brightfield.fps: must be in"):
        build_drivers({"brightfield": {"backend": "tiff", "path": str(stack), "fps": 0}})
    with pytest.raises(ValueError, match=r"hardware.brightfield.roi: must be \[x, y"):
        build_drivers({"brightfield": {"backend": "pylon", "roi": [0, 0, 64]}})
    with pytest.raises(ValueError, match=r"hardware.trigger_box.output: must be one of"):
        build_drivers({"trigger_box": {"backend": "nidaq", "output": "analog"}})
    # said when the IOC starts, naming the setting (it came at the first Enable as
    # "[Errno 2] No such file or directory", no setting named)
    with pytest.raises(ValueError, match=r"hardware.brightfield.image_filename: no such "
                                         r"file or directory: /nowhere/frames"):
        build_drivers({"brightfield": {"backend": "pylon", "image_filename": "/nowhere/frames"}})
    with pytest.raises(ValueError, match=r"hardware.brightfield.path: .* is a directory"):
        build_drivers({"brightfield": {"backend": "tiff", "path": str(stack.parent),
                                       "fps": 40}})


def test_check_hardware_reports_the_gating_camera(tmp_path, heart_video):
    from beamline_ls.hardware import check

    folder, *_ = heart_video
    config = tmp_path / "microscope.toml"
    config.write_text(f'[hardware.brightfield]\nbackend = "pylon"\nroi = [0, 0, 208, 150]\n'
                      f'image_filename = "{folder}"\n')
    out = _Lines()
    assert check.main(["--config", str(config)], out=out) == 0
    line = next(s for s in out.lines if "brightfield" in s)
    assert line.startswith("  [ok] brightfield: Emulation (0815-0000) answered: 208x150")
    assert any(s.startswith("  [ok] camera: simulated") for s in out.lines)
    config.write_text('[hardware.brightfield]\nbackend = "pylon"\nserial = "4711"\n')
    out = _Lines()
    assert check.main(["--config", str(config)], out=out) == 1
    assert any("[NO] brightfield" in s and "4711: not found" in s for s in out.lines)


class _Lines:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, s: str) -> None:
        self.lines += [x for x in s.splitlines() if x]

    def flush(self) -> None:
        pass

