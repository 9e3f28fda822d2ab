"""Camera driver interface and the simulated sCMOS camera.

A driver acquires frames in its own thread and hands each one, with metadata, to a
sink callable. Acquisition never waits on the sink's consumer: sinks must be quick
(put on a bounded buffer) and count what they cannot take.
"""

from __future__ import annotations

import logging
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from beamline_ls.frame import Frame
from beamline_ls.sim.microscope import Roi, SimMicroscope

log = logging.getLogger(__name__)

#: Internal: free running; External: one frame per trigger edge; External Exposure: the
#: trigger pulse's width is the exposure (level trigger; real sCMOS cameras only)
TRIGGER_MODES = ("Internal", "External", "External Exposure")
BINNINGS = (1, 2, 4)


@dataclass(frozen=True)
class CameraSettings:
    """Acquisition settings; ``roi`` is (x, y, width, height) in unbinned pixels."""

    exposure_s: float = 0.005
    binning: int = 1
    roi: tuple[int, int, int, int] = (0, 0, 2048, 2048)
    trigger_mode: str = "Internal"
    period_s: float = 0.0  # internal trigger: 0 = as fast as exposure + readout allow

    def validate(self, sensor_shape: tuple[int, int]) -> None:
        h, w = sensor_shape
        x, y, rw, rh = self.roi
        if not 1e-5 <= self.exposure_s <= 10.0:
            raise ValueError(f"exposure_s must be in [1e-05, 10] s, got {self.exposure_s}")
        if self.binning not in BINNINGS:
            raise ValueError(f"binning must be one of {BINNINGS}, got {self.binning}")
        if x < 0 or y < 0 or rw < self.binning or rh < self.binning or x + rw > w or y + rh > h:
            raise ValueError(f"roi {self.roi} does not fit the {w}x{h} sensor")
        if rw % self.binning or rh % self.binning:
            raise ValueError(f"roi size {rw}x{rh} must be a multiple of binning {self.binning}")
        if self.trigger_mode not in TRIGGER_MODES:
            raise ValueError(f"trigger_mode must be one of {TRIGGER_MODES}")
        if self.period_s < 0:
            raise ValueError("period_s must be >= 0")

    @property
    def frame_shape(self) -> tuple[int, int]:
        return (self.roi[3] // self.binning, self.roi[2] // self.binning)


FrameSink = Callable[[Frame], None]


class CameraDriver(ABC):
    """What every camera backend provides.

    ``failure``: why the last acquisition ended before its frames were taken (the
    SDK's or the thread's error, in its own words); empty while it runs or after a
    normal end. The IOC ends the capture with this cause instead of waiting.
    ``frame_fields``: metadata every frame of this camera carries in ``Frame.extra``
    (a real camera's own timestamp); the IOC publishes them and the file stores them.
    """

    failure: str = ""
    #: per-frame metadata this camera puts in ``Frame.extra`` (stored with every frame)
    frame_fields: tuple[str, ...] = ()

    def open(self) -> None:  # noqa: B027 (optional hook)
        """Connect to the camera (blocking; the IOC calls it on the driver's worker).
        Until it succeeds, ``sensor_shape`` and ``readout_time_s`` answer without
        touching the SDK."""

    @property
    @abstractmethod
    def sensor_shape(self) -> tuple[int, int]: ...

    @abstractmethod
    def readout_time_s(self, settings: CameraSettings) -> float: ...

    @abstractmethod
    def start(self, settings: CameraSettings, n_frames: int | None, sink: FrameSink) -> None:
        """Arm and start acquiring (non-blocking); frame ids restart at 0."""

    @abstractmethod
    def stop(self) -> None:
        """Stop acquiring; returns when no more frames will be delivered."""

    @property
    @abstractmethod
    def running(self) -> bool: ...

    @property
    @abstractmethod
    def frames_acquired(self) -> int: ...

    @property
    @abstractmethod
    def triggers_missed(self) -> int:
        """Trigger pulses that arrived while the sensor was busy."""

    @property
    def frames_lost(self) -> int:
        """Frames the camera took but never delivered (its buffer overflowed); each
        leaves a gap in the frame ids, which the file keeps as a hole."""
        return 0

    def temperature_c(self) -> float:
        """Sensor temperature (°C); NaN when the camera does not report one."""
        return math.nan

    def close(self) -> None:
        """Stop and release the camera (IOC shutdown)."""
        self.stop()


class SimCamera(CameraDriver):
    """Renders each exposure from the simulated microscope at its absolute time."""

    #: what the IOC shows in Manufacturer_RBV / Model_RBV (stock clients list them)
    manufacturer = "beamline-ls"
    model = "simulated sCMOS"
    name = "simulated sCMOS"

    def __init__(self, microscope: SimMicroscope):
        self.microscope = microscope
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._frames = 0
        self._missed = 0
        #: simulated fault: the sensor fails after this many frames (0: never)
        self.fail_after = 0

    @property
    def sensor_shape(self) -> tuple[int, int]:
        return (self.microscope.sensor.height, self.microscope.sensor.width)

    def readout_time_s(self, settings: CameraSettings) -> float:
        return self.microscope.sensor.readout_time_s(settings.roi[3], settings.binning)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def frames_acquired(self) -> int:
        return self._frames

    @property
    def triggers_missed(self) -> int:
        return self._missed

    def start(self, settings: CameraSettings, n_frames: int | None, sink: FrameSink) -> None:
        settings.validate(self.sensor_shape)
        if settings.trigger_mode == "External Exposure":
            raise ValueError("the simulated camera has no level trigger (External "
                             "Exposure); allowed: Internal, External")
        if self.running:
            raise RuntimeError("camera is already acquiring")
        self._stop.clear()
        self._frames = 0
        self._missed = 0
        self.failure = ""
        self._thread = threading.Thread(
            target=self._run, args=(settings, n_frames, sink), name="sim-camera", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                log.warning("camera thread did not stop within 5 s (frame %d)", self._frames)
        self._thread = None

    def _run(self, settings: CameraSettings, n_frames: int | None, sink: FrameSink) -> None:
        clock = self.microscope.clock
        readout = self.readout_time_s(settings)
        roi = Roi(*settings.roi)
        armed_at = clock.now()
        busy_until = armed_at
        interval = max(settings.period_s, settings.exposure_s + readout)
        k = 0
        try:
            while not self._stop.is_set() and (n_frames is None or self._frames < n_frames):
                if settings.trigger_mode == "Internal":
                    t_pulse = armed_at + 0.001 + k * interval
                    k += 1
                else:
                    pulse = self.microscope.camera_trigger.next_pulse(armed_at, 0.5, self._stop)
                    if pulse is None:
                        continue
                    t_pulse = pulse
                    if t_pulse < busy_until:
                        self._missed += 1
                        if self._missed == 1 or self._missed % 1000 == 0:
                            log.warning(
                                "%d trigger(s) missed: pulse at %.6f while the sensor was "
                                "busy until %.6f (exposure + readout exceed the interval)",
                                self._missed, t_pulse, busy_until)
                        continue
                busy_until = t_pulse + settings.exposure_s + readout
                if not clock.sleep_until(busy_until, self._stop):
                    break
                image, z = self.microscope.expose(
                    t_pulse, settings.exposure_s, roi, settings.binning
                )
                if self.fail_after and self._frames >= self.fail_after:
                    raise RuntimeError(f"simulated sensor failure after {self._frames} "
                                       "frames (cam1:SimFailAfter)")
                frame = Frame(image, self._frames, t_pulse, settings.exposure_s, z)
                self._frames += 1
                sink(frame)
        except Exception as exc:  # the thread ends; the IOC reports why
            self.failure = f"{type(exc).__name__}: {exc}"
            log.error("simulated camera failed: %s", self.failure)
