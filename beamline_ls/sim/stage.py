"""A motorised linear stage axis: constant velocity between targets, hard travel limits."""

from __future__ import annotations

import threading


class LinearAxis:
    def __init__(self, travel: tuple[float, float], velocity: float, position: float = 0.0):
        if velocity <= 0:
            raise ValueError("velocity must be > 0")
        self.travel = travel
        self.velocity = velocity
        self._lock = threading.Lock()
        self._t0 = 0.0
        self._x0 = position
        self._target = position

    def move(self, t: float, target: float) -> None:
        lo, hi = self.travel
        if not lo <= target <= hi:
            raise ValueError(f"target {target} outside travel {self.travel}")
        with self._lock:
            self._x0 = self._position_locked(t)
            self._t0 = t
            self._target = target

    def set_velocity(self, t: float, velocity: float) -> None:
        """Move at ``velocity`` from time ``t`` on (a move under way continues at it)."""
        if velocity <= 0:
            raise ValueError("velocity must be > 0")
        with self._lock:
            self._x0 = self._position_locked(t)
            self._t0 = t
            self.velocity = velocity

    def stop(self, t: float) -> None:
        with self._lock:
            self._x0 = self._position_locked(t)
            self._t0 = t
            self._target = self._x0

    def position(self, t: float) -> float:
        with self._lock:
            return self._position_locked(t)

    def is_moving(self, t: float) -> bool:
        with self._lock:
            return self._position_locked(t) != self._target

    def _position_locked(self, t: float) -> float:
        travelled = self.velocity * max(0.0, t - self._t0)
        delta = self._target - self._x0
        if abs(delta) <= travelled:
            return self._target
        return self._x0 + (travelled if delta > 0 else -travelled)
