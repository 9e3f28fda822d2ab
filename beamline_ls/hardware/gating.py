"""Gating system: brightfield camera -> analyzer -> trigger scheduler -> fluorescence
camera trigger. One interface, a simulated backend (this module); a real trigger box
plugs in as the scheduler's sink without changing the IOC, devices or plans.

Runs entirely inside the IOC process: brightfield frames never cross Channel Access.
Decisions are computed for every frame while enabled; only *armed* triggers reach the
fluorescence camera. Each fired trigger leaves a record (time, predicted phase, period,
reference id, and on the simulator the heart's true phase) that the camera IOC attaches
to the frame exposed by that trigger.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from beamline_ls.frame import Frame
from beamline_ls.gating import (
    AdaptiveReferenceUpdater,
    Decision,
    GatingAnalyzer,
    GatingConfig,
    TriggerReport,
    TriggerScheduler,
)
from beamline_ls.gating.warmup import warm_up
from beamline_ls.hardware.trigger_box import TriggerBox
from beamline_ls.sim.microscope import SimMicroscope

log = logging.getLogger(__name__)

_NO_REQUEST = object()



def predicted_phase_at(decision: Decision, t: float) -> float:
    """Phase the analyzer's fit predicts at absolute time ``t``: the target at the
    predicted time, advancing 2 pi per period (differs from the target for panic
    triggers fired at now + latency)."""
    if not (math.isfinite(decision.predicted_time) and math.isfinite(decision.period_s)):
        return decision.target_phase
    dt = t - decision.predicted_time
    return (decision.target_phase + 2 * math.pi * dt / decision.period_s) % (2 * math.pi)


@dataclass(frozen=True)
class TriggerRecord:
    trigger_time: float
    gating_phase: float  # predicted phase at the trigger time (= target), reference coords
    period_s: float
    reference_id: int
    status: str  # accepted | late | error
    true_phase: float = math.nan  # simulator only: the heart's own phase mid-exposure
    late_retries: int = 0  # late answers for this trigger before it was accepted
    source: str = "software"  # software scheduler or the trigger box

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class GatingStatus:
    enabled: bool = False
    state: str = "off"
    period_s: float = math.nan
    period_frames: float = math.nan
    phase: float = math.nan
    target_phase: float = math.nan
    reference_id: int = -1
    frames: int = 0
    frames_skipped: int = 0  # brightfield frames dropped because analysis fell behind
    fired: int = 0
    late: int = 0
    armed: int = 0


class GatingDriver(ABC):
    """What every gating backend provides (sim here; a trigger box behind the
    scheduler's sink for real hardware)."""

    @abstractmethod
    def enable(self, on: bool, frame_rate_hz: float = 80.0) -> None: ...

    @abstractmethod
    def arm(self, n: int) -> None:
        """Let the next ``n`` decided triggers through to the fluorescence camera."""

    @abstractmethod
    def set_target_phase(self, phase: float | None) -> None: ...

    @abstractmethod
    def set_latency(self, latency_s: float) -> None: ...

    @abstractmethod
    def request_refresh(self) -> None: ...

    @abstractmethod
    def status(self) -> GatingStatus: ...

    @abstractmethod
    def last_records(self, n: int = 5) -> list[TriggerRecord]: ...

    @abstractmethod
    def annotate(self, frame: Frame) -> None:
        """Attach the record of the trigger that exposed ``frame`` to ``frame.extra``."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release threads and hardware."""


class SimGatingSystem(GatingDriver):
    """Brightfield camera on the simulated heart feeding the real analyzer; fired
    triggers become pulses on the simulated fluorescence camera's trigger line."""

    BRIGHTFIELD_SHAPE = (128, 128)
    BRIGHTFIELD_EXPOSURE_S = 0.001

    def __init__(self, microscope: SimMicroscope, config: GatingConfig | None = None,
                 trigger_box: TriggerBox | None = None):
        if microscope.heart is None:
            raise ValueError("the simulated microscope has no heart to gate on")
        self.m = microscope
        self.config = config or GatingConfig()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = GatingStatus()
        self._records: collections.OrderedDict[float, TriggerRecord] = collections.OrderedDict()
        self._pending_target: float | None | object = _NO_REQUEST
        self._refresh = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="gating-adaptive")
        self.analyzer = self._new_analyzer()
        self.trigger_box = trigger_box
        self._box_worker = ThreadPoolExecutor(1, thread_name_prefix="gating-trigger-box")
        self._late_streak = 0
        self.scheduler = TriggerScheduler(self, clock=microscope.clock,
                                          min_lead_s=0.0, on_report=self._on_report)

    def _new_analyzer(self) -> GatingAnalyzer:
        # folding and alignment run on the worker: the frame loop never waits on them
        return GatingAnalyzer(self.config, AdaptiveReferenceUpdater(executor=self._executor),
                              executor=self._executor)

    # -- GatingDriver --------------------------------------------------------------
    def enable(self, on: bool, frame_rate_hz: float = 80.0) -> None:
        if on and self._thread is None:
            if not 5.0 <= frame_rate_hz <= 500.0:
                raise ValueError(f"frame rate must be in [5, 500] Hz, got {frame_rate_hz}")
            self._stop.clear()
            self.analyzer = self._new_analyzer()
            with self._lock:
                self._status = GatingStatus(enabled=True, state="searching")
            self.scheduler.start()
            self._thread = threading.Thread(target=self._run, args=(frame_rate_hz,),
                                            name="gating-brightfield", daemon=True)
            self._thread.start()
        elif not on and self._thread is not None:
            self._stop.set()
            self._thread.join(5)
            self._thread = None
            self.scheduler.stop()
            with self._lock:
                self._status.enabled = False
                self._status.state = "off"
                self._status.armed = 0

    def arm(self, n: int) -> None:
        """Let ``n`` more triggers through; ``arm(0)`` also cancels triggers already
        accepted but not yet fired (an aborted scan must not expose again)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._status.armed = n
        if n == 0:
            self.scheduler.clear()
            self.m.camera_trigger.cancel_after(self.m.clock.now())
            if self.trigger_box is not None:
                try:
                    self.trigger_box.clear()
                except RuntimeError as exc:
                    log.error("trigger box: could not clear pending triggers: %s", exc)

    def set_target_phase(self, phase: float | None) -> None:
        """``None`` returns to the automatic target (end of the most moving half beat)."""
        if phase is not None and not 0 <= phase <= 2 * math.pi:
            raise ValueError(f"target phase must be in [0, 2pi] rad, got {phase}")
        with self._lock:
            self._pending_target = None if phase is None else phase % (2 * math.pi)

    def set_latency(self, latency_s: float) -> None:
        if not 0.001 <= latency_s <= 0.2:
            raise ValueError(f"latency must be in [0.001, 0.2] s, got {latency_s}")
        self.config.latency_s = latency_s

    def request_refresh(self) -> None:
        with self._lock:
            self._refresh = True

    def status(self) -> GatingStatus:
        with self._lock:
            return GatingStatus(**asdict(self._status))

    def last_records(self, n: int = 5) -> list[TriggerRecord]:
        with self._lock:
            return list(self._records.values())[-n:]

    MATCH_TOLERANCE_S = 0.002  # a frame belongs to the trigger within 2 ms of its start

    def annotate(self, frame: Frame) -> None:
        with self._lock:
            rec = self._records.get(frame.timestamp)
            if rec is None:  # a camera stamps its own time: nearest recent trigger
                for t in reversed(self._records):
                    if abs(t - frame.timestamp) <= self.MATCH_TOLERANCE_S:
                        rec = self._records[t]
                        break
                    if frame.timestamp - t > 1.0:
                        break
        if rec is None:
            return
        heart = self.m.heart
        true = math.nan
        if heart is not None:
            true = float(heart.true_phase_wrapped(frame.timestamp + frame.exposure / 2))
        frame.extra.update(trigger_time=rec.trigger_time, gating_phase=rec.gating_phase,
                           period_s=rec.period_s, reference_id=float(rec.reference_id),
                           true_phase=true, late_retries=float(rec.late_retries))

    # -- TriggerSink ---------------------------------------------------------------
    def fire(self, t_scheduled: float, tag: object) -> None:
        """Called by the scheduler at the trigger time: pulse the camera's input."""
        self.m.camera_trigger.schedule([t_scheduled])

    # -- internals -----------------------------------------------------------------
    def _on_report(self, report: TriggerReport, source: str = "software") -> None:
        decision: Decision = report.tag  # type: ignore[assignment]
        rec = TriggerRecord(report.t_requested, predicted_phase_at(decision, report.t_requested),
                            decision.period_s,
                            decision.reference_id, report.status,
                            late_retries=self._late_streak, source=source)
        with self._lock:
            if report.status == "accepted":
                self._status.fired += 1
                self._late_streak = 0
            else:  # a late (or failed) trigger does not fire: re-arm for the next beat
                self._status.late += 1
                self._status.armed += 1
                self._late_streak += 1
                log.info("%s trigger for %.6f (decided at %.6f): re-armed", report.status,
                         report.t_requested, report.t_at_request)
            self._records[report.t_requested] = rec
            while len(self._records) > 10_000:
                self._records.popitem(last=False)

    def _run(self, fps: float) -> None:
        clock = self.m.clock
        heart = self.m.heart
        assert heart is not None
        warm_up(self.BRIGHTFIELD_SHAPE, np.uint8)
        t0 = clock.now() + 0.01
        k = 0
        while not self._stop.is_set():
            t = t0 + k / fps
            if not clock.sleep_until(t + self.BRIGHTFIELD_EXPOSURE_S, self._stop):
                break
            image = heart.render_brightfield(t, self.BRIGHTFIELD_SHAPE,
                                             self.BRIGHTFIELD_EXPOSURE_S)
            frame = Frame(image, k, t, self.BRIGHTFIELD_EXPOSURE_S)
            k += 1
            self._apply_requests()
            try:
                decision = self.analyzer.process(frame)
            except Exception:
                log.exception("gating analyzer failed on frame %d", frame.frame_id)
            else:
                self._update_status(decision)
                if decision.fire_time is not None:
                    with self._lock:
                        armed = self._status.armed
                        if armed > 0:
                            self._status.armed = armed - 1
                    if armed > 0:
                        self._send(decision)
            k = self._next_frame(k, t, fps)

    def _next_frame(self, k: int, t: float, fps: float) -> int:
        """Index of the next frame to analyse, skipping frames the analysis fell
        behind on, as a camera's driver hands over its newest frame.

        Locked, a frame more than two intervals old only yields late triggers (the
        decision comes after the moment it chose), so the analysis jumps to the newest
        frame: under a sustained overload it works on every other frame rather than
        falling further and further behind. While a period search runs (also for a
        new reference under lock) it needs evenly spaced frames, so only a stall of
        over a second is skipped. The
        analyzer treats a skip as missing frames (`GatingAnalyzer` gap handling).
        """
        behind = int((self.m.clock.now() - t - self.BRIGHTFIELD_EXPOSURE_S) * fps)
        searching = self.analyzer.searching
        if behind <= (fps if searching else 2):
            return k
        with self._lock:
            self._status.frames_skipped += behind
        level = logging.WARNING if searching else logging.DEBUG
        log.log(level, "gating analysis fell behind: skipped %d brightfield frames", behind)
        return k + behind

    def _send(self, decision: Decision) -> None:
        """Hand an armed trigger to the box (which keeps time and answers accepted or
        late) or to the software scheduler."""
        assert decision.fire_time is not None
        if self.trigger_box is None:
            self.scheduler.schedule(decision.fire_time, decision)
            return
        # the serial round trip runs on its own thread: analysis never waits on the box
        self._box_worker.submit(self._send_to_box, decision)

    def _send_to_box(self, decision: Decision) -> None:
        assert decision.fire_time is not None and self.trigger_box is not None
        try:
            report = self.trigger_box.schedule(decision.fire_time, decision)
        except RuntimeError as exc:  # serial fault: reported, retried on the next beat
            log.error("trigger box: %s", exc)
            report = TriggerReport(decision.fire_time, self.m.clock.now(), "error", decision)
        if report.status == "accepted":
            # the box's output is wired to the simulated camera's trigger input
            self.m.camera_trigger.schedule([decision.fire_time])
        self._on_report(report, source="trigger box")

    def _apply_requests(self) -> None:
        with self._lock:
            target, self._pending_target = self._pending_target, _NO_REQUEST
            refresh, self._refresh = self._refresh, False
        if target is None:  # back to automatic: the default rule on the current reference
            self.config.target_phase = None
            ref = self.analyzer.reference
            if ref is not None:
                self.analyzer.set_target_phase(ref.default_target_phase())
        elif target is not _NO_REQUEST:
            self.config.target_phase = float(target)
            self.analyzer.set_target_phase(float(target))
        if refresh:
            self.analyzer.request_refresh()

    def _update_status(self, d: Decision) -> None:
        with self._lock:
            st = self._status
            st.state = d.state
            st.frames += 1
            st.period_s = d.period_s
            st.period_frames = d.period_frames
            st.phase = d.phase
            st.target_phase = d.target_phase
            st.reference_id = d.reference_id

    def close(self) -> None:
        self.enable(False)
        self._executor.shutdown(wait=False)
        self._box_worker.shutdown(wait=False)
