"""Gating system: brightfield frame source -> analyzer -> trigger output -> the
fluorescence camera's trigger input, assembled from the configuration.

The source (simulated heart, pylon camera, replayed TIFF; :mod:`.brightfield`) and the
output (software scheduler, trigger box, NI counter or line; :mod:`.trigger_output`)
are parts; :class:`GatingSystem` is the same for all of them. It runs inside the IOC
process: brightfield frames never cross Channel Access. Decisions are computed for
every frame while enabled; only *armed* triggers reach the output. Each trigger leaves
a record (scheduled and actual fire time, predicted phase, period, reference id, and
with a simulated heart its true phase) that the camera IOC attaches to the frame that
trigger exposed.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from abc import ABC, abstractmethod
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from beamline_ls.clock import Clock
from beamline_ls.frame import GATING_FIELDS, Frame
from beamline_ls.gating import (
    AdaptiveReferenceUpdater,
    Decision,
    GatingAnalyzer,
    GatingConfig,
    TriggerReport,
)
from beamline_ls.gating.warmup import warm_up
from beamline_ls.hardware.brightfield import FrameSource
from beamline_ls.hardware.trigger_output import TriggerOutput
from beamline_ls.sim.trigger_line import TriggerLine
from beamline_ls.thread_priority import lower_this_thread_priority

log = logging.getLogger(__name__)

_NO_REQUEST = object()
#: analysed frames whose phase :meth:`GatingDriver.phase_history` keeps (>= 2.5 s at
#: 100 frames/s: a client polling at a few Hz misses none)
HISTORY_FRAMES = 256



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
    late_retries: int = 0  # late answers for this trigger before it was accepted
    source: str = "software"  # software scheduler or the trigger box
    fired_at: float = math.nan  # when the pulse actually left (the box: its own time)
    brightfield_frame: int = -1  # the gating camera's number of the deciding frame
    brightfield_time: float = math.nan  # that frame's exposure start (host clock)

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
    frames_lost: int = 0  # brightfield frames the camera numbered but never delivered
    failure: str = ""  # why the brightfield source stopped on its own (its words)
    #: why the latest analysed frame decided no trigger ("waiting", "placing the target
    #: on the folded reference", ...); "" when it decided one
    reason: str = ""
    fired: int = 0  # pulses that left the output
    late: int = 0
    #: pulses that left the output later than their time by more than
    #: ``GatingSystem.LEFT_LATE_RAD`` of the heartbeat (a loaded host's software timer,
    #: a slow output call): they fired, but their frames are off the target phase
    left_late: int = 0
    armed: int = 0
    #: the trigger output failed every trigger (at least ``OUTPUT_FAILURES`` of them, over
    #: at least ``OUTPUT_FAILING_S``) with no pulse leaving since: its name and last
    #: error; "" while it works
    output_error: str = ""


class GatingDriver(ABC):
    """What the gating IOC drives."""

    #: per-frame fields :meth:`annotate` adds (``true_phase`` only on a simulated heart)
    fields: tuple[str, ...] = ()
    #: what the brightfield source and the trigger output are, for status PVs
    description: str = ""
    #: the brightfield frame rate in use since the last enable (a replay keeps its own)
    frame_rate_hz: float = math.nan

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

    def latest_frame(self) -> Frame | None:
        """The newest brightfield frame analysed (for a live view; None before one)."""
        return None

    def phase_history(self) -> np.ndarray:
        """(n, 2) array of (exposure start, wrapped phase) of the latest analysed
        frames, oldest first, at most ``HISTORY_FRAMES``: what a phase-lock plot draws."""
        return np.empty((0, 2))

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release threads and hardware."""


