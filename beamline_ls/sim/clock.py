"""Clocks for the simulated microscope.

Everything in the simulator is a function of absolute time. A :class:`RealTimeClock`
makes the simulated hardware keep wall-clock time (live use, IOCs, demo); a
:class:`VirtualClock` advances only when someone sleeps, so replays and benchmarks run
as fast as the machine allows while seeing identical timestamps.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> bool:
        """Block until ``t``; return False if ``stop`` was set first."""
        ...


class RealTimeClock:
    """Epoch seconds from a monotonic source (immune to wall-clock steps)."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def now(self) -> float:
        return time.monotonic() + self._offset

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
    """A clock that jumps forward when slept on; thread-safe."""

    def __init__(self, start: float = 1.7e9) -> None:
        self._t = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._t

    def sleep_until(self, t: float, stop: threading.Event | None = None) -> bool:
        if stop is not None and stop.is_set():
            return False
        with self._lock:
            self._t = max(self._t, t)
        return True

    def advance(self, dt: float) -> None:
        with self._lock:
            self._t += dt
