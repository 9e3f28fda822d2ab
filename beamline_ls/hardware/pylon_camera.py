"""A GenICam brightfield camera through Basler's pylon (pypylon) as the gating source.

Settings are applied in a fixed order on open (pixel format, ROI with offsets reset
first, exposure) and the frame rate at start; a value the camera refuses fails with
the camera's name, the setting and the range it allows. Each frame carries the
camera's frame number (GenICam block id) and is stamped on the host clock
(:class:`~beamline_ls.hardware.stamps.StampMap`) from the camera's own timestamp, or,
for a camera without one, from its frame number at its frame rate; pylon's emulator,
which makes each frame in software as it sends it, is stamped when the host received
the frame (``STAMPS``). Frame-number gaps are lost frames (counted by the gating).

pylon's camera emulator (``PYLON_CAMEMU=1``) is a complete stand-in: its
``ImageFilename`` feature plays a directory of image files, which ``image_filename``
sets (a real camera has no such feature; asking for it there is an error).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from beamline_ls.clock import Clock, RealTimeClock
from beamline_ls.frame import Frame
from beamline_ls.hardware.brightfield import FrameSink, FrameSource
from beamline_ls.hardware.stamps import StampMap

log = logging.getLogger(__name__)

#: how frames are stamped: the camera's timestamps (chunk data), its frame number at
#: its frame rate (a camera without timestamps: its frame clock is a crystal), or when
#: the host received them (a software-timed camera such as pylon's emulator, whose
#: frames are made when sent); auto: camera, else received for the emulator, else
#: frame_number
STAMPS = ("auto", "camera", "frame_number", "received")
PIXEL_FORMATS = {"Mono8": np.uint8, "Mono10": np.uint16, "Mono12": np.uint16,
                 "Mono16": np.uint16}


class PylonSource(FrameSource):
    """A Basler (or any GenTL/GigE Vision) camera found by serial number."""

    def __init__(self, serial: str = "", exposure_us: float = 1000.0,
                 roi: tuple[int, int, int, int] | None = None, pixel_format: str = "Mono8",
                 image_filename: str = "", latency_s: float = 0.0, stamp: str = "auto",
                 clock: Clock | None = None, pylon: Any = None) -> None:
        if stamp not in STAMPS:
            raise ValueError(f"hardware.brightfield.stamp must be one of {list(STAMPS)}, "
                             f"got {stamp!r}")
        if pixel_format not in PIXEL_FORMATS:
            raise ValueError(f"hardware.brightfield.pixel_format must be one of "
                             f"{list(PIXEL_FORMATS)}, got {pixel_format!r}")
        self.serial = serial
        self.exposure_us = exposure_us
        self.roi = roi
        self.pixel_format = pixel_format
        self.image_filename = image_filename
        self.latency_s = latency_s
        self.stamp = stamp
        self.clock = clock or RealTimeClock()
        self._pylon = pylon
        self._cam: Any = None
        self._label = f"Basler camera {serial or '(first found)'}"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._open_lock = threading.RLock()  # _open reads frame_shape
        self._stamp_by = "frame_number"
        self._tick_s = 1e-9

    # -- device ----------------------------------------------------------------------
    @property
    def pylon(self) -> Any:
        if self._pylon is None:
            from pypylon import pylon

            self._pylon = pylon
        return self._pylon

    @property
    def name(self) -> str:
        return self._label

    def _fail(self, setting: str, why: str) -> ValueError:
        return ValueError(f"{self._label}: {setting}: {why}")

    def open(self) -> None:
        """Find the camera, open it and apply the settings (in this order); once, even
        when several threads ask at the same moment (a second open of the same device
        would take it from the first)."""
        with self._open_lock:
            if self._cam is None:
                self._open()

    def _open(self) -> None:
        pylon = self.pylon
        tlf = pylon.TlFactory.GetInstance()
        devices = list(tlf.EnumerateDevices())
        found = [d.GetSerialNumber() for d in devices]
        chosen = [d for d in devices if not self.serial or d.GetSerialNumber() == self.serial]
        if not chosen:
            hint = ("; pylon's camera emulator appears only with PYLON_CAMEMU=1 in the "
                    "environment" if self.image_filename and not found else "")
            raise RuntimeError(f"{self._label}: not found (cameras present: "
                               f"{', '.join(found) or 'none'}){hint}")
        cam = pylon.InstantCamera(tlf.CreateDevice(chosen[0]))
        cam.Open()
        self._cam = cam
        info = cam.GetDeviceInfo()
        self._label = f"{info.GetModelName()} ({info.GetSerialNumber()})"
        try:
            self._set("PixelFormat", self.pixel_format)
            roi = self.roi
            if roi is None and self.image_filename:  # the emulator: the images' size
                h, w = played_image_shape(self.image_filename)
                roi = (0, 0, w, h)
            if roi is not None:
                x, y, w, h = roi
                self._set("OffsetX", 0)
                self._set("OffsetY", 0)
                self._set("Width", w)
                self._set("Height", h)
                self._set("OffsetX", x)
                self._set("OffsetY", y)
            self._set(self._feature("ExposureTime", "ExposureTimeAbs"), self.exposure_us)
            if self.image_filename:
                if not self._available("ImageFilename"):
                    raise self._fail("image_filename", "this camera cannot play image "
                                     "files (only pylon's emulator can)")
                self._set("ImageFilename", self.image_filename)
                self._set("ImageFileMode", "On")  # the files, not a test pattern
                if self._available("TestImageSelector"):
                    self._set("TestImageSelector", "Off")
            self._set("TriggerMode", "Off")
            self._stamp_by = self._stamping()
        except Exception:
            self.close()
            raise
        log.info("%s open: %s, %dx%d, exposure %.0f us, frames stamped by %s", self._label,
                 self.pixel_format, *reversed(self.frame_shape), self.exposure_us,
                 self._stamp_by)

    def _node(self, name: str) -> Any:
        return self._cam.GetNodeMap().GetNode(name)

    def _available(self, name: str) -> bool:
        from pypylon import genicam

        node = self._node(name)
        return node is not None and genicam.IsAvailable(node)

    def _feature(self, *names: str) -> str:
        """The first of ``names`` the camera has (SFNC 2 vs. older GigE names)."""
        for name in names:
            if self._available(name):
                return name
        raise self._fail(names[0], "the camera has no such feature")

    def _set(self, name: str, value: Any) -> None:
        """Set a feature; a refusal names the setting and what the camera allows."""
        node = getattr(self._cam, name)
        try:
            node.SetValue(value)
        except Exception as exc:  # noqa: BLE001 - GenICam raises its own types
            allowed = ""
            if hasattr(node, "Symbolics"):
                try:
                    allowed = f"; allowed: {list(node.Symbolics)}"
                except Exception:  # noqa: BLE001
                    allowed = ""
            elif hasattr(node, "GetMin"):
                allowed = f"; allowed: [{node.GetMin()}, {node.GetMax()}]"
            raise self._fail(name, f"cannot set {value!r}{allowed} "
                                   f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
                             ) from None

    def _stamping(self) -> str:
        """How this camera's frames get their time (see ``STAMPS``)."""
        if self.stamp in ("auto", "camera") and self._enable_timestamp_chunks():
            return "camera"
        if self.stamp == "camera":
            raise self._fail("stamp", "this camera sends no timestamps; allowed: "
                                      "frame_number, received")
        if self.stamp == "auto":
            emulated = self._cam.GetDeviceInfo().GetDeviceClass() == "BaslerCamEmu"
            return "received" if emulated else "frame_number"
        return self.stamp

    def _enable_timestamp_chunks(self) -> bool:
        """Camera timestamps per frame, as chunk data where the camera has them."""
        # the emulator lists ChunkModeActive but has no chunks: switching it on there
        # breaks grabbing, so only a camera with a chunk selector gets it
        if not (self._available("ChunkModeActive") and self._available("ChunkSelector")):
            return False
        self._set("ChunkModeActive", True)
        for chunk in ("Timestamp", "Framecounter"):
            try:
                self._cam.ChunkSelector.SetValue(chunk)
                self._cam.ChunkEnable.SetValue(True)
            except Exception:  # noqa: BLE001 - the camera lacks that chunk
                if chunk == "Timestamp":
                    self._set("ChunkModeActive", False)
                    return False
        for freq in ("GevTimestampTickFrequency",):
            if self._available(freq):
                self._tick_s = 1.0 / float(getattr(self._cam, freq).GetValue())
        return True

    @property
    def frame_shape(self) -> tuple[int, int]:
        self.open()
        return (int(self._cam.Height.GetValue()), int(self._cam.Width.GetValue()))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(PIXEL_FORMATS[self.pixel_format])

    # -- acquisition ---------------------------------------------------------------------
    def start(self, fps: float, sink: FrameSink) -> None:
        if self._thread is not None:
            raise RuntimeError(f"{self._label} is already acquiring")
        self.open()
        self._set(self._feature("AcquisitionFrameRateEnable"), True)
        rate = self._feature("AcquisitionFrameRate", "AcquisitionFrameRateAbs")
        self._set(rate, float(fps))
        resulting = self._feature("ResultingFrameRate", "ResultingFrameRateAbs")
        reached = float(getattr(self._cam, resulting).GetValue())
        if reached < 0.99 * fps:
            raise self._fail(rate, f"{fps:g} frames/s asked, the camera reaches "
                                   f"{reached:.4g} with this exposure and ROI")
        self._stop.clear()
        self._lost = 0
        self.failure = ""
        self._cam.MaxNumBuffer.SetValue(64)
        self._cam.StartGrabbing(self.pylon.GrabStrategy_OneByOne)
        # frames are numbered at the camera's own rate, which it reports exactly
        self._thread = threading.Thread(target=self._run, args=(reached, sink),
                                        name="pylon-grab", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        if self._cam is not None and self._cam.IsGrabbing():
            self._cam.StopGrabbing()

    def close(self) -> None:
        self.stop()
        if self._cam is not None:
            self._cam.Close()
            self._cam = None

    def _run(self, fps: float, sink: FrameSink) -> None:
        pylon = self.pylon
        stamps = StampMap(latency_s=self.latency_s)
        exposure_s = self.exposure_us * 1e-6
        timeout_ms = int(max(1000, 5000 / fps))
        first: int | None = None
        try:
            while not self._stop.is_set():
                result = self._cam.RetrieveResult(timeout_ms, pylon.TimeoutHandling_Return)
                if result is None or not result.IsValid():
                    if self._cam.IsGrabbing():
                        continue  # no frame within the timeout: look at the stop flag
                    raise RuntimeError("the camera stopped grabbing")
                received = self.clock.now()
                try:
                    if not result.GrabSucceeded():
                        self._lost += 1
                        log.warning("%s: frame failed: %s", self._label,
                                    result.GetErrorDescription())
                        continue
                    number = int(result.GetBlockID())
                    first = number if first is None else first
                    if self._stamp_by == "received":
                        camera_s = received
                        t = received - exposure_s - self.latency_s
                    else:
                        camera_s = (result.GetTimeStamp() * self._tick_s
                                    if self._stamp_by == "camera" else (number - first) / fps)
                        t = stamps.host_time(camera_s, received, exposure_s)
                    image = np.array(result.Array, copy=True)
                finally:
                    result.Release()
                frame = Frame(image, number, t, exposure_s)
                frame.extra["camera_timestamp"] = camera_s
                sink(frame)
        except Exception as exc:  # noqa: BLE001 - the thread ends; status says why
            self.failure = f"{self._label}: {type(exc).__name__}: {exc}"
            log.error("%s", self.failure)


def list_cameras(pylon: Any = None) -> list[str]:
    """'model (serial)' of every camera pylon sees, for ``check-hardware``."""
    if pylon is None:
        from pypylon import pylon
    devices = pylon.TlFactory.GetInstance().EnumerateDevices()
    return [f"{d.GetModelName()} ({d.GetSerialNumber()})" for d in devices]


def played_image_shape(path: str) -> tuple[int, int]:
    """(height, width) of the first image the emulator would play from ``path`` (a
    file or a directory of files), so its frames are the images' own size."""
    from PIL import Image

    p = Path(path)
    if not p.exists():
        raise ValueError(f"hardware.brightfield.image_filename: no such file or "
                         f"directory: {p}")
    files = sorted(f for f in p.iterdir() if f.is_file()) if p.is_dir() else [p]
    if not files:
        raise ValueError(f"hardware.brightfield.image_filename: no images in {p}")
    with Image.open(files[0]) as image:
        width, height = image.size
    return height, width