class GatingSystem(GatingDriver):
    """A brightfield source feeding the analyzer; armed triggers go to the output.

    ``camera_line``: the trigger input of a *simulated* fluorescence camera. Every
    pulse the output actually sends also lands there at its actual time (for a real
    box or NI line, the wire would carry it), so the simulated camera exposes when the
    trigger really fired, late or jittered as it was. None with a real camera.
    """

    MATCH_TOLERANCE_S = 0.002  # a frame belongs to the trigger fired within 2 ms of it
    #: the output is called failed once this many triggers in a row failed (no pulse
    #: between) over at least ``OUTPUT_FAILING_S``: one failure is a glitch retried on
    #: the next beat, and a host stalled for a second (a loaded machine, a swap storm)
    #: fails a few in a row without the box being broken; a dead box or line fails every
    #: trigger, so the scan still hears of it within a few seconds
    OUTPUT_FAILURES = 3
    OUTPUT_FAILING_S = 2.0
    #: a pulse that leaves this much of a heartbeat after its time has moved its frame
    #: off the target phase by more than the gating's own accuracy at 40 frames/s
    LEFT_LATE_RAD = 0.05
    QUEUE_FRAMES = 1000  # frames waiting for analysis, at most (older ones are skipped)

    def __init__(self, source: FrameSource, output: TriggerOutput, clock: Clock,
                 config: GatingConfig | None = None,
                 camera_line: TriggerLine | None = None) -> None:
        self.source = source
        self.output = output
        self.clock = clock
        self.camera_line = camera_line
        self.config = config or GatingConfig()
        self.fields = GATING_FIELDS if source.true_phase is not None else tuple(
            f for f in GATING_FIELDS if f != "true_phase")
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._status = GatingStatus()
        self._records: collections.OrderedDict[float, TriggerRecord] = collections.OrderedDict()
        self._pending_target: float | None | object = _NO_REQUEST
        self._refresh = False
        self._executor = ThreadPoolExecutor(  # refolds may wait; triggers may not
            1, thread_name_prefix="gating-adaptive", initializer=lower_this_thread_priority)
        self.analyzer = self._new_analyzer()
        self._late_streak = 0
        self._failures = 0  # failed triggers since the last pulse left
        self._failing_since = math.nan  # host time of the first of those failures
        self._queue: collections.deque[Frame] = collections.deque()
        self._ready = threading.Condition()
        self._last_id = -1
        self._latest: Frame | None = None
        self._history: collections.deque[tuple[float, float]] = collections.deque(
            maxlen=HISTORY_FRAMES)

    @property
    def description(self) -> str:  # type: ignore[override]
        """'source -> output', as the devices name themselves once open."""
        return f"{self.source.name} -> {self.output.name}"

    def _new_analyzer(self) -> GatingAnalyzer:
        # folding and alignment run on the worker: the frame loop never waits on them
        return GatingAnalyzer(self.config, AdaptiveReferenceUpdater(executor=self._executor),
                              executor=self._executor)

    # -- GatingDriver --------------------------------------------------------------
    def enable(self, on: bool, frame_rate_hz: float = 80.0) -> None:
        """Start (or stop) the source, the analysis thread and the output. A source or
        output that cannot start fails here with its own words."""
        if on and self._thread is None:
            if not 5.0 <= frame_rate_hz <= 500.0:
                raise ValueError(f"frame rate must be in [5, 500] Hz, got {frame_rate_hz}")
            # opens the camera here: one that is absent fails enable, in its words
            shape, dtype = self.source.frame_shape, self.source.dtype
            frame_rate_hz = self.source.rate(frame_rate_hz)  # a replay keeps its own
            # and the output: a trigger box that does not answer, or an NI board that
            # is not there, fails enable (before any scan opens a run), the state
            # left Off, not at the first trigger of a scan
            self.output.start(self._on_report, self._on_fired)
            self._stop.clear()
            self.analyzer = self._new_analyzer()
            with self._lock:
                self._status = GatingStatus(enabled=True, state="searching")
                self._history.clear()
                self._reset_failures()
            with self._ready:
                self._queue.clear()
                self._last_id = -1
            self._thread = threading.Thread(target=self._run,
                                            args=(frame_rate_hz, shape, dtype),
                                            name="gating-analysis", daemon=True)
            self._thread.start()
            self.frame_rate_hz = frame_rate_hz
            try:
                self.source.start(frame_rate_hz, self._on_frame)
            except Exception:
                self._halt()
                with self._lock:
                    self._status.enabled = False
                    self._status.state = "off"
                raise
        elif not on and self._thread is not None:
            self.source.stop()
            self._halt()
            with self._lock:
                self._status.enabled = False
                self._status.state = "off"
                self._status.armed = 0

    def _halt(self) -> None:
        self._stop.set()
        with self._ready:
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self.output.stop()

    def arm(self, n: int) -> None:
        """Let ``n`` more triggers through; ``arm(0)`` also cancels triggers already
        accepted but not yet fired (an aborted scan must not expose again)."""
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            self._status.armed = n
            # failures before a pause or a new scan are no streak with those after it
            self._reset_failures()
        if n == 0:
            self.output.clear()
            if self.camera_line is not None:
                self.camera_line.cancel_after(self.clock.now())

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
            st = GatingStatus(**asdict(self._status))
        st.failure = self.source.failure
        return st

    def last_records(self, n: int = 5) -> list[TriggerRecord]:
        with self._lock:
            return list(self._records.values())[-n:]

    def annotate(self, frame: Frame) -> None:
        """The record of the trigger that fired within ``MATCH_TOLERANCE_S`` of the
        frame's exposure start (the camera stamps its own time)."""
        rec = None
        with self._lock:
            for rec_i in reversed(self._records.values()):
                fired = rec_i.fired_at
                if not math.isfinite(fired):
                    continue
                if abs(fired - frame.timestamp) <= self.MATCH_TOLERANCE_S:
                    rec = rec_i
                    break
                if frame.timestamp - fired > 1.0:
                    break
        if rec is None:
            return
        frame.extra.update(trigger_time=rec.trigger_time, fired_at=rec.fired_at,
                           gating_phase=rec.gating_phase, period_s=rec.period_s,
                           reference_id=float(rec.reference_id),
                           late_retries=float(rec.late_retries),
                           brightfield_frame=float(rec.brightfield_frame),
                           brightfield_time=rec.brightfield_time)
        if self.source.true_phase is not None:
            frame.extra["true_phase"] = self.source.true_phase(
                frame.timestamp + frame.exposure / 2)

    # -- callbacks from the source and the output ------------------------------------
    def _on_frame(self, frame: Frame) -> None:
        """From the source's thread: queue the frame, count the camera's gaps."""
        with self._ready:
            if self._last_id >= 0 and frame.frame_id > self._last_id + 1:
                with self._lock:
                    self._status.frames_lost += frame.frame_id - self._last_id - 1
            self._last_id = frame.frame_id
            if len(self._queue) >= self.QUEUE_FRAMES:
                self._queue.popleft()
                with self._lock:
                    self._status.frames_skipped += 1
            self._queue.append(frame)
            self._ready.notify()

    def _on_report(self, report: TriggerReport, source: str = "software") -> None:
        decision: Decision = report.tag  # type: ignore[assignment]
        rec = TriggerRecord(report.t_requested, predicted_phase_at(decision, report.t_requested),
                            decision.period_s, decision.reference_id, report.status,
                            late_retries=self._late_streak, source=source,
                            brightfield_frame=decision.frame_id,
                            brightfield_time=decision.timestamp)
        with self._lock:
            if report.status == "accepted":  # counted as fired when the pulse leaves
                self._late_streak = 0
            else:  # a late (or failed) trigger does not fire: re-arm for the next beat
                self._status.late += 1
                self._status.armed += 1
                self._late_streak += 1
                log.info("%s trigger for %.6f (decided at %.6f): re-armed", report.status,
                         report.t_requested, report.t_at_request)
            if report.status == "error":
                if self._failures == 0:
                    self._failing_since = report.t_at_request
                self._failures += 1
                if (self._failures >= self.OUTPUT_FAILURES
                        and report.t_at_request - self._failing_since >= self.OUTPUT_FAILING_S):
                    self._status.output_error = (f"{self.output.name}: "
                                                 f"{report.detail or 'the trigger failed'}")
            self._records[report.t_requested] = rec
            while len(self._records) > 10_000:
                self._records.popitem(last=False)

    def _reset_failures(self) -> None:
        """Forget the failed triggers counted towards calling the output broken
        (caller holds ``_lock``)."""
        self._failures = 0
        self._failing_since = math.nan

    def _on_fired(self, t_scheduled: float, t_actual: float, tag: object) -> None:
        """From the output: the pulse left at ``t_actual``."""
        period_s = getattr(tag, "period_s", math.nan)
        delay_s = t_actual - t_scheduled
        left_late = (math.isfinite(period_s)
                     and delay_s > self.LEFT_LATE_RAD / (2 * math.pi) * period_s)
        if left_late:
            log.info("trigger for %.6f left %.1f ms late (%.2f rad of the beat): its frame "
                     "is off phase", t_scheduled, delay_s * 1e3,
                     2 * math.pi * delay_s / period_s)
        with self._lock:
            self._status.fired += 1
            self._status.left_late += left_late
            self._reset_failures()
            self._status.output_error = ""
            rec = self._records.get(t_scheduled)
            if rec is not None:
                self._records[t_scheduled] = replace(rec, fired_at=t_actual)
        if self.camera_line is not None:
            self.camera_line.schedule([t_actual])

    # -- analysis thread -----------------------------------------------------------------
    def _run(self, fps: float, shape: tuple[int, int], dtype: np.dtype) -> None:
        # compile every analysis path before the first frame counts (seconds on a
        # fresh process); frames that arrived meanwhile were never to be analysed
        warm_up(shape, dtype)
        with self._ready:
            self._queue.clear()
        while not self._stop.is_set():
            frame = self._next_frame(fps)
            if frame is None:
                continue
            self._apply_requests()
            try:
                decision = self.analyzer.process(frame)
            except Exception:
                log.exception("gating analyzer failed on frame %d", frame.frame_id)
                continue
            self._latest = frame  # a reference swap: the live view never holds analysis
            self._update_status(decision)
            if decision.fire_time is not None:
                with self._lock:
                    armed = self._status.armed
                    if armed > 0:
                        self._status.armed = armed - 1
                if armed > 0:
                    self.output.submit(decision.fire_time, decision)

    def _next_frame(self, fps: float) -> Frame | None:
        """The next frame to analyse, skipping frames the analysis fell behind on, as a
        camera's driver hands over its newest frame.

        Locked, a frame more than two intervals old only yields late triggers (the
        decision comes after the moment it chose), so the analysis jumps to the newest
        frame: under a sustained overload it works on every other frame rather than
        falling further and further behind. While a period search runs (also for a
        new reference under lock) it needs evenly spaced frames, so only a backlog of
        over a second is skipped. The analyzer treats a skip as missing frames
        (`GatingAnalyzer` gap handling).
        """
        with self._ready:
            if not self._queue:
                self._ready.wait(0.5)
                if not self._queue:
                    return None
            searching = self.analyzer.searching
            behind = len(self._queue) - 1
            if behind <= (fps if searching else 2):
                return self._queue.popleft()
            frame = self._queue.pop()
            self._queue.clear()
        with self._lock:
            self._status.frames_skipped += behind
        level = logging.WARNING if searching else logging.DEBUG
        log.log(level, "gating analysis fell behind: skipped %d brightfield frames", behind)
        return frame

    def _apply_requests(self) -> None:
        with self._lock:
            target, self._pending_target = self._pending_target, _NO_REQUEST
            refresh, self._refresh = self._refresh, False
        if target is None:  # automatic: the default rule on the current reference
            if self.config.target_phase is not None:  # already automatic: kept as is
                self.config.target_phase = None
                self.analyzer.use_default_target()
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
            st.reason = "" if d.fire_time is not None else d.reason
            self._history.append((d.timestamp, d.phase))

    def latest_frame(self) -> Frame | None:
        return self._latest

    def phase_history(self) -> np.ndarray:
        with self._lock:
            rows = list(self._history)
        return np.array(rows, dtype=float).reshape(-1, 2)

    def close(self) -> None:
        self.enable(False)
        self.output.close()
        self.source.close()
        self._executor.shutdown(wait=False)
