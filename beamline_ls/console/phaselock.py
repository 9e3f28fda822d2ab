"""What the phase-lock plot draws: the analysed frames' phase over time, the
triggers, and the phase each trigger actually fired at.

The gating IOC publishes its latest frames' (time, phase) pairs (``History_RBV``) and
its last trigger records (``LastTriggers_RBV``) several times a second; each update
overlaps the previous one, so this merges them by time. The phase at a trigger is
the analysed phase interpolated at the moment the pulse left (``fired_at``), between
the frames on either side of it: what open-optical-gating's users read from their
histogram, measured after the fact rather than the target the analyzer aimed at.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

TWO_PI = 2 * math.pi


@dataclass
class Trigger:
    trigger_time: float
    fired_at: float
    status: str
    target: float  # the phase the analyzer aimed at
    phase_at_fire: float = math.nan  # analysed phase when the pulse left


def phase_at(times: np.ndarray, phases: np.ndarray, t: float) -> float:
    """Wrapped phase at ``t`` interpolated between the frames either side of it (the
    shorter way round the circle); NaN unless frames bracket ``t`` within 0.2 s."""
    i = int(np.searchsorted(times, t))
    if i == 0 or i >= len(times) or times[i] - times[i - 1] > 0.2:
        return math.nan
    p0, p1 = phases[i - 1], phases[i]
    if not (math.isfinite(p0) and math.isfinite(p1)):
        return math.nan
    step = (p1 - p0 + math.pi) % TWO_PI - math.pi
    frac = (t - times[i - 1]) / (times[i] - times[i - 1])
    return float((p0 + frac * step) % TWO_PI)


class PhaseLockTrace:
    """Merged phase history (the last ``window_s``) and trigger records."""

    def __init__(self, window_s: float = 20.0, max_triggers: int = 500) -> None:
        self.window_s = window_s
        self.max_triggers = max_triggers
        self._lock = threading.Lock()
        self._frames: OrderedDict[float, float] = OrderedDict()
        self._triggers: OrderedDict[float, Trigger] = OrderedDict()

    def add_history(self, flat: np.ndarray) -> None:
        """Merge interleaved (time, phase) pairs, oldest first."""
        pairs = np.asarray(flat, dtype=float).reshape(-1, 2)
        with self._lock:
            newest = next(reversed(self._frames), -math.inf)
            for t, p in pairs:
                if t > newest:
                    self._frames[float(t)] = float(p)
            if pairs.size and pairs[-1, 0] < newest - 5.0:  # gating restarted
                self._frames = OrderedDict((float(t), float(p)) for t, p in pairs)
            if self._frames:
                cut = next(reversed(self._frames)) - self.window_s
                while self._frames and next(iter(self._frames)) < cut:
                    self._frames.popitem(last=False)
            self._resolve()

    def add_records(self, records: list[dict]) -> None:
        """Merge trigger records (``TriggerRecord.as_dict``) by their trigger time."""
        with self._lock:
            for r in records:
                t = float(r.get("trigger_time", math.nan))
                if not math.isfinite(t):
                    continue
                fired = float(r.get("fired_at", math.nan))
                old = self._triggers.get(t)
                if old is not None and old.fired_at == fired and old.status == r["status"]:
                    continue
                self._triggers[t] = Trigger(t, fired, str(r.get("status", "")),
                                            float(r.get("gating_phase", math.nan)))
            while len(self._triggers) > self.max_triggers:
                self._triggers.popitem(last=False)
            self._resolve()

    def _resolve(self) -> None:
        if not self._frames:
            return
        times = np.fromiter(self._frames.keys(), float)
        phases = np.fromiter(self._frames.values(), float)
        for trig in self._triggers.values():
            if math.isnan(trig.phase_at_fire) and math.isfinite(trig.fired_at):
                trig.phase_at_fire = phase_at(times, phases, trig.fired_at)

    def snapshot(self, since_s: float = 8.0) -> dict:
        """The frames of the last ``since_s`` and every kept trigger, for the page."""
        with self._lock:
            if self._frames:
                cut = next(reversed(self._frames)) - since_s
                frames = [(t, p) for t, p in self._frames.items() if t >= cut]
            else:
                frames = []
            triggers = [
                {"time": tr.fired_at if math.isfinite(tr.fired_at) else tr.trigger_time,
                 "status": tr.status, "target": _finite(tr.target),
                 "phase": _finite(tr.phase_at_fire)}
                for tr in self._triggers.values()]
        return {"t": [round(t, 4) for t, _ in frames],
                "phase": [_finite(p, 4) for _, p in frames],
                "triggers": triggers}


def _finite(x: float, digits: int = 4) -> float | None:
    return round(x, digits) if math.isfinite(x) else None
