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
from beamline_ls.thread_priority import lower_this_thread_priority

log = logging.getLogger(__name__)

MADV_POPULATE_WRITE = 23  # Linux >= 5.14: fault pages in writable, contents unchanged
_libc: ctypes.CDLL | None = None


#: Pages are populated a huge page (2 MiB) at a time with a pause between steps. The
#: kernel holds the process's memory-map lock while it populates, and a thread that
#: needs it meanwhile (an allocation, often while holding the GIL) waits: with 8 MiB
#: steps back to back, a fresh VM's slow first touch held it 30-80 ms per step, and the
#: whole IOC stalled that long (a gating trigger fired 39 ms late, brightfield frames
#: were lost) during the first scan after the IOC started.
POPULATE_STEP_BYTES = 2 << 20
POPULATE_PAUSE_S = 0.001


def populate_pages(buf: np.ndarray, start: int = 0, stop: int | None = None) -> bool:
    """Fault in every page of bytes ``[start, stop)`` of ``buf`` (default: all of it)
    for writing, without changing its contents.

    Uses ``madvise(MADV_POPULATE_WRITE)``, which releases the GIL (ctypes) and is safe
    while another thread writes into ``buf``. Returns False where unsupported (not
    Linux, kernel < 5.14); the pages then fault in on first use, as before.
    """
    global _libc
    stop = buf.nbytes if stop is None else min(stop, buf.nbytes)
    if not sys.platform.startswith("linux"):
        return False
    if stop <= start:
        return True
    try:
        if _libc is None:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
            libc.madvise.restype = ctypes.c_int
            _libc = libc
        page = mmap.PAGESIZE
        # the pages holding the first and last byte belong to this allocation, so
        # rounding outwards to page boundaries stays inside mapped memory
        first = (buf.ctypes.data + start) // page * page
        end = -(-(buf.ctypes.data + stop) // page) * page
        for at in range(first, end, POPULATE_STEP_BYTES):  # see POPULATE_STEP_BYTES
            size = min(POPULATE_STEP_BYTES, end - at)
            if _libc.madvise(at, size, MADV_POPULATE_WRITE) != 0:
                log.debug("madvise(MADV_POPULATE_WRITE) failed: errno %d",
                          ctypes.get_errno())
                return False
            time.sleep(POPULATE_PAUSE_S)
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
        self._pages = threading.Condition()  # guards the three below
        self._pages_wanted = capacity  # slots whose pages prefault() puts in place
        self._pages_limit = capacity  # ... at most, for now (a capture is running)
        self._pages_done = 0  # slots whose pages are in place
        self._closed = False

    @property
    def nbytes(self) -> int:
        return int(self.images.nbytes)

    def prefault(self) -> bool:
        """Fault in the pages of the buffer, slot by slot in ring order, so pushes never
        pay first-touch page faults. Contents are not modified: safe to call from a
        background thread while frames are pushed. Returns False when the OS cannot
        (see :func:`populate_pages`) or the ring was closed first.

        It goes as far as :meth:`want_pages` asks (and :meth:`limit_pages` lets it
        for now) and waits there for more. Why: while the kernel populates, it holds
        the process's memory-map lock, and every thread of the process that allocates
        meanwhile waits (see ``POPULATE_STEP_BYTES``). A capture of 8 gated frames into
        a fresh 512 MiB ring had the IOC stall 30-90 ms at a time for seconds, and its
        triggers fired late; it needs the pages of 8 slots.
        """
        t0 = time.perf_counter()
        slot = self.images.nbytes // self.capacity
        step = max(1, POPULATE_STEP_BYTES // slot)
        ok = True
        try:
            while True:
                with self._pages:
                    while (not self._closed and self._pages_done < self.capacity
                           and self._pages_done >= self._pages_target()):
                        self._pages.wait(0.5)
                    if self._closed or self._pages_done >= self.capacity:
                        return ok and not self._closed
                    a = self._pages_done
                    b = min(self._pages_target(), a + step)
                ok = populate_pages(self.images, a * slot, b * slot)
                with self._pages:
                    self._pages_done = b if ok else self.capacity
        finally:
            self.prefault_s = time.perf_counter() - t0
            self.prefaulted.set()

    @property
    def slots_in_place(self) -> int:
        """Slots whose pages :meth:`prefault` has put in place so far."""
        with self._pages:
            return self._pages_done

    @property
    def pages_wanted(self) -> int:
        """Slots whose pages :meth:`prefault` is to put in place (:meth:`want_pages`)."""
        with self._pages:
            return self._pages_wanted

    def want_pages(self, slots: int) -> None:
        """Have :meth:`prefault` put the pages of the first ``slots`` slots in place
        (``capacity``: all) and wait there; pages already in place stay."""
        with self._pages:
            self._pages_wanted = max(1, min(self.capacity, int(slots)))
            self._pages.notify_all()

    def limit_pages(self, slots: int | None) -> None:
        """While a capture of ``slots`` frames runs, :meth:`prefault` goes no further
        than its slots (None: the capture has ended, or it fills the ring)."""
        with self._pages:
            self._pages_limit = self.capacity if slots is None else max(1, int(slots))
            self._pages.notify_all()

    def _pages_target(self) -> int:
        return min(self._pages_wanted, self._pages_limit, self.capacity)

    def close(self) -> None:
        """End a waiting :meth:`prefault` (the ring is being let go)."""
        with self._pages:
            self._closed = True
            self._pages.notify_all()

    def prefault_in_background(self) -> threading.Thread:
        """Start :meth:`prefault` in a daemon thread and return the thread.

        The thread runs at background priority (`lower_this_thread_priority`): faulting in a
        large ring takes seconds of kernel time on a VM, which the camera, gating and
        Channel Access threads of the same process need more."""

        def run() -> None:
            lower_this_thread_priority()
            self.prefault()

        t = threading.Thread(target=run, name="ring-prefault", daemon=True)
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
