"""Where a gating trigger goes: the wire into the fluorescence camera's trigger input.

Backends (``[hardware.trigger_box] backend``):

- ``sim``: the software scheduler fires at the decided time on the host clock; the
  pulse reaches only a simulated camera.
- ``serial``: a trigger box with its own clock (:mod:`.trigger_box`) is told the time
  and fires it in hardware; the serial round trip runs on a worker thread.
- ``nidaq``: the software scheduler fires an NI output at the decided time: one
  counter pulse (``output = "counter"``) or a digital line raised and lowered
  (``output = "do"``). Software-timed: the pulse leaves when the scheduler's thread
  wakes, a few hundred µs late at worst on an idle host; each fire records its actual
  time.

Every output reports each request as accepted / late / error (``report``) and every
pulse that left with its actual time (``fired``), so a simulated camera wired to it
exposes at that actual time and the record says when the trigger really fired.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from beamline_ls.clock import Clock
from beamline_ls.gating.scheduler import TriggerReport, TriggerScheduler
from beamline_ls.hardware.trigger_box import TriggerBox

log = logging.getLogger(__name__)

ReportFn = Callable[[TriggerReport, str], None]
FiredFn = Callable[[float, float, object], None]  # (scheduled, actual, tag)


class TriggerOutput(ABC):
    """A gating trigger output; ``start`` wires the callbacks and starts timing."""

    def __init__(self) -> None:
        self._report: ReportFn = lambda report, source: None
        self._fired: FiredFn = lambda t, actual, tag: None

    @property
    @abstractmethod
    def name(self) -> str: ...

    def start(self, report: ReportFn, fired: FiredFn) -> None:
        self._report, self._fired = report, fired

    def stop(self) -> None:  # noqa: B027 (optional hook)
        """Stop timing; pending triggers are dropped."""

    @abstractmethod
    def submit(self, t_fire: float, tag: object) -> None:
        """Fire at absolute time ``t_fire`` (host clock); returns at once."""

    @abstractmethod
    def clear(self) -> None:
        """Drop every trigger not fired yet (an aborted scan must not expose again)."""

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release threads and hardware."""


class ScheduledOutput(TriggerOutput):
    """The host's trigger scheduler; ``pulse`` (if any) sends the edge to hardware."""

    def __init__(self, clock: Clock, pulse: Callable[[], None] | None = None,
                 name: str = "software scheduler") -> None:
        super().__init__()
        self.clock = clock
        self.pulse = pulse
        self._name = name
        self.scheduler = TriggerScheduler(self, clock=clock, min_lead_s=0.0,
                                          on_report=lambda r: self._report(r, "software"))

    @property
    def name(self) -> str:
        return self._name

    def start(self, report: ReportFn, fired: FiredFn) -> None:
        super().start(report, fired)
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def submit(self, t_fire: float, tag: object) -> None:
        self.scheduler.schedule(t_fire, tag)

    def clear(self) -> None:
        self.scheduler.clear()

    # TriggerSink: called by the scheduler's thread when the time has come
    def fire(self, t_scheduled: float, tag: object) -> None:
        if self.pulse is not None:
            try:
                self.pulse()
            except Exception as exc:  # noqa: BLE001 - reported, the scan sees no exposure
                log.error("%s: the trigger pulse failed: %s", self._name, exc)
                self._report(TriggerReport(t_scheduled, self.clock.now(), "error", tag,
                                           f"the trigger pulse failed: {exc}"), "software")
                return
        # the edge has left by the time the output call returns: its latest moment
        self._fired(t_scheduled, self.clock.now(), tag)


