"""An optional concurrence log: where the frame pipeline's time goes.

Each stage records events (a frame arrived, entered the ring, was dropped, writing
started and ended, a file flushed) with a nanosecond timestamp, the thread, the queue
depth at that moment and the frame id. Recording costs one lock and a few array
stores, into memory preallocated when the log is switched on; nothing is written to
disk until :meth:`ConcurrenceLog.save`. Switched off (the default), :func:`record`
costs one global lookup.

Timestamps are ``time.monotonic_ns()`` (CLOCK_MONOTONIC, shared by every process on
the machine), so logs saved by several processes line up. A saved log is CSV:
``t_ns,pid,thread,event,queue_depth,frame_id``. :func:`summarize` turns one into the
per-frame latencies between consecutive stages (p50, p99, max).
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections import defaultdict
from collections.abc import Sized
from pathlib import Path

import numpy as np

_ENTRY = np.dtype([("t_ns", "<i8"), ("thread", "<i4"), ("event", "<i4"),
                   ("queue", "<i4"), ("frame_id", "<i8")])


class ConcurrenceLog:
    """Events of one process, kept in a preallocated array of ``capacity`` entries.

    When full, further events are counted in :attr:`overflow` and not kept: the log
    must never slow down or grow the process it observes.
    """

    def __init__(self, capacity: int = 1_000_000):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._entries = np.zeros(capacity, _ENTRY)
        self._n = 0
        self.overflow = 0
        self._events: dict[str, int] = {}
        self._threads: dict[int, int] = {}
        self._thread_names: list[str] = []
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return self._n

    def record(self, event: str, queue_depth: int = -1, frame_id: int = -1) -> None:
        t = time.monotonic_ns()
        ident = threading.get_ident()
        with self._lock:
            if self._n >= len(self._entries):
                self.overflow += 1
                return
            code = self._events.setdefault(event, len(self._events))
            thread = self._threads.get(ident)
            if thread is None:
                thread = self._threads[ident] = len(self._thread_names)
                self._thread_names.append(threading.current_thread().name)
            self._entries[self._n] = (t, thread, code, queue_depth, frame_id)
            self._n += 1

    def save(self, path: str | Path) -> Path:
        """Append the events recorded so far to a CSV file and clear them."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock:
            entries = self._entries[: self._n].copy()
            events = {code: name for name, code in self._events.items()}
            threads = list(self._thread_names)
            self._n = 0
        new = not path.exists()
        pid = os.getpid()
        # never through a symlink planted at the name: it could point anywhere
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with open(fd, "a", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            if new:
                out.writerow(["t_ns", "pid", "thread", "event", "queue_depth", "frame_id"])
            for e in entries:
                out.writerow([int(e["t_ns"]), pid, threads[e["thread"]], events[e["event"]],
                              int(e["queue"]), int(e["frame_id"])])
        return path


_active: ConcurrenceLog | None = None


def enable(capacity: int = 1_000_000) -> ConcurrenceLog:
    """Start logging in this process (keeps an already active log)."""
    global _active
    if _active is None:
        _active = ConcurrenceLog(capacity)
    return _active


def disable() -> ConcurrenceLog | None:
    """Stop logging; returns the log (save it) or None if none was active."""
    global _active
    log, _active = _active, None
    return log


def active() -> ConcurrenceLog | None:
    return _active


def record(event: str, queue_depth: int = -1, frame_id: int = -1) -> None:
    """Record an event if logging is on (the hook every stage calls)."""
    log = _active
    if log is not None:
        log.record(event, queue_depth, frame_id)


def record_queue(event: str, queue: Sized, frame_id: int = -1) -> None:
    """Record an event with ``len(queue)`` as its depth; the length (a lock in a ring
    buffer) is only taken when logging is on, so hot paths pay nothing otherwise."""
    log = _active
    if log is not None:
        log.record(event, len(queue), frame_id)


def summarize(path: str | Path) -> dict[str, dict[str, float]]:
    """Per-frame latency between consecutive events of a frame, in ms.

    For every frame id, its events are ordered by time and each step
    ``"<event a> -> <event b>"`` gets a latency; returns, per step, ``n``, ``p50_ms``,
    ``p99_ms`` and ``max_ms``, plus ``"<event> queue depth"`` with the largest queue
    depth seen at that event.
    """
    by_frame: dict[int, list[tuple[int, str]]] = defaultdict(list)
    depth: dict[str, int] = defaultdict(lambda: -1)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            fid = int(row["frame_id"])
            q = int(row["queue_depth"])
            depth[row["event"]] = max(depth[row["event"]], q)
            if fid >= 0:
                by_frame[fid].append((int(row["t_ns"]), row["event"]))
    steps: dict[str, list[float]] = defaultdict(list)
    for events in by_frame.values():
        events.sort()
        for (t0, a), (t1, b) in zip(events, events[1:], strict=False):
            steps[f"{a} -> {b}"].append((t1 - t0) / 1e6)
    out: dict[str, dict[str, float]] = {}
    for step, values in steps.items():
        arr = np.asarray(values)
        out[step] = {"n": float(arr.size), "p50_ms": float(np.percentile(arr, 50)),
                     "p99_ms": float(np.percentile(arr, 99)), "max_ms": float(arr.max())}
    for event, q in depth.items():
        if q >= 0:
            out[f"{event} queue depth"] = {"max": float(q)}
    return out
