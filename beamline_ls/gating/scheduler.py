"""Fire triggers at absolute times on an injectable clock; never block the frame path.

The published Raspberry Pi code busy-waited until the fire time and stalled the
camera. Here `TriggerScheduler.schedule(t)` only records the request and returns a
report at once: ``accepted`` when ``t`` is at least ``min_lead_s`` in the future on the
scheduler's clock, ``late`` otherwise (a late trigger is not fired unless
``fire_late``), like a hardware timing box that answers accepted/late. Firing happens
- on a `VirtualClock`: event-driven, whenever the clock is advanced past a due time
  (replay, tests and benchmarks run as fast as possible and stay deterministic);
- on a `RealTimeClock`: in the scheduler's own thread, which sleeps until the next due
  time (``start()``/``stop()``).
The sink (`TriggerSink.fire`) is where the simulator's fluorescence camera or a serial
trigger box plugs in; it receives the scheduled absolute time.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from beamline_ls.clock import Clock, RealTimeClock, VirtualClock

logger = logging.getLogger(__name__)


class TriggerSink(Protocol):
    def fire(self, t_scheduled: float, tag: object) -> None: ...


@dataclass
class RecordingSink:
    """A sink that remembers (scheduled time, actual clock time, tag) of every fire."""

    clock: Clock | None = None
    fired: list[tuple[float, float, object]] = field(default_factory=list)

    def fire(self, t_scheduled: float, tag: object) -> None:
        t = self.clock.now() if self.clock is not None else t_scheduled
        self.fired.append((t_scheduled, t, tag))


@dataclass(frozen=True, slots=True)
class TriggerReport:
    t_requested: float
    t_at_request: float  # clock time when schedule() was called
    status: str  # "accepted" | "late" | "error" (the output failed: ``detail`` says how)
    tag: object = None
    detail: str = ""


class TriggerScheduler:
    """Absolute-time trigger scheduler; see module docstring."""

    def __init__(self, sink: TriggerSink, clock: Clock | None = None,
                 min_lead_s: float = 0.0, fire_late: bool = False,
                 on_report: Callable[[TriggerReport], None] | None = None) -> None:
        self.sink = sink
        self.clock: Clock = clock if clock is not None else RealTimeClock()
        self.min_lead_s = min_lead_s
        self.fire_late = fire_late
        self.on_report = on_report
        self.reports: collections.deque[TriggerReport] = collections.deque(maxlen=10_000)
        self._heap: list[tuple[float, int, object]] = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._running = False
        if isinstance(self.clock, VirtualClock):
            self.clock.subscribe(self._fire_due)

    # -------------------------------------------------------------- scheduling
    def schedule(self, t_fire: float, tag: object = None) -> TriggerReport:
        """Request a trigger at absolute time ``t_fire``; returns immediately."""
        now = self.clock.now()
        status = "accepted" if t_fire - now >= self.min_lead_s else "late"
        rep = TriggerReport(t_fire, now, status, tag)
        self.reports.append(rep)
        if self.on_report is not None:
            self.on_report(rep)
        if status == "accepted" or self.fire_late:
            with self._cv:
                heapq.heappush(self._heap, (t_fire, next(self._seq), tag))
                self._cv.notify()
        else:
            logger.debug("late trigger request for %.6f at %.6f", t_fire, now)
        return rep

    def clear(self) -> int:
        """Drop every trigger not fired yet; return how many."""
        with self._cv:
            n = len(self._heap)
            self._heap.clear()
            self._cv.notify()
        return n

    @property
    def pending(self) -> int:
        with self._cv:
            return len(self._heap)

    def _pop_due(self, now: float) -> list[tuple[float, object]]:
        due = []
        with self._cv:
            while self._heap and self._heap[0][0] <= now:
                t, _, tag = heapq.heappop(self._heap)
                due.append((t, tag))
        return due

    def _fire_due(self, now: float) -> None:
        for t, tag in self._pop_due(now):
            self.sink.fire(t, tag)

    # -------------------------------------------------------------- real time
    def start(self) -> None:
        """Start the firing thread (real-time clocks)."""
        if self._thread is not None:
            return
        self._running = True
        self._thread = threading.Thread(target=self._run, name="trigger-scheduler",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cv:
            self._running = False
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._running:
                    return
                if not self._heap:
                    self._cv.wait(timeout=0.5)
                    continue
                delay = self._heap[0][0] - self.clock.now()
                if delay > 0.002:
                    # sleep most of the way, wake early for new, earlier requests
                    self._cv.wait(timeout=delay - 0.001)
                    continue
            # final approach outside the lock: short spin for sub-ms accuracy
            with self._cv:
                t_next = self._heap[0][0] if self._heap else None
            while t_next is not None and self.clock.now() < t_next:
                time.sleep(0)
            self._fire_due(self.clock.now())