class BoxOutput(TriggerOutput):
    """A hardware-timed trigger box: told the time, it fires on its own clock."""

    def __init__(self, box: TriggerBox, clock: Clock) -> None:
        super().__init__()
        self.box = box
        self.clock = clock
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="gating-trigger-box")

    @property
    def name(self) -> str:
        return f"trigger box on {self.box.link.port}"

    def start(self, report: ReportFn, fired: FiredFn) -> None:
        """Map the clocks now: a box that is absent or silent fails here, in the
        link's words (gating is not enabled), not at a scan's first trigger."""
        self.box.sync()
        super().start(report, fired)

    def submit(self, t_fire: float, tag: object) -> None:
        # the serial round trip runs on its own thread: analysis never waits on the box
        self._worker.submit(self._send, t_fire, tag)

    def _send(self, t_fire: float, tag: object) -> None:
        try:
            report = self.box.schedule(t_fire, tag)
        except RuntimeError as exc:  # serial fault: reported, retried on the next beat
            log.error("trigger box: %s", exc)
            report = TriggerReport(t_fire, self.clock.now(), "error", tag, str(exc))
        self._report(report, "trigger box")
        if report.status == "accepted":
            self._fired(t_fire, t_fire, tag)  # the box fires on its clock at t_fire

    def clear(self) -> None:
        try:
            self.box.clear()
        except RuntimeError as exc:
            log.error("trigger box: could not clear pending triggers: %s", exc)

    def close(self) -> None:
        self._worker.shutdown(wait=False)


@dataclass(frozen=True)
class NidaqTriggerConfig:
    """``[hardware.trigger_box]`` with ``backend = "nidaq"``."""

    device: str = "Dev1"
    output: str = "counter"  # counter | do
    counter: str = "ctr1"
    do_line: str = "port0/line1"
    pulse_width_s: float = 1e-4


class NidaqPulse:
    """One trigger pulse per call on an NI board, from a task opened once.

    ``counter``: a single-pulse counter task (high for ``pulse_width_s``), restarted
    per trigger. ``do``: a digital line raised and lowered by two static writes.
    """

    def __init__(self, config: NidaqTriggerConfig,
                 task_factory: Callable[[str], Any] | None = None) -> None:
        self.config = config
        self._new_task = task_factory or _default_task
        self._task: Any = None
        self._lock = threading.Lock()

    @property
    def terminal(self) -> str:
        c = self.config
        return f"{c.device}/{c.counter if c.output == 'counter' else c.do_line}"

    def open(self) -> None:
        """Create the task (on first use; building drivers touches no hardware)."""
        if self._task is not None:
            return
        task = self._new_task("bls-gating-trigger")
        try:
            if self.config.output == "counter":
                from nidaqmx.constants import TaskMode

                width = self.config.pulse_width_s
                task.co_channels.add_co_pulse_chan_time(
                    self.terminal, low_time=width, high_time=width, initial_delay=0.0)
                # committed once: each trigger's stop/start then only re-arms the counter
                # (an uncommitted task is verified and reserved again at every start,
                # milliseconds that count as the pulse leaving late)
                task.control(TaskMode.TASK_COMMIT)
            else:
                task.do_channels.add_do_chan(self.terminal)
                task.start()
                task.write(False)
        except Exception:
            task.close()
            raise
        self._task = task

    def __call__(self) -> None:
        with self._lock:
            self.open()
            if self.config.output == "counter":
                self._task.stop()  # a finished single pulse must be stopped to restart
                self._task.start()
            else:
                self._task.write(True)
                self._task.write(False)

    def close(self) -> None:
        with self._lock:
            if self._task is not None:
                self._task.close()
                self._task = None


def _default_task(name: str) -> Any:
    import nidaqmx

    return nidaqmx.Task(name)


class NidaqOutput(ScheduledOutput):
    """The software scheduler firing an NI counter or digital line."""

    def __init__(self, config: NidaqTriggerConfig, clock: Clock,
                 task_factory: Callable[[str], Any] | None = None) -> None:
        self.device = NidaqPulse(config, task_factory)
        super().__init__(clock, self.device, f"NI {config.output} {self.device.terminal}")

    def start(self, report: ReportFn, fired: FiredFn) -> None:
        self.device.open()  # a missing board fails enable, with NI's own words
        super().start(report, fired)

    def close(self) -> None:
        self.device.close()

