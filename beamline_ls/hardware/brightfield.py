"""Brightfield (gating) frame sources: what the gating analyzer watches.

A source acquires in its own thread and hands each frame, stamped on the host's
clock (:mod:`beamline_ls.clock`), to a sink that must return at once. Backends: the
simulated heart (:mod:`beamline_ls.sim.gating`), a GenICam camera through pylon
(:mod:`beamline_ls.hardware.pylon_camera`) and a recorded TIFF replayed live at its own
frame rate (:class:`TiffReplaySource`, this module).

Frames the *camera* lost (frame-number gaps, buffer overruns) are counted in
``frames_lost``; the analyzer sees them as a gap in time. Only a simulated heart knows
its true phase: ``true_phase`` is None for every real source, so no simulator-only
field is stored for a real specimen.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path

import numpy as np

from beamline_ls.clock import Clock, RealTimeClock
from beamline_ls.frame import Frame

log = logging.getLogger(__name__)

FrameSink = Callable[[Frame], None]


class FrameSource(ABC):
    """What every brightfield backend provides.

    ``failure``: why acquisition ended on its own (the SDK's words); empty otherwise.
    ``true_phase``: ``t -> heart phase (rad)`` for a simulated heart, else None.
    """

    failure: str = ""
    true_phase: Callable[[float], float] | None = None

    @property
    @abstractmethod
    def name(self) -> str:
        """What the source is, for status PVs and ``check-hardware``."""

    @property
    @abstractmethod
    def frame_shape(self) -> tuple[int, int]: ...

    @property
    @abstractmethod
    def dtype(self) -> np.dtype: ...

    def rate(self, fps: float) -> float:
        """Frame rate actually used for a request of ``fps``."""
        return fps

    @abstractmethod
    def start(self, fps: float, sink: FrameSink) -> None:
        """Acquire at ``fps`` frames/s (a replay keeps its own rate), non-blocking."""

    @abstractmethod
    def stop(self) -> None:
        """Returns when no more frames will be delivered."""

    @property
    def frames_lost(self) -> int:
        """Frames the camera numbered but never delivered, since the last start."""
        return self._lost

    _lost: int = 0

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Release the device (IOC shutdown)."""


class PacedSource(FrameSource):
    """A source whose frames are made at paced times on a clock by :meth:`frame_at`
    (the simulated heart, a replayed file): a thread waits for each frame's end of
    exposure, then makes and delivers it, stamped with its start time."""

    exposure_s: float = 0.001
    #: frames a camera holds for the host (pylon's default MaxNumBuffer is 10)
    BUFFER_FRAMES = 10

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @abstractmethod
    def frame_at(self, k: int, t: float) -> np.ndarray:
        """Image of frame ``k``, exposed from ``t`` for ``exposure_s``."""

    def start(self, fps: float, sink: FrameSink) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self.name} is already acquiring")
        self._stop.clear()
        self._lost = 0
        self.failure = ""
        self._thread = threading.Thread(target=self._run, args=(self.rate(fps), sink),
                                        name="brightfield", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None

    def _run(self, fps: float, sink: FrameSink) -> None:
        """Frames at t0 + k / fps. Like a camera with ``BUFFER_FRAMES`` buffers: a
        thread that falls behind (a busy host) delivers the waiting frames late but
        complete; once more than ``BUFFER_FRAMES`` wait (a starved CPU), it goes on
        with the newest frame whose exposure has ended and the skipped numbers are
        lost frames, so frames are never delivered ever later."""
        t0 = self.clock.now() + 0.01
        k = 0
        try:
            while not self._stop.is_set():
                t = t0 + k / fps
                if not self.clock.sleep_until(t + self.exposure_s, self._stop):
                    break
                newest = int((self.clock.now() - self.exposure_s - t0) * fps)
                if newest - k >= self.BUFFER_FRAMES:
                    self._lost += newest - k
                    k = newest
                    t = t0 + k / fps
                sink(Frame(self.frame_at(k, t), k, t, self.exposure_s))
                k += 1
        except Exception as exc:  # noqa: BLE001 - the thread ends; status says why
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("%s failed: %s", self.name, self.failure)


class TiffReplaySource(PacedSource):
    """A recorded brightfield TIFF played live at its own frame rate, looped.

    For rehearsing a gated scan on a recorded heart, or for a microscope whose
    brightfield camera has no driver yet. The requested gating frame rate is ignored
    (a recording has its rate); a mismatch is logged.
    """

    def __init__(self, path: str | Path, fps: float, clock: Clock | None = None,
                 loop: bool = True) -> None:
        from ..gating.video_file import VideoError, load_video

        super().__init__(clock or RealTimeClock())
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"hardware.brightfield.path: {self.path} is a directory: "
                             "give the TIFF stack's file (image files in a directory "
                             "are played by pylon's emulator: image_filename)")
        if not self.path.is_file():
            raise ValueError(f"hardware.brightfield.path: no such file: {self.path}")
        if not 1.0 <= fps <= 1000.0:
            raise ValueError(f"hardware.brightfield.fps must be in [1, 1000], got {fps}")
        try:
            stack, notes = load_video(self.path)
        except VideoError as exc:
            raise ValueError(f"hardware.brightfield.path: {self.path}: {exc}") from exc
        for note in notes:
            log.info("%s: %s", self.path.name, note)
        self.frames = stack
        self.fps = float(fps)
        self.loop = loop
        self.exposure_s = min(0.001, 0.5 / self.fps)

    @property
    def name(self) -> str:
        return (f"replay of {self.path.name} ({len(self.frames)} frames at "
                f"{self.fps:g} frames/s)")

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (int(self.frames.shape[1]), int(self.frames.shape[2]))

    @property
    def dtype(self) -> np.dtype:
        return self.frames.dtype

    def rate(self, fps: float) -> float:
        if abs(fps - self.fps) > 1e-6 * self.fps:
            log.info("%s plays at its own %.3g frames/s, not the requested %.3g",
                     self.path.name, self.fps, fps)
        return self.fps

    def frame_at(self, k: int, t: float) -> np.ndarray:
        n = len(self.frames)
        if k >= n and not self.loop:
            self._stop.set()
            raise EOFError(f"{self.path.name}: end of the recording ({n} frames)")
        return self.frames[k % n]
