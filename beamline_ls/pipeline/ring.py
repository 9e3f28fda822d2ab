"""A preallocated ring buffer of frames with their metadata.

One producer (the camera thread) copies each frame into the next free slot; one
consumer (the writer) reads slots in order and releases them. Memory is allocated once
(and may be kept across acquisitions, see :meth:`FrameRing.reset`), so a long run never
allocates per frame; when the ring is full the new frame is refused and counted (with
its id and time), never silently lost.

A fresh ``np.empty`` buffer is only reserved address space: every page is faulted in
on its first write, which on a VM costs far more than the copy itself (measured:
~0.2 GB/s for first-touch copies vs ~5 GB/s warm). :meth:`FrameRing.prefault` faults
all pages in ahead of time without touching their contents, so it can run in a
background thread while frames are already being pushed.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from beamline_ls.frame import Frame

log = logging.getLogger(__name__)

MADV_POPULATE_WRITE = 23  # Linux >= 5.14: fault pages in writable, contents unchanged
_libc: ctypes.CDLL | None = None


POPULATE_STEP_BYTES = 8 << 20


def populate_pages(buf: np.ndarray) -> bool:
    """Fault in every page of ``buf`` for writing, without changing its contents.

    Uses ``madvise(MADV_POPULATE_WRITE)``, which releases the GIL (ctypes) and is safe
    while another thread writes into ``buf``. Returns False where unsupported (not
    Linux, kernel < 5.14); the pages then fault in on first use, as before.
    """
    global _libc
    if not sys.platform.startswith("linux") or buf.nbytes == 0:
        return False
    try:
        if _libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            libc.madvise.restype = ctypes.c_int
            _libc = libc
        page = mmap.PAGESIZE
        # the pages holding the first and last byte belong to this allocation, so
        # rounding outwards to page boundaries stays inside mapped memory
        start = buf.ctypes.data // page * page
        end = -(-(buf.ctypes.data + buf.nbytes) // page) * page
        # In steps: the kernel holds the process's memory-map lock while it populates,
        # and one 2 GB call blocked every allocation in the process (opening an HDF5
        # file, numpy temporaries) for ~5 s on a VM; 8 MiB steps hold it ~20 ms at most.
        for at in range(start, end, POPULATE_STEP_BYTES):
            size = min(POPULATE_STEP_BYTES, end - at)
            if _libc.madvise(at, size, MADV_POPULATE_WRITE) != 0:
                log.debug("madvise(MADV_POPULATE_WRITE) failed: errno %d",
                          ctypes.get_errno())
                return False
    except (OSError, AttributeError):
        return False
    return True


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
        self.prefaulted = threading.Event()  # set once prefault() has finished
        self.prefault_s = 0.0  # how long prefault() took

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)

    def prefault(self) -> bool:
        """Fault in every page of the buffer now, so pushes never pay first-touch page
        faults. Contents are not modified: safe to call from a background thread while
        frames are pushed. Returns False when the OS cannot (see :func:`populate_pages`).
        """
        t0 = time.perf_counter()
        try:
            return populate_pages(self.images)
        finally:
            self.prefault_s = time.perf_counter() - t0
            self.prefaulted.set()

    def prefault_in_background(self) -> threading.Thread:
        """Start :meth:`prefault` in a daemon thread and return the thread."""
        t = threading.Thread(target=self.prefault, name="ring-prefault", daemon=True)
        t.start()
        return t

    @classmethod
    def for_memory(cls, budget_bytes: int, shape: tuple[int, int], dtype: str = "<u2",
                   max_frames: int = 4096) -> FrameRing:
        """As many frames as fit in ``budget_bytes`` (at least 8, at most ``max_frames``)."""
        return cls(cls.capacity_for(budget_bytes, shape, dtype, max_frames), shape, dtype)

    @staticmethod
    def capacity_for(budget_bytes: int, shape: tuple[int, int], dtype: str = "<u2",
                     max_frames: int = 4096) -> int:
        """The capacity :meth:`for_memory` would choose for this budget."""
        frame_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return max(8, min(max_frames, budget_bytes // frame_bytes))

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
                     frame.z_um, frame.plane, frame.volume, dict(frame.extra),
                     frame.capture_position)
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

    def reset(self) -> int:
        """Ready the ring for a new acquisition: discard stale frames and start fresh
        counters (overflows are counted per acquisition). Returns the frames discarded;
        the new stats keep that number in ``flushed``."""
        with self._cond:
            n = self._count
            self._meta = [None] * self.capacity
            self._head = self._tail = self._count = 0
            self.stats = RingStats(flushed=n)
            return n
