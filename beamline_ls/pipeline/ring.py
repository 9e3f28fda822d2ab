"""A preallocated ring buffer of frames with their metadata.

One producer (the camera thread) copies each frame into the next free slot; one
consumer (the writer) reads slots in order and releases them. Memory is allocated once
per acquisition, so a long run never allocates per frame; when the ring is full the
new frame is refused and counted (with its id and time), never silently lost.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from beamline_ls.frame import Frame


@dataclass
class RingStats:
    pushed: int = 0
    popped: int = 0
    overflows: int = 0
    flushed: int = 0  # stale frames discarded at arm time
    overflow_ids: list[int] = field(default_factory=list)
    overflow_times: list[float] = field(default_factory=list)


class FrameRing:
    """Fixed-capacity single-producer single-consumer frame buffer."""

    MAX_RECORDED_OVERFLOWS = 100_000

    def __init__(self, capacity: int, shape: tuple[int, int], dtype: str = "<u2"):
        if capacity < 2:
            raise ValueError("capacity must be >= 2 frames")
        self.capacity = capacity
        self.shape = tuple(shape)
        self.images = np.empty((capacity, *self.shape), dtype=dtype)
        self._meta: list[Frame | None] = [None] * capacity
        self._head = 0  # next slot to write
        self._tail = 0  # next slot to read
        self._count = 0
        self._cond = threading.Condition()
        self.stats = RingStats()

    @classmethod
    def for_memory(cls, budget_bytes: int, shape: tuple[int, int], dtype: str = "<u2",
                   max_frames: int = 4096) -> FrameRing:
        """As many frames as fit in ``budget_bytes`` (at least 8, at most ``max_frames``)."""
        frame_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return cls(max(8, min(max_frames, budget_bytes // frame_bytes)), shape, dtype)

    def __len__(self) -> int:
        with self._cond:
            return self._count

    def push(self, frame: Frame) -> bool:
        """Copy ``frame`` into the ring; False (and counted) when full."""
        if frame.image.shape != self.shape:
            raise ValueError(f"frame shape {frame.image.shape} != ring shape {self.shape}")
        with self._cond:
            if self._count == self.capacity:
                s = self.stats
                s.overflows += 1
                if len(s.overflow_ids) < self.MAX_RECORDED_OVERFLOWS:
                    s.overflow_ids.append(frame.frame_id)
                    s.overflow_times.append(frame.timestamp)
                return False
            slot = self._head
        # the copy happens outside the lock: the consumer never reads this slot until
        # the count says it is filled
        self.images[slot] = frame.image
        meta = Frame(self.images[slot], frame.frame_id, frame.timestamp, frame.exposure,
                     frame.z_um, frame.plane, frame.volume, dict(frame.extra))
        with self._cond:
            self._meta[slot] = meta
            self._head = (slot + 1) % self.capacity
            self._count += 1
            self.stats.pushed += 1
            self._cond.notify()
        return True

    def peek(self, timeout: float | None = None) -> Frame | None:
        """The oldest frame (its image is a view into the ring) without removing it;
        None after ``timeout``. Call :meth:`release` when done with it."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._count > 0, timeout):
                return None
            return self._meta[self._tail]

    def release(self) -> None:
        """Free the oldest slot (after the consumer has written it out)."""
        with self._cond:
            if self._count == 0:
                raise RuntimeError("release() without a frame")
            self._meta[self._tail] = None
            self._tail = (self._tail + 1) % self.capacity
            self._count -= 1
            self.stats.popped += 1

    def flush(self) -> int:
        """Discard every buffered frame (stale frames at arm time); return how many."""
        with self._cond:
            n = self._count
            self._meta = [None] * self.capacity
            self._head = self._tail = self._count = 0
            self.stats.flushed += n
            return n
