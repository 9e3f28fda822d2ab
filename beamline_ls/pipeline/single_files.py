"""One file per frame (areaDetector's ``FileWriteMode`` Single with ``AutoSave``).

The camera thread only queues the frame with its file number; a writer thread names
the file (the caller's ``path_for``), writes it in the project's frame-file layout and
closes it. A frame that finds the queue full is not taken (the caller counts it as
dropped); a file that cannot be written is counted and its reason kept, and writing goes
on with the next frame.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from beamline_ls.frame import Frame
from beamline_ls.pipeline.hdf5_writer import FrameFileWriter

log = logging.getLogger(__name__)


@dataclass
class SingleFilesStatus:
    written: int = 0
    failed: int = 0
    last_path: str = ""
    error: str = ""  # the latest failure, with its file


class SingleFileWriter:
    """Writes queued frames to a file each, on its own thread."""

    def __init__(self, path_for: Callable[[int], Path], capacity: int = 32):
        self.path_for = path_for
        self.status = SingleFilesStatus()
        self._queue: queue.Queue[tuple[Frame, int] | None] = queue.Queue(maxsize=capacity)
        self._thread = threading.Thread(target=self._run, name="single-files", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        return self._queue.qsize()

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    def offer(self, frame: Frame, number: int) -> bool:
        """Queue ``frame`` for file ``number``; False when the queue is full. Never
        blocks."""
        try:
            self._queue.put_nowait((frame, number))
        except queue.Full:
            return False
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._queue.put(None, timeout=timeout)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            frame, number = item
            try:
                path = self.path_for(number)
                writer = FrameFileWriter(path, frame.image.shape,
                                         attrs={"exposure_s": frame.exposure})
                try:
                    writer.write(frame)
                finally:
                    writer.close()
            except Exception as exc:  # the next frame gets its own chance
                self.status.failed += 1
                self.status.error = f"frame {frame.frame_id} (file {number}): " \
                                    f"{type(exc).__name__}: {exc}"
                log.error("single-file mode: %s", self.status.error)
                continue
            self.status.written += 1
            self.status.last_path = str(path)
