"""The one clock of the system: absolute time in epoch seconds.

Everything that keeps time (the simulated microscope, the gating analyzer and its
trigger scheduler, the trigger box's clock map, camera frame stamps) reads the same
kind of clock, so a trigger decided on a brightfield frame, fired by the scheduler and
seen by the fluorescence camera are on one timebase.

- :class:`RealTimeClock`: epoch seconds from a monotonic, high-resolution source
  (immune to wall-clock steps). Live use, IOCs and the demo.
- :class:`VirtualClock`: moves only when someone sleeps on it or advances it, and tells
  its listeners (the trigger scheduler fires what became due). Replays, benchmarks and
  deterministic tests run as fast as the machine allows with identical timestamps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> bool:
        """Block until ``t``; return False if ``stop`` was set first."""
        ...


class RealTimeClock:
    """Epoch seconds with ``time.perf_counter`` underneath (monotonic, sub-µs)."""

    def __init__(self) -> None:
        self._offset = time.time() - time.perf_counter()

    def now(self) -> float:
        return time.perf_counter() + self._offset

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
