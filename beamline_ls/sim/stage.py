"""A motorised linear stage axis: constant velocity between targets, a deceleration
ramp when stopped, hard travel limits."""

from __future__ import annotations

import threading


class LinearAxis:
    """One axis of a stepper stage.

    A move runs at ``velocity`` to its target. A stop is not instantaneous: the axis
    slows to rest over ``stop_time`` seconds (a constant deceleration, so it travels
    half the distance it would have covered at speed), as a real controller's stop
    does. Until then it still reports moving: a client that sends a stop and then a new
    target sees one motion, not a motion that ends and another that starts.
    """

    def __init__(self, travel: tuple[float, float], velocity: float, position: float = 0.0,
                 stop_time: float = 0.2):
        if velocity <= 0:
            raise ValueError("velocity must be > 0")
        if stop_time < 0:
            raise ValueError("stop_time must be >= 0")
        self.travel = travel
        self.velocity = velocity
        self.stop_time = stop_time
        self._lock = threading.Lock()
        self._t0 = 0.0
        self._x0 = position
        self._target = position
        self._braking = 0.0  # signed speed at the start of a stop ramp; 0: none

    def move(self, t: float, target: float) -> None:
        lo, hi = self.travel
        if not lo <= target <= hi:
            raise ValueError(f"target {target} outside travel {self.travel}")
        with self._lock:
            self._restart_locked(t)
            self._target = target

    def set_velocity(self, t: float, velocity: float) -> None:
        """Move at ``velocity`` from time ``t`` on (a move under way continues at it)."""
        if velocity <= 0:
            raise ValueError("velocity must be > 0")
        with self._lock:
            if not self._braking:  # a stop ramp ends as it began
                self._restart_locked(t)
            self.velocity = velocity

    def stop(self, t: float) -> None:
        """Begin slowing to rest; where it comes to rest is :meth:`position` once
        :meth:`is_moving` is False."""
        with self._lock:
            if self._braking:  # already stopping
                return
            target = self._target
            direction = 1.0 if target > self._x0 else -1.0
            self._restart_locked(t)
            if self._x0 != target and self.stop_time > 0:
                # at rest after half the distance at speed, never past the target
                rest = self._x0 + direction * self.velocity * self.stop_time / 2
                self._target = min(rest, target) if direction > 0 else max(rest, target)
                self._braking = direction * self.velocity
            else:
                self._target = self._x0

    def position(self, t: float) -> float:
        with self._lock:
            return self._position_locked(t)

    def is_moving(self, t: float) -> bool:
        with self._lock:
            return self._position_locked(t) != self._target

    def _restart_locked(self, t: float) -> None:
        """A new segment from where the axis is at ``t``, at full speed."""
        self._x0 = self._position_locked(t)
        self._t0 = t
        self._braking = 0.0

    def _position_locked(self, t: float) -> float:
        dt = max(0.0, t - self._t0)
        if self._braking:  # v(t) = v0 (1 - dt / T): x = x0 + v0 (dt - dt^2 / 2T)
            if dt >= self.stop_time:
                return self._target
            x = self._x0 + self._braking * (dt - dt * dt / (2 * self.stop_time))
            return min(x, self._target) if self._braking > 0 else max(x, self._target)
        travelled = self.velocity * dt
        delta = self._target - self._x0
        if abs(delta) <= travelled:
            return self._target
        return self._x0 + (travelled if delta > 0 else -travelled)
