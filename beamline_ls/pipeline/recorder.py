"""Camera -> bounded buffer -> writer thread.

The camera thread calls :meth:`Recorder.submit`, which never blocks: when the buffer
is full the frame is dropped and counted, with the id of the first lost frame logged.
The writer thread drains the buffer into a :class:`FrameFileWriter`. Losses are
counted and reported (IOC PV, log, run documents), never silent.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beamline_ls.frame import Frame
from beamline_ls.log import success
from beamline_ls.pipeline.hdf5_writer import FrameFileWriter

log = logging.getLogger(__name__)

_STOP = object()


@dataclass
class RecorderStatus:
    path: str = ""
    capturing: bool = False
    frames_expected: int = 0
    frames_written: int = 0
    complete_units: int = 0
    frames_dropped: int = 0
    dropped_ids: list[int] = field(default_factory=list)
    error: str = ""


class Recorder:
    """Record frames to one file per capture; ``buffer_frames`` bounds memory."""

    def __init__(self, buffer_frames: int = 256):
        self.buffer_frames = buffer_frames
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=buffer_frames)
        self._thread: threading.Thread | None = None
        self._writer: FrameFileWriter | None = None
        self.status = RecorderStatus()
        self._lock = threading.Lock()

    @property
    def capturing(self) -> bool:
        return self.status.capturing

    def start(
        self,
        path: str | Path,
        frame_shape: tuple[int, int],
        n_frames: int,
        planes_per_volume: int = 0,
        attrs: dict[str, Any] | None = None,
        extra_fields: tuple[str, ...] = (),
    ) -> FrameFileWriter:
        """Open ``path`` (never overwriting) and start the writer thread."""
        if self.capturing:
            raise RuntimeError("already capturing; stop the current capture first")
        if n_frames < 1:
            raise ValueError("n_frames must be >= 1")
        if planes_per_volume and n_frames % planes_per_volume:
            raise ValueError(
                f"n_frames {n_frames} is not a whole number of {planes_per_volume}-plane volumes"
            )
        writer = FrameFileWriter(path, frame_shape, planes_per_volume=planes_per_volume,
                                 attrs=attrs, extra_fields=extra_fields)
        self._writer = writer
        self._queue = queue.Queue(maxsize=self.buffer_frames)
        self.status = RecorderStatus(path=str(writer.path), capturing=True,
                                     frames_expected=n_frames)
        self._thread = threading.Thread(target=self._drain, name="recorder", daemon=True)
        self._thread.start()
        log.info("capturing %d frames to %s", n_frames, writer.path)
        return writer

    def submit(self, frame: Frame) -> bool:
        """Offer a frame; False (and counted) when dropped. Never blocks."""
        if not self.status.capturing:
            return False
        try:
            self._queue.put_nowait(frame)
            return True
        except queue.Full:
            with self._lock:
                self.status.frames_dropped += 1
                if len(self.status.dropped_ids) < 10_000:
                    self.status.dropped_ids.append(frame.frame_id)
            if self.status.frames_dropped == 1:
                log.warning("buffer full: frame %d dropped (writer cannot keep up)",
                            frame.frame_id)
            return False

    def stop(self, timeout: float = 30.0) -> RecorderStatus:
        """Finish writing what is buffered, close the file, return the final status."""
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
        return self.status

    def _drain(self) -> None:
        writer = self._writer
        assert writer is not None
        st = self.status
        try:
            while True:
                item = self._queue.get()
                if item is _STOP:
                    break
                writer.write(item)
                st.frames_written = writer.frames_written
                st.complete_units = writer.complete_units
                if writer.frames_written >= st.frames_expected:
                    break
        except Exception as exc:  # the file or disk failed: report, keep the file readable
            st.error = f"{type(exc).__name__}: {exc}"
            log.error("writing %s failed: %s", writer.path, st.error)
        finally:
            writer.close({"frames_written": writer.frames_written,
                          "frames_dropped": st.frames_dropped})
            st.frames_written = writer.frames_written
            st.complete_units = writer.complete_units
            st.capturing = False
            if not st.error:
                success(log, "wrote %d frames to %s (%d dropped)", writer.frames_written,
                        writer.path, st.frames_dropped)
