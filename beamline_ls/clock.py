"""The one clock of the system: absolute time in epoch seconds.

Everything that keeps time (the simulated microscope, the gating analyzer and its
trigger scheduler, the trigger box's clock map, camera frame stamps) reads the same
kind of clock, so a trigger decided on a brightfield frame, fired by the scheduler and
seen by the fluorescence camera are on one timebase.

- :class:`RealTimeClock`: epoch seconds ticking with a monotonic, high-resolution
  source and kept on the wall clock (slewed when close, stepped when a wall-clock step
  is large). Live use, IOCs and the demo.
- :class:`VirtualClock`: moves only when someone sleeps on it or advances it, and tells
  its listeners (the trigger scheduler fires what became due). Replays, benchmarks and
  deterministic tests run as fast as the machine allows with identical timestamps.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

logger = logging.getLogger(__name__)


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> bool:
        """Block until ``t``; return False if ``stop`` was set first."""
        ...


class RealTimeClock:
    """Epoch seconds that tick at the monotonic clock's rate and follow the wall clock.

    Between wall-clock corrections the value advances with ``time.perf_counter``
    (monotonic, sub-µs), so intervals (a heart period, a trigger lead) are exact. It
    also stays on the wall clock, because other processes, other clock instances and
    the documents' ``time.time()`` stamps must agree with it:

    - a small disagreement (NTP slewing, a step under ``step_s``) is slewed away at
      ``slew`` seconds per second, so the value never jumps and never goes backwards;
    - a larger step of the wall clock (NTP's first sync on a freshly booted machine, a
      VM resumed, an operator setting the date) is followed at once and logged as a
      WARNING, because a clock anchored once would stamp every later frame off by the
      step for the life of the process. A step backwards is followed too: agreeing
      with every other process matters more than never repeating a second.
    """

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.perf_counter,
                 step_s: float = 0.25, slew: float = 2e-3) -> None:
        self._wall, self._mono = wall, monotonic
        self.step_s, self.slew = float(step_s), float(slew)
        self._lock = threading.Lock()
        self._last_mono = self._mono()
        self._offset = self._wall() - self._last_mono

    def now(self) -> float:
        step = 0.0
        with self._lock:
            m = self._mono()
            error = self._wall() - (m + self._offset)
            allowed = self.slew * max(m - self._last_mono, 0.0)
            self._last_mono = m
            if abs(error) > max(allowed, self.step_s):
                step = error
                self._offset += error
            else:
                self._offset += min(max(error, -allowed), allowed)
            value = m + self._offset
        if step:
            logger.warning("the wall clock stepped by %+.3f s; timestamps follow it", step)
        return value

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> bool:
        while True:
            remaining = t - self.now()
            if remaining <= 0:
                return True
            if stop is not None:
                if stop.wait(min(remaining, 0.05)):
                    return False
            else:
                time.sleep(min(remaining, 0.05))


class VirtualClock:
    """A clock that jumps forward when slept on or advanced; thread-safe.

    Listeners (``subscribe``) are called with the new time after every move, outside
    the clock's lock, so a trigger scheduler on this clock fires whatever became due.
    """

    def __init__(self, start: float = 1.7e9) -> None:
        self._t = float(start)
        self._lock = threading.Lock()
        self._listeners: list[Callable[[float], None]] = []

    def now(self) -> float:
        with self._lock:
            return self._t

    def subscribe(self, fn: Callable[[float], None]) -> None:
        self._listeners.append(fn)

    def advance_to(self, t: float) -> None:
        """Move to ``t`` (never backwards) and let listeners act on the new time."""
        with self._lock:
            self._t = max(self._t, float(t))
            now = self._t
        for fn in self._listeners:
            fn(now)

    def advance(self, dt: float) -> None:
        self.advance_to(self.now() + dt)

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        self.advance_to(t)
        return True
