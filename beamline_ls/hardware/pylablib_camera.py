"""The fluorescence sCMOS through pylablib: Hamamatsu (DCAM) or Andor (SDK3).

One driver for both SDKs, chosen by ``[hardware.camera] sdk``; pylablib gives them the
same camera interface. Settings are applied in a fixed order while the camera is
stopped: trigger mode, ROI and binning, exposure, frame period, readout speed, then
the frame buffer; each is read back, and a value the camera does not take fails with
the camera, the setting and what it allows. Frames are read in batches from the SDK's
buffer; the camera's frame index is the frame id (a gap is a frame the camera lost,
say the buffer overflowed before it was read) and the camera's timestamp, mapped onto
the host clock (:class:`~beamline_ls.hardware.stamps.StampMap`), is the frame's time.

Vendor libraries on Linux: pylablib 1.4 refuses every library load on a non-Windows
system when ``pylablib.par["devices/only_windows_dlls"]`` is False (``load_lib``:
"DLLs are not available on non-Windows platform"), whatever its name suggests; it
must stay True (its default), which :func:`camera_class` makes sure of. pylablib then
loads the library by its Windows name (``dcamapi.dll``, ``atcore.dll``) from the folder
in ``pylablib.par["devices/dlls", "dcamapi" | "andor_sdk3"]`` or the library path, so
on Linux that folder holds a link of that name to the vendor's ``.so``: set it with
``[hardware.camera] library_dir``. A camera that cannot be opened says so naming the
``sdk`` key, the library and that setting.
"""

from __future__ import annotations

import importlib
import logging
import math
import platform
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from beamline_ls.clock import Clock, RealTimeClock
from beamline_ls.frame import Frame
from beamline_ls.hardware.camera import CameraDriver, CameraSettings, FrameSink
from beamline_ls.hardware.stamps import StampMap

log = logging.getLogger(__name__)

#: sdk key -> (pylablib module, camera class)
SDKS = {"dcam": ("pylablib.devices.DCAM", "DCAMCamera"),
        "andor3": ("pylablib.devices.Andor", "AndorSDK3Camera")}
#: sdk key -> (the library's name as pylablib loads it, its ``devices/dlls`` parameter)
LIBRARIES = {"dcam": ("dcamapi.dll", "dcamapi"), "andor3": ("atcore.dll", "andor_sdk3")}
#: our trigger modes -> each SDK's (trigger mode, DCAM "TRIGGER ACTIVE" or None)
TRIGGERS = {
    "dcam": {"Internal": ("int", None), "External": ("ext", "edge"),
             "External Exposure": ("ext", "level")},
    "andor3": {"Internal": ("Internal", None), "External": ("External", None),
               "External Exposure": ("External Exposure", None)},
}
DCAM_TRIGGER_ACTIVE = {"edge": 1, "level": 2}
READOUT_TIME_ATTRIBUTE = {"dcam": "TIMING READOUT TIME", "andor3": "ReadoutTime"}
TEMPERATURE_ATTRIBUTE = {"dcam": "SENSOR TEMPERATURE", "andor3": "SensorTemperature"}


def camera_class(sdk: str, library_dir: str = "") -> type:
    """pylablib's camera class for ``sdk``, with vendor libraries loadable on Linux
    (from ``library_dir`` when given; see the module's docstring)."""
    if sdk not in SDKS:
        raise ValueError(f"hardware.camera.sdk must be one of {list(SDKS)}, got {sdk!r}")
    import pylablib

    pylablib.par["devices/only_windows_dlls"] = True  # False forbids loads off Windows
    if library_dir:
        pylablib.par["devices/dlls", LIBRARIES[sdk][1]] = str(library_dir)
    module, name = SDKS[sdk]
    return getattr(importlib.import_module(module), name)


def _open_failure(sdk: str, index: int, exc: BaseException) -> str:
    """Why camera ``index`` of ``sdk`` did not open, with what to set."""
    lib, par = LIBRARIES[sdk]
    return (f"{sdk} camera {index} did not open ([hardware.camera] sdk = {sdk!r}): "
            f"{type(exc).__name__}: {exc}. pylablib loads the vendor library as {lib} "
            f"from [hardware.camera] library_dir (pylablib.par['devices/dlls', {par!r}]) "
            "or the library path: on Linux a link of that name to the vendor's .so")


