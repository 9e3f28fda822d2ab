"""Roll a long capture over into several HDF5 files, each small enough to load whole.

Why: a 20-minute capture at 800 MiB/s is ~1 TB; analysis loads files into memory, and
copies to slow storage should start before the capture ends. Each file holds at most
``max_frames_per_file`` frames (whole volumes), by default sized from the RAM of this
machine (:func:`frames_per_file`). Files are named ``NAME.h5``, ``NAME_001.h5``,
``NAME_002.h5``... Each is a complete, self-describing file (same layout as a single
file, attributes ``part``, ``first_frame`` and ``first_volume``), closed, and handed to
``on_closed`` (e.g. the copy to slow storage) as soon as it is full.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beamline_ls.frame import Frame
from beamline_ls.pipeline.hdf5_writer import FrameFileWriter
from beamline_ls.pipeline.parts import part_path

log = logging.getLogger(__name__)


def frames_per_file(frame_shape: tuple[int, int], planes_per_volume: int = 0,
                    bytes_per_pixel: int = 2, ram_fraction: float = 0.25) -> int:
    """Most frames per file: ``ram_fraction`` of this machine's RAM, whole volumes.

    At least one volume (or one frame) per file, however small the RAM.
    """
    try:
        ram = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        ram = 8 << 30
    frame_bytes = frame_shape[0] * frame_shape[1] * bytes_per_pixel
    n = max(1, int(ram * ram_fraction) // frame_bytes)
    per = planes_per_volume or 1
    return max(per, n // per * per)


@dataclass
class FilePart:
    """One file of a capture, starting at capture position ``first_frame``; ``frames``
    counts the frames stored in it (lost frames leave holes, not counted).

    ``identity`` is the file's (device, inode) when it was created; ``removed`` is set
    at its close when its name no longer leads to that file (deleted, or replaced,
    while it was written: a writer keeps writing into an unlinked file without error,
    and those frames vanish with it)."""

    path: str
    first_frame: int
    frames: int = 0
    closed: bool = False
    identity: tuple[int, int] | None = None
    removed: bool = False

    def check_still_there(self) -> None:
        """Set :attr:`removed` if the name no longer leads to the file written."""
        try:
            st = os.stat(self.path)
        except OSError:
            self.removed = True
            return
        self.removed = self.identity is not None and (st.st_dev, st.st_ino) != self.identity


class RollingFileWriter:
    """:class:`FrameFileWriter`'s interface over a series of files.

    ``path`` names the first file; datasets added before the first frame (the
    background) go into every file, those added later (the dropped-frame lists) into
    the last one. Attributes passed to :meth:`close` go into the last file too.
    """

    def __init__(
        self,
        path: str | Path,
        frame_shape: tuple[int, int],
        max_frames_per_file: int,
        planes_per_volume: int = 0,
        attrs: dict[str, Any] | None = None,
        extra_fields: tuple[str, ...] = (),
        on_closed: Callable[[Path], None] | None = None,
    ):
        self.planes = int(planes_per_volume)
        per = self.planes or 1
        if max_frames_per_file < per or max_frames_per_file % per:
            raise ValueError(
                f"max_frames_per_file {max_frames_per_file} must be a positive multiple of "
                f"the {per} frame(s) per volume")
        self.max_frames_per_file = int(max_frames_per_file)
        self.frame_shape = tuple(frame_shape)
        self.attrs = dict(attrs or {})
        self.extra_fields = tuple(extra_fields)
        self.on_closed = on_closed
        self.path = Path(path)
        self.parts: list[FilePart] = []
        self._early: list[tuple[str, np.ndarray, dict[str, Any]]] = []
        self._closed_frames = 0
        self._closed_positions = 0
        self._closed_units = 0
        self._closed_flushes = 0
        self._current = self._open(self.path)

    def _open(self, path: Path) -> FrameFileWriter:
        first = self._closed_positions
        part = FilePart(str(path), first)
        attrs = {**self.attrs, "part": len(self.parts), "first_frame": first,
                 "first_volume": first // self.planes if self.planes else 0}
        writer = FrameFileWriter(path, self.frame_shape, planes_per_volume=self.planes,
                                 attrs=attrs, extra_fields=self.extra_fields,
                                 volume_offset=first // self.planes if self.planes else 0)
        st = os.stat(path)
        part.identity = (st.st_dev, st.st_ino)
        for dpath, data, dattrs in self._early:
            writer.add_dataset(dpath, data, dattrs)
        self.parts.append(part)
        return writer

    @property
    def frames_written(self) -> int:
        return self._closed_frames + self._current.frames_written

    @property
    def frames_removed(self) -> int:
        """Frames written into files that were removed while being written (known
        once those files are closed)."""
        return sum(p.frames for p in self.parts if p.removed)

    @property
    def units_before_removed(self) -> int | None:
        """Whole volumes (or frames) before the first removed file, or None."""
        for p in self.parts:
            if p.removed:
                return p.first_frame // self.planes if self.planes else p.first_frame
        return None

    @property
    def positions(self) -> int:
        """Positions used so far, holes left by lost frames included."""
        return self._closed_positions + self._current.positions

    @property
    def complete_units(self) -> int:
        return self._closed_units + self._current.complete_units

    @property
    def flushes(self) -> int:
        """Flushes of this capture's files so far."""
        return self._closed_flushes + self._current.flushes

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return self._current.chunk_shape

    def write(self, frame: Frame, position: int | None = None) -> None:
        """Store ``frame`` at capture ``position`` (default: the next), in the file that
        holds that position; see :meth:`FrameFileWriter.write`."""
        k = self.positions if position is None else int(position)
        while k >= self._closed_positions + self.max_frames_per_file:
            self._roll()
        self._current.write(frame, k - self._closed_positions)
        self.parts[-1].frames = self._current.frames_written

    def pad_to(self, positions: int) -> None:
        """Extend the capture to ``positions``, rolling over as needed (lost frames at
        the end become holes, so the files hold exactly the planned frames)."""
        while positions > self._closed_positions + self.max_frames_per_file:
            self._roll()
        self._current.pad_to(positions - self._closed_positions)

    def _roll(self) -> None:
        """Fill the current file to its size (holes), close it, hand it on, open the next."""
        done = self._current
        done.pad_to(self.max_frames_per_file)
        self.parts[-1].check_still_there()
        done.close()
        self.parts[-1].closed = True
        self._closed_frames += done.frames_written
        self._closed_positions += done.positions
        self._closed_units += done.complete_units
        self._closed_flushes += done.flushes
        if self.parts[-1].removed:
            log.error("%s was removed while being written: its %d frames are lost",
                      done.path, done.frames_written)
        else:
            log.info("file %s full (%d frames); continuing in the next file", done.path,
                     done.frames_written)
            self._hand_on(done.path)
        self._current = self._open(part_path(self.path, len(self.parts)))

    def _hand_on(self, path: Path) -> None:
        if self.on_closed is not None:
            try:
                self.on_closed(path)
            except Exception:  # a copy hook must never stop the writer
                log.exception("on_closed hook failed for %s", path)

    def add_dataset(self, path: str, data: Any, attrs: dict[str, Any] | None = None) -> None:
        if self.positions == 0:
            self._early.append((path, np.asarray(data), dict(attrs or {})))
        self._current.add_dataset(path, data, attrs)

    def flush(self) -> None:
        self._current.flush()

    def close(self, attrs: dict[str, Any] | None = None) -> None:
        if self.parts[-1].closed:
            return
        self.parts[-1].check_still_there()
        self._current.close({**(attrs or {}), "files_in_capture": len(self.parts)})
        self.parts[-1].closed = True
        self.parts[-1].frames = self._current.frames_written
        if not self.parts[-1].removed:  # nothing left to copy otherwise
            self._hand_on(self._current.path)

    def abandon(self) -> None:
        """Let go of the current file after a failed close (never raises)."""
        self.parts[-1].check_still_there()
        self._current.abandon()
        self.parts[-1].closed = True
