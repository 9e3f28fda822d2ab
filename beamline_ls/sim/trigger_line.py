"""A simulated digital trigger cable: pulses at absolute times.

The scan board's counter output (or the gating trigger box) schedules pulses; the
camera's trigger input consumes them in time order. Pulses scheduled for a time before
the camera was armed are discarded by the consumer, as a real camera ignores edges
while it is idle.
"""

from __future__ import annotations

import bisect
import threading

import numpy as np


class TriggerLine:
    def __init__(self) -> None:
        self._pulses: list[float] = []
        self._cond = threading.Condition()

    def schedule(self, times: np.ndarray | list[float]) -> None:
        """Add pulses at absolute times ``times``."""
        with self._cond:
            for t in np.asarray(times, dtype=float).ravel():
                bisect.insort(self._pulses, float(t))
            self._cond.notify_all()

    def cancel_after(self, t: float) -> int:
        """Remove pulses later than ``t`` (a stopped output); return how many."""
        with self._cond:
            i = bisect.bisect_right(self._pulses, t)
            n = len(self._pulses) - i
            del self._pulses[i:]
            self._cond.notify_all()
            return n

    def pending(self) -> int:
        with self._cond:
            return len(self._pulses)

    def next_pulse(self, not_before: float, timeout: float, stop: threading.Event) -> float | None:
        """Pop the earliest pulse at or after ``not_before``; older ones are dropped.

        Waits up to ``timeout`` seconds (wall clock) for a pulse to be scheduled.
        """
        with self._cond:
            deadline = None
            while True:
                i = bisect.bisect_left(self._pulses, not_before)
                del self._pulses[:i]
                if self._pulses:
                    return self._pulses.pop(0)
                if stop.is_set():
                    return None
                import time

                now = time.monotonic()
                deadline = deadline or now + timeout
                if now >= deadline:
                    return None
                self._cond.wait(min(0.05, deadline - now))