class PylablibCamera(CameraDriver):
    """An sCMOS camera through pylablib; ``opener(index)`` returns the open camera
    (the class itself by default; tests pass fakes built from it)."""

    #: the camera's own timestamp (s, its clock) beside the host-mapped ``timestamp``
    frame_fields = ("camera_timestamp",)

    def __init__(self, sdk: str, index: int = 0, readout_speed: str = "",
                 buffer_frames: int = 200, clock: Clock | None = None,
                 opener: Callable[[int], Any] | None = None,
                 library_dir: str = "") -> None:
        self.cls = camera_class(sdk, library_dir)
        self.sdk = sdk
        self.index = index
        self.readout_speed = readout_speed
        self.buffer_frames = buffer_frames
        self.clock = clock or RealTimeClock()
        self._opener = opener or self.cls
        self._cam: Any = None
        self._label = f"{sdk} camera {index}"
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._frames = 0
        self._lost = 0
        self._shape: tuple[int, int] | None = None
        self.manufacturer = self.model = self.serial_number = self.firmware_version = ""
        self.sdk_version = f"pylablib {SDKS[sdk][1]}"

    # -- device --------------------------------------------------------------------------
    @property
    def cam(self) -> Any:
        """The open camera (opened on first use: building drivers touches nothing)."""
        return self._cam if self._cam is not None else self._open()

    def _open(self) -> Any:
        if self._cam is None:
            if self.sdk == "andor3" and self._opener is self.cls \
                    and platform.system() != "Windows":
                import pylablib

                raise OSError(
                    f"andor3 camera {self.index} cannot be opened on {platform.system()}: "
                    f"pylablib {pylablib.__version__} loads Andor SDK3 (atcore) with the "
                    "stdcall convention, which Python's ctypes has only on Windows. Run "
                    "the Andor camera from Windows, or use sdk = 'dcam' (Hamamatsu)")
            try:
                cam = self._opener(self.index)
            except OSError as exc:  # the vendor library did not load, or no camera
                raise OSError(_open_failure(self.sdk, self.index, exc)) from exc
            info = cam.get_device_info()
            if self.sdk == "dcam":
                self.manufacturer, self.model = info.vendor, info.model
                self.firmware_version = info.camera_version
            else:
                self.manufacturer, self.model = "Andor", info.camera_model
                self.firmware_version = info.firmware_version
            self.serial_number = str(info.serial_number)
            self._label = f"{self.manufacturer} {self.model} ({self.serial_number})"
            w, h = cam.get_detector_size()
            self._shape = (int(h), int(w))
            self._cam = cam
            log.info("%s open through pylablib (%s), sensor %dx%d", self._label, self.sdk,
                     w, h)
        return self._cam

    @property
    def name(self) -> str:
        return self._label

    def open(self) -> None:
        self._open()

    @property
    def sensor_shape(self) -> tuple[int, int]:
        """The sensor (h, w) once open; (0, 0) before (no SDK call: the IOC's event
        loop asks this)."""
        return self._shape or (0, 0)

    def readout_time_s(self, settings: CameraSettings) -> float:
        """The readout time the camera reported when its settings were last applied
        (no SDK call: the IOC's event loop asks this)."""
        return self._readout_s

    _readout_s = 0.0

    def _read_readout_time(self, settings: CameraSettings) -> float:
        try:
            return float(self.cam.get_attribute_value(READOUT_TIME_ATTRIBUTE[self.sdk]))
        except Exception:  # noqa: BLE001 - not reported by this model
            _, period = self.cam.get_frame_timings()
            return max(0.0, float(period) - settings.exposure_s)

    def temperature_c(self) -> float:
        try:
            return float(self.cam.get_attribute_value(TEMPERATURE_ATTRIBUTE[self.sdk]))
        except Exception:  # noqa: BLE001 - not reported by this model
            return math.nan

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def frames_acquired(self) -> int:
        return self._frames

    @property
    def triggers_missed(self) -> int:
        return 0  # the SDKs do not report ignored edges

    @property
    def frames_lost(self) -> int:
        return self._lost

    def _fail(self, setting: str, why: str) -> ValueError:
        return ValueError(f"{self._label}: {setting}: {why}")

    # -- settings, in order ----------------------------------------------------------------
    def apply(self, s: CameraSettings) -> None:
        """Apply ``s`` to the stopped camera, reading each value back."""
        cam = self.cam
        s.validate(self.sensor_shape)
        if cam.acquisition_in_progress():
            cam.stop_acquisition()
        modes = TRIGGERS[self.sdk]
        if s.trigger_mode not in modes:
            raise self._fail("trigger mode", f"{s.trigger_mode!r} not available; allowed: "
                                             f"{list(modes)}")
        mode, active = modes[s.trigger_mode]
        self._set("trigger mode", lambda: cam.set_trigger_mode(mode))
        if active is not None:
            self._set("trigger active", lambda: cam.set_attribute_value(
                "TRIGGER ACTIVE", DCAM_TRIGGER_ACTIVE[active]))
        x, y, w, h = s.roi
        b = s.binning
        self._set("ROI", lambda: cam.set_roi(x, x + w, y, y + h, b, b))
        got = tuple(cam.get_roi())
        if got != (x, x + w, y, y + h, b, b):
            limits = cam.get_roi_limits(b, b)
            raise self._fail("ROI", f"asked {(x, x + w, y, y + h, b, b)} (hstart, hend, "
                                    f"vstart, vend, hbin, vbin), the camera set {got}; "
                                    f"limits {limits}")
        self._set("exposure", lambda: cam.set_exposure(s.exposure_s))
        exposure = float(cam.get_exposure())
        if not math.isclose(exposure, s.exposure_s, rel_tol=0.02, abs_tol=2e-5):
            raise self._fail("exposure", f"asked {s.exposure_s:g} s, the camera set "
                                         f"{exposure:g} s")
        if s.period_s > 0:
            if not hasattr(self.cls, "set_frame_period"):
                raise self._fail("frame period", "not settable through this SDK; use 0 "
                                                 "(as fast as exposure and readout allow)")
            self._set("frame period", lambda: cam.set_frame_period(s.period_s))
        if self.readout_speed:
            if self.sdk == "dcam":
                self._set("readout speed", lambda: cam.set_readout_speed(self.readout_speed))
            else:
                self._set("readout speed", lambda: cam.set_attribute_value(
                    "PixelReadoutRate", self.readout_speed))
        self._set("frame buffer", lambda: cam.setup_acquisition(
            mode="sequence", nframes=self.buffer_frames))
        self._readout_s = self._read_readout_time(s)

    def _set(self, setting: str, call: Callable[[], Any]) -> None:
        try:
            call()
        except ValueError as exc:  # pylablib: a value outside the allowed set or range
            raise self._fail(setting, str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - the SDK's own error, with its words
            raise self._fail(setting, f"{type(exc).__name__}: {exc}") from None

    # -- acquisition -----------------------------------------------------------------------
    def start(self, settings: CameraSettings, n_frames: int | None, sink: FrameSink) -> None:
        if self.running:
            raise RuntimeError(f"{self._label} is already acquiring")
        self.apply(settings)
        self._stop.clear()
        self._frames = 0
        self._lost = 0
        self.failure = ""
        self._set("start", self.cam.start_acquisition)
        self._thread = threading.Thread(target=self._run, args=(settings, n_frames, sink),
                                        name="pylablib-camera", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                log.warning("%s: acquisition thread did not stop within 5 s", self._label)
        self._thread = None
        if self._cam is not None and self._cam.acquisition_in_progress():
            self._cam.stop_acquisition()

    def close(self) -> None:
        self.stop()
        if self._cam is not None:
            self._cam.close()
            self._cam = None

    def _stamp_seconds(self, info: Any) -> float:
        """The frame's camera timestamp in seconds."""
        if self.sdk == "dcam":
            return float(info.timestamp_us) * 1e-6
        return float(info.timestamp_dev) / self._tick_hz

    _tick_hz = 1e9

    def _run(self, s: CameraSettings, n_frames: int | None, sink: FrameSink) -> None:
        cam = self.cam
        stamps = StampMap()
        if self.sdk == "andor3":
            try:
                self._tick_hz = float(cam.get_attribute_value("TimestampClockFrequency"))
            except Exception:  # noqa: BLE001 - not reported: nanoseconds assumed
                self._tick_hz = 1e9
        timeout = self.cls.TimeoutError
        next_index = 0
        try:
            while not self._stop.is_set() and (n_frames is None or next_index < n_frames):
                try:
                    cam.wait_for_frame(since="lastread", nframes=1, timeout=0.2)
                except timeout:
                    continue
                images, infos = cam.read_multiple_images(return_info=True)
                received = self.clock.now()
                for image, info in zip(images, infos, strict=True):
                    index = int(info.frame_index)
                    if n_frames is not None and index >= n_frames:
                        break
                    if index > next_index:  # overwritten in the buffer before read
                        self._lost += index - next_index
                        log.warning("%s: frames %d..%d lost by the camera (its buffer of "
                                    "%d frames overflowed)", self._label, next_index,
                                    index - 1, self.buffer_frames)
                    next_index = index + 1
                    camera_s = self._stamp_seconds(info)
                    t = stamps.host_time(camera_s, received, s.exposure_s)
                    self._frames += 1
                    frame = Frame(np.asarray(image), index, t, s.exposure_s)
                    frame.extra["camera_timestamp"] = camera_s
                    sink(frame)
        except Exception as exc:  # noqa: BLE001 - the thread ends; the IOC reports why
            self.failure = f"{self._label}: {type(exc).__name__}: {exc}"
            log.error("%s", self.failure)
        finally:
            try:
                cam.stop_acquisition()
            except Exception as exc:  # noqa: BLE001
                log.error("%s: stopping the acquisition failed: %s", self._label, exc)
