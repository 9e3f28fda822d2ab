"""Camera -> preallocated ring buffer -> writer thread (with background subtraction).

The camera thread calls :meth:`Recorder.submit`, which never blocks: it copies the
frame into a preallocated :class:`FrameRing`; when the ring is full the frame is
dropped and counted, with its id and time. The writer thread subtracts the background
(if any) and writes to a :class:`FrameFileWriter`. Losses are counted and reported (IOC
PV, log, the file's ``/entry/dropped`` datasets, run documents), never silent.

The ring is kept across captures while the frame shape and size stay the same (stale
frames are discarded at each start), and a new ring has its pages faulted in by a
background thread: copying into never-touched memory is what made the producer fall
behind (see :mod:`beamline_ls.pipeline.ring`). :meth:`Recorder.prepare` allocates it
before the first capture, e.g. when the camera is armed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beamline_ls.frame import Frame
from beamline_ls.log import success
from beamline_ls.pipeline import concurrence
from beamline_ls.pipeline.background import Background
from beamline_ls.pipeline.diskspace import DiskFullError, SpaceGuard, is_disk_full
from beamline_ls.pipeline.ring import FrameRing
from beamline_ls.pipeline.rolling import RollingFileWriter
from beamline_ls.pipeline.summary import BLOCK_FRAMES, CaptureSummary

log = logging.getLogger(__name__)
#: frames per file of a capture of open length (one file, as areaDetector writes it)
OPEN_LENGTH_FILE_FRAMES = 2**31 - 1


def ring_budget_bytes(held_bytes: int = 0) -> int:
    """Ring memory: a quarter of the RAM available now, at most 2 GiB, at least 64 MiB.

    ``held_bytes`` is memory this process would free for the new ring (the current
    ring), counted as available so that keeping a ring does not shrink the next one.
    """
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        avail = 1 << 30
    return int(max(64 << 20, min(2 << 30, (avail + held_bytes) // 4)))


@dataclass
class RecorderStatus:
    path: str = ""
    capturing: bool = False
    frames_expected: int = 0  # 0: a capture of open length (until stopped)
    frames_offered: int = 0  # frames the camera handed over (taken or dropped)
    frames_written: int = 0
    complete_units: int = 0
    frames_dropped: int = 0
    dropped_ids: list[int] = field(default_factory=list)
    frames_missing: int = 0  # never delivered by the camera (gaps in its frame ids)
    missing_ids: list[int] = field(default_factory=list)
    files: int = 0
    flushes: int = 0  # flushes of the capture's files (areaDetector's SWMRCbCounter)
    error: str = ""  # why the capture failed, with what was stored and lost

    @property
    def frames_lost(self) -> int:
        """Frames of the capture not in the file: dropped from the ring, or never
        written because the capture failed (of open length: of those offered)."""
        expected = self.frames_expected or self.frames_offered
        return max(0, expected - self.frames_written)


class Recorder:
    """Record frames to one file per capture.

    ``buffer_frames`` fixes the ring capacity (0: sized from available RAM).
    ``write_delay_s`` simulates a slow disk (tests and demonstrations of loss reporting).
    """

    def __init__(self, buffer_frames: int = 0, write_delay_s: float = 0.0):
        self.buffer_frames = buffer_frames
        self.write_delay_s = write_delay_s
        self._ring: FrameRing | None = None
        self._thread: threading.Thread | None = None
        self._writer: RollingFileWriter | None = None
        self._stop = threading.Event()
        self._discard = threading.Event()  # abort: stop writing after the current frame
        self._background: Background | None = None
        self._prefault_thread: threading.Thread | None = None
        self._base_id: int | None = None  # camera frame id of the capture's position 0
        self._next_position = 0  # position after the latest frame offered
        self._rebase = False  # the camera restarted its frame ids mid-capture
        self._guard: SpaceGuard | None = None
        self.status = RecorderStatus()
        #: a row per volume (per block of frames when planar) of the current capture
        self.summary = CaptureSummary()

    @property
    def capturing(self) -> bool:
        return self.status.capturing

    def _wanted_capacity(self, frame_shape: tuple[int, int], dtype: str) -> int:
        if self.buffer_frames:
            return self.buffer_frames
        held = self._ring.nbytes if self._ring is not None else 0
        return FrameRing.capacity_for(ring_budget_bytes(held), frame_shape, dtype)

    def prepare(self, frame_shape: tuple[int, int], wait: bool = False,
                dtype: str = "<u2", frames: int = 0) -> FrameRing:
        """The ring for frames of ``frame_shape``: the current one if its shape and
        capacity still fit, otherwise a new one whose pages are faulted in by a
        background thread (``wait``: block until that is done). Call it when the
        camera is armed so the first capture does not pay for fresh memory.
        ``frames``: a capture of that many frames is about to start: a new ring has
        the pages of their slots faulted in, no more (`FrameRing.prefault`); 0: all
        (an explicit allocation, PreAllocBuffers)."""
        if self.capturing:
            raise RuntimeError("cannot change the buffer while capturing")
        shape = tuple(int(n) for n in frame_shape)
        capacity = self._wanted_capacity(shape, dtype)
        ring = self._ring
        if (ring is None or ring.shape != shape or ring.capacity != capacity
                or ring.images.dtype != np.dtype(dtype)):
            if ring is not None:
                ring.close()
            self._ring = None  # let the old buffer go before allocating the new one
            ring = FrameRing(capacity, shape, dtype)
            self._ring = ring
            ring.want_pages(frames or capacity)
            self._prefault_thread = ring.prefault_in_background()
        else:
            ring.want_pages(max(ring.pages_wanted, frames or capacity))
        if wait and self._prefault_thread is not None:
            self._prefault_thread.join()
        return ring

    def release_buffer(self) -> None:
        """Free the ring's memory (it is otherwise kept for the next capture)."""
        if self.capturing:
            raise RuntimeError("cannot free the buffer while capturing")
        if self._ring is not None:
            self._ring.close()
        self._ring = None
        self._prefault_thread = None

    def start(
        self,
        path: str | Path,
        frame_shape: tuple[int, int],
        n_frames: int,
        planes_per_volume: int = 0,
        attrs: dict[str, Any] | None = None,
        extra_fields: tuple[str, ...] = (),
        background: Background | None = None,
        max_frames_per_file: int = 0,
        on_file_closed: Callable[[Path], None] | None = None,
    ) -> RollingFileWriter:
        """Open ``path`` (never overwriting) and start the writer thread;
        ``n_frames`` 0 captures until :meth:`request_stop`.

        With ``background``, every frame is written minus it (saturating at zero) and
        the files record the background they used. ``max_frames_per_file`` (whole
        volumes; 0: no limit) rolls the capture over into ``NAME_001.h5``, ...; each
        file is passed to ``on_file_closed`` once closed (e.g. to copy it).
        """
        if self.capturing:
            raise RuntimeError("already capturing; stop the current capture first")
        if n_frames < 0:
            raise ValueError("n_frames must be >= 0 (0: until stopped)")
        if planes_per_volume and n_frames % planes_per_volume:
            raise ValueError(
                f"n_frames {n_frames} is not a whole number of {planes_per_volume}-plane volumes"
            )
        attrs = dict(attrs or {})
        attrs["background_subtracted"] = background is not None
        per = planes_per_volume or 1
        per_file = max_frames_per_file or (-(-n_frames // per) * per if n_frames
                                           else OPEN_LENGTH_FILE_FRAMES)
        path = Path(path)
        guard = SpaceGuard(path.parent, path.stem, int(np.prod(frame_shape)) * 2)
        guard.open()  # refuses a capture with no room for a frame and closing the file
        try:
            writer = RollingFileWriter(path, frame_shape, per_file,
                                       planes_per_volume=planes_per_volume, attrs=attrs,
                                       extra_fields=extra_fields, on_closed=on_file_closed)
        except BaseException:
            guard.release()
            raise
        self._guard = guard
        if background is not None:
            writer.add_dataset("/entry/background/mean", background.mean,
                               {"n_frames": background.n_frames})
        self._writer = writer
        self._background = background
        try:
            ring = self.prepare(frame_shape, frames=n_frames)
            # an earlier request for the whole buffer waits until this capture is over
            ring.limit_pages(n_frames if 0 < n_frames < ring.capacity else None)
        except BaseException:
            writer.close()
            guard.release()
            raise
        stale = ring.reset()
        if stale:
            log.info("discarded %d stale frame(s) left in the buffer", stale)
        self._stop.clear()
        self._discard.clear()
        self._base_id = None
        self._next_position = 0
        self._rebase = False
        self.status = RecorderStatus(path=str(writer.path), capturing=True,
                                     frames_expected=n_frames)
        self.summary = CaptureSummary(planes_per_volume or BLOCK_FRAMES)
        self._thread = threading.Thread(target=self._drain, name="recorder", daemon=True)
        self._thread.start()
        log.info("capturing %d frames to %s (ring of %d frames)", n_frames, writer.path,
                 self._ring.capacity)
        return writer

    def submit(self, frame: Frame) -> bool:
        """Offer a frame; False (and counted) when dropped. Never blocks."""
        ring = self._ring
        if not self.status.capturing or ring is None:
            return False
        if self._base_id is None:
            self._base_id = frame.frame_id  # position 0 of the capture
        elif self._rebase:  # the restarted camera's first frame follows the last one
            self._base_id = frame.frame_id - self._next_position
        self._rebase = False
        frame.capture_position = frame.frame_id - self._base_id
        gap = frame.capture_position - self._next_position
        if gap > 0 and self._next_position > 0:
            self._camera_missed(frame.frame_id - gap, gap)
        self._next_position = frame.capture_position + 1
        self.status.frames_offered += 1
        # logged before the push: once pushed, the writer may log the frame first
        concurrence.record_queue("ring push", ring, frame.frame_id)
        if ring.push(frame):
            return True
        concurrence.record_queue("ring drop", ring, frame.frame_id)
        st = self.status
        st.frames_dropped = ring.stats.overflows
        st.dropped_ids = ring.stats.overflow_ids
        if st.frames_dropped == 1 or st.frames_dropped % 1000 == 0:
            log.warning("ring buffer full: %d frame(s) dropped so far, latest id %d "
                        "(the writer cannot keep up)", st.frames_dropped, frame.frame_id)
        return False

    def _camera_missed(self, first_id: int, n: int) -> None:
        """Frames the camera numbered but never delivered: holes at their places, and
        counted as not stored (the capture does not wait for them)."""
        st = self.status
        st.frames_missing += n
        if len(st.missing_ids) < 10_000:
            st.missing_ids.extend(range(first_id, first_id + min(n, 10_000)))
        log.warning("the camera never delivered %d frame(s) from id %d (%d so far)", n,
                    first_id, st.frames_missing)

    def camera_restarted(self) -> None:
        """The camera is started again within this capture (after a pause) and counts
        its frame ids from scratch: its next frame takes the position after the last
        one offered, instead of colliding with the first ones."""
        self._rebase = self._base_id is not None

    def fail(self, reason: str) -> None:
        """The frames' source failed (e.g. the camera): write what is buffered, then
        end the capture with ``reason`` as its error (the rest count as lost)."""
        if not self.status.error:
            self.status.error = reason
        self._stop.set()

    def request_stop(self, discard: bool = False) -> None:
        """Ask the writer to finish what is buffered (``discard``: to stop after the
        frame it is writing; the rest count as lost) and close the file. Returns at
        once; ``status.capturing`` turns False when the file is closed."""
        if discard:
            self._discard.set()
        self._stop.set()

    def stop(self, timeout: float = 30.0) -> RecorderStatus:
        """Finish writing what is buffered, close the file, return the final status."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout)
            self._thread = None
        return self.status

    def _position(self, frame: Frame, next_free: int) -> int | None:
        """Where ``frame`` goes: its camera frame id counted from the capture's first,
        so a lost frame leaves a hole and later planes stay in place; the next free
        position if ids do not fit (a camera that restarted its counter)."""
        base = self._base_id or 0
        k = frame.capture_position if frame.capture_position >= 0 else frame.frame_id - base
        if next_free <= k and (k < self.status.frames_expected
                               or not self.status.frames_expected):
            return k
        if not self.status.error:
            log.warning("frame id %d does not follow the capture's ids (first %d); "
                        "stored at the next position", frame.frame_id, base)
        return None

    def _drain(self) -> None:
        writer, ring, guard = self._writer, self._ring, self._guard
        assert writer is not None and ring is not None and guard is not None
        st = self.status
        background = self._background
        summary = self.summary
        finished = False
        unflushed = False  # frames written since frames last stopped coming
        try:
            while (not st.frames_expected
                   or writer.frames_written + ring.stats.overflows + st.frames_missing
                   < st.frames_expected):
                if self._discard.is_set():
                    break
                frame = ring.peek(timeout=0.05)
                if frame is None:
                    if self._stop.is_set():
                        break
                    if unflushed:  # frames paused or stopped: put them all on disk now
                        writer.flush()
                        st.flushes = writer.flushes
                        unflushed = False
                    continue
                if background is not None:
                    frame.image = background.subtract(frame.image)
                if self.write_delay_s:
                    time.sleep(self.write_delay_s)  # simulated slow disk
                guard.check()  # stop before the disk is full, not in the middle of a write
                concurrence.record_queue("write start", ring, frame.frame_id)
                position = self._position(frame, writer.positions)
                stored_at = writer.positions if position is None else position
                writer.write(frame, position)
                unflushed = True
                summary.add(stored_at, frame)  # before release: the ring reuses the image
                # counted before the slot is released: a client told the writer holds
                # nothing unwritten (`len(ring) == 0`) must find this frame counted
                st.frames_written = writer.frames_written
                st.complete_units = writer.complete_units
                st.files = len(writer.parts)
                st.flushes = writer.flushes
                ring.release()
                concurrence.record_queue("write end", ring, frame.frame_id)
            else:
                finished = True
        except Exception as exc:  # the file or disk failed: report, keep the file readable
            if isinstance(exc, DiskFullError):
                st.error = str(exc)
            elif is_disk_full(exc):  # filled by someone else between two checks
                st.error = f"disk full: no space left in {writer.path.parent}"
            else:
                st.error = f"{type(exc).__name__}: {exc}"
        finally:
            guard.release()  # room to write the last metadata and close the file
            self._finish(writer, ring, finished)

    def _finish(self, writer: RollingFileWriter, ring: FrameRing, finished: bool) -> None:
        """Close the file whatever happened, count what was stored and lost, and end
        the capture (a failure here must never leave it 'capturing')."""
        st = self.status
        try:
            if finished and st.frames_expected:  # frames lost at the end leave holes
                writer.pad_to(st.frames_expected)
            st.frames_dropped = ring.stats.overflows
            st.dropped_ids = list(ring.stats.overflow_ids)
            if ring.stats.overflows:
                writer.add_dataset("/entry/dropped/frame_id",
                                   ring.stats.overflow_ids, {"count": ring.stats.overflows})
                writer.add_dataset("/entry/dropped/timestamp", ring.stats.overflow_times,
                                   {"units": "s"})
            if st.frames_missing:
                writer.add_dataset("/entry/missing/frame_id", st.missing_ids,
                                   {"count": st.frames_missing})
            st.frames_written = writer.frames_written
            writer.close({"frames_expected": st.frames_expected,
                          "frames_written": st.frames_written,
                          "frames_dropped": st.frames_dropped,
                          "frames_missing": st.frames_missing, "frames_lost": st.frames_lost,
                          "error": st.error})
        except Exception as exc:
            closing = f"closing {writer.path.name} failed: {type(exc).__name__}: {exc}"
            st.error = f"{st.error}; {closing}" if st.error else closing
            writer.abandon()
        finally:
            self.summary.close()  # its last row is out before the capture ends
            st.frames_written = writer.frames_written
            st.complete_units = writer.complete_units
            st.files = len(writer.parts)
            gone = [p for p in writer.parts if p.removed]
            if gone:  # what was written into them is not stored
                st.frames_written -= writer.frames_removed
                st.complete_units = min(st.complete_units, writer.units_before_removed)
                removed = (f"{', '.join(p.path for p in gone)} removed while being "
                           f"written ({writer.frames_removed} frames went with it)")
                st.error = f"{st.error}; {removed}" if st.error else removed
            if st.error:
                st.error = (f"{st.error} ({st.frames_written} of {st.frames_expected} "
                            f"frames stored, {st.frames_lost} lost)")
                log.error("capture to %s failed: %s", writer.path, st.error)
            elif st.frames_lost:  # stopped early, or frames dropped: not a success
                log.warning("wrote %d of %d frames to %s: %d lost (%d dropped, %d never "
                            "delivered by the camera, %d not taken: the capture was "
                            "stopped)", writer.frames_written, st.frames_expected,
                            writer.path, st.frames_lost, st.frames_dropped,
                            st.frames_missing, st.frames_lost - st.frames_dropped
                            - st.frames_missing)
            else:
                success(log, "wrote %d frames to %s", writer.frames_written, writer.path)
            st.capturing = False
            ring.limit_pages(None)
