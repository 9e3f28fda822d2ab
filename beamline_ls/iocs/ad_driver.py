"""``cam1:``: the camera as an areaDetector driver (ADBase's PVs).

``Acquire`` behaves as areaDetector's busy record: a put with completion (``caput -c``,
ophyd ``set(..., wait)`` with ``put_complete``) ends when the acquisition does
(``ImageMode`` Single/Multiple: after ``NumImages`` frames; Continuous: when stopped);
``Acquire_RBV`` is 1 from the start to the end, so ophyd's ``SingleTrigger`` sees one
acquisition per trigger. ``WaitForPlugins`` Yes holds the completion until the file
writer has taken every frame.

This project adds ``CameraMode`` (Paused / Preview: free-running, nothing saved /
Acquire: the put completes once the camera runs / Abort: camera and writer stop at
once), the laser-off background (``Background*``), a small binned preview
(``Preview_RBV``) and the simulator's fault switch (``SimFailAfter``). Parameters for
hardware this camera does not have (shutter output, gain, readout reversal, other data
types) hold the value it has and refuse others with the reason.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time

import numpy as np
from caproto import ChannelType
from caproto.server import pvproperty

from beamline_ls.frame import bin_down
from beamline_ls.hardware.camera import BINNINGS, TRIGGER_MODES, CameraSettings
from beamline_ls.iocs.ad_params import fixed, readback, setting, write_if_changed
from beamline_ls.iocs.ad_plugin import (
    CAMERA_PORT,
    DISABLE_ENABLE,
    DTYPE_NAMES,
    ND_COLOR_MODES,
    ND_DATA_TYPES,
    NO_YES,
    PortGroup,
)
from beamline_ls.iocs.alarms import clear_write_alarm
from beamline_ls.iocs.autosave import read_saved, restore_pvs, write_json_atomic
from beamline_ls.iocs.blocking import DeviceWorker
from beamline_ls.pipeline.background import Background, BackgroundAccumulator

log = logging.getLogger(__name__)

#: the longest the end of an acquisition waits for the file writer to catch up (s)
PLUGIN_WAIT_S = 10.0

PREVIEW_SIZE = 128
# areaDetector's DetectorState order, so clients reading the number agree
AD_DETECTOR_STATES = ["Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error",
                      "Waiting", "Initializing", "Disconnected", "Aborted"]
NO_SHUTTER = ("the camera drives no shutter; excitation is switched by this IOC's laser "
              "(its laser: PVs) and the scan board")
SENSOR = "this camera's sensor reads out 16-bit monochrome frames"


def preview_image(image: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Bin (mean) an image to at most size x size, padded to exactly size x size."""
    small = bin_down(image, size)
    out = np.zeros((size, size), np.int32)
    out[: small.shape[0], : small.shape[1]] = small
    return out


#: settings the camera keeps across IOC restarts (as ADCore's ADBase_settings.req), in
#: the order they are restored: binning, then the size, the origin, the size again (a
#: saved origin may not fit the full-frame size an IOC starts with)
AUTOSAVED = ("BinX", "BinY", "SizeX", "SizeY", "MinX", "MinY", "SizeX", "SizeY",
             "AcquireTime", "AcquirePeriod")


class DriverGroup(PortGroup):
    """ADBase on a :class:`~beamline_ls.hardware.camera.CameraDriver` (the parent's).

    Binning, ROI, exposure and period are kept in ``autosave`` (set by the camera's
    group) whenever they change, and restored when the IOC starts: a restarted IOC
    otherwise came back at full frame, and the session's next scan, planned for the
    ROI it had set, could not keep up."""

    port = CAMERA_PORT
    autosave = None  # Path of the JSON file, or None: nothing kept

    acquire = pvproperty(name="Acquire", value="Done", dtype=ChannelType.ENUM,
                         enum_strings=["Done", "Acquire"],
                         doc="busy: a put of Acquire completes when the acquisition ends")
    acquire_rbv = readback("Acquire_RBV", "Done", enum_strings=["Done", "Acquiring"])
    acquire_busy = readback("AcquireBusy", "Done", enum_strings=["Done", "Acquiring"])
    wait_for_plugins = pvproperty(name="WaitForPlugins", value="No", dtype=ChannelType.ENUM,
                                  enum_strings=NO_YES,
                                  doc="Yes: Acquire completes once the writer took every "
                                      "frame")
    num_queued_arrays = readback("NumQueuedArrays", 0, doc="frames waiting in plugins")
    camera_mode = pvproperty(name="CameraMode", value="Paused", dtype=ChannelType.ENUM,
                             enum_strings=["Paused", "Preview", "Acquire", "Abort"])
    acquire_time, acquire_time_rbv = setting(
        "AcquireTime", 0.005, units="s", precision=6, lower_ctrl_limit=1e-5,
        upper_ctrl_limit=10.0)
    acquire_period, acquire_period_rbv = setting(
        "AcquirePeriod", 0.0, units="s", precision=6, lower_ctrl_limit=0.0,
        upper_ctrl_limit=100.0, doc="internal trigger; 0: as fast as exposure and readout")
    image_mode, image_mode_rbv = setting("ImageMode", "Multiple",
                                         enum_strings=["Single", "Multiple", "Continuous"])
    num_images, num_images_rbv = setting("NumImages", 1, lower_ctrl_limit=1,
                                         upper_ctrl_limit=100_000_000)
    num_images_counter = readback("NumImagesCounter_RBV", 0,
                                  doc="frames of the current acquisition")
    num_exposures, num_exposures_rbv = fixed("NumExposures", 1,
                                             "one exposure per frame on this camera")
    num_exposures_counter = readback("NumExposuresCounter_RBV", 0)
    trigger_mode, trigger_mode_rbv = setting("TriggerMode", "Internal",
                                             enum_strings=list(TRIGGER_MODES))
    bin_x, bin_x_rbv = setting("BinX", 1, lower_ctrl_limit=1, upper_ctrl_limit=4)
    bin_y, bin_y_rbv = setting("BinY", 1, lower_ctrl_limit=1, upper_ctrl_limit=4)
    min_x, min_x_rbv = setting("MinX", 0, lower_ctrl_limit=0, upper_ctrl_limit=8192)
    min_y, min_y_rbv = setting("MinY", 0, lower_ctrl_limit=0, upper_ctrl_limit=8192)
    size_x, size_x_rbv = setting("SizeX", 2048, lower_ctrl_limit=1, upper_ctrl_limit=8192)
    size_y, size_y_rbv = setting("SizeY", 2048, lower_ctrl_limit=1, upper_ctrl_limit=8192)
    max_size_x = readback("MaxSizeX_RBV", 0)
    max_size_y = readback("MaxSizeY_RBV", 0)
    array_size_x = readback("ArraySizeX_RBV", 0)
    array_size_y = readback("ArraySizeY_RBV", 0)
    array_size_z = readback("ArraySizeZ_RBV", 0)
    array_size = readback("ArraySize_RBV", 0, doc="bytes per frame")
    readout_time = readback("ReadoutTime_RBV", 0.0, units="s", precision=6)
    array_counter, array_counter_rbv = setting(
        "ArrayCounter", 0, doc="frames acquired; put N to count on from N")
    array_rate = readback("ArrayRate_RBV", 0.0, units="Hz", precision=2,
                          doc="measured frame rate")
    array_callbacks, array_callbacks_rbv = setting(
        "ArrayCallbacks", "Enable", enum_strings=DISABLE_ENABLE,
        doc="Disable: frames reach no plugin (no file, no image)")
    triggers_missed = readback("TriggersMissed_RBV", 0)
    detector_state = readback("DetectorState_RBV", "Idle", enum_strings=AD_DETECTOR_STATES)
    status_message = readback("StatusMessage_RBV", "", text=True)
    time_remaining = readback("TimeRemaining_RBV", 0.0, units="s", precision=3)
    data_type = fixed("DataType", "UInt16", SENSOR, enum_strings=ND_DATA_TYPES, rbv=False)
    data_type_rbv = readback("DataType_RBV", "UInt16", enum_strings=ND_DATA_TYPES,
                             record="mbbi")
    color_mode, color_mode_rbv = fixed("ColorMode", "Mono", SENSOR,
                                       enum_strings=ND_COLOR_MODES)
    frame_type, frame_type_rbv = fixed(
        "FrameType", "Normal", "backgrounds are taken with cam1:BackgroundAcquire",
        enum_strings=["Normal", "Background", "FlatField", "DblCorrelation"])
    gain, gain_rbv = fixed("Gain", 1.0, "this camera's gain is fixed by its readout mode")
    reverse_x, reverse_x_rbv = fixed("ReverseX", "No", "frames are stored as read out",
                                     enum_strings=NO_YES)
    reverse_y, reverse_y_rbv = fixed("ReverseY", "No", "frames are stored as read out",
                                     enum_strings=NO_YES)
    temperature, temperature_rbv = fixed(
        "Temperature", math.nan, "the sensor temperature is not controlled through this IOC")
    temperature_actual = readback("TemperatureActual", math.nan,
                                  doc="NaN: the sensor does not report it here")
    shutter_mode, shutter_mode_rbv = fixed(
        "ShutterMode", "None", NO_SHUTTER, enum_strings=["None", "EPICS PV", "Detector output"],
        rbv_enum_strings=["None", "EPICS PV", "Camera output"])  # ADBase's two wordings
    shutter_control, shutter_control_rbv = fixed("ShutterControl", "Close", NO_SHUTTER,
                                                 enum_strings=["Close", "Open"])
    shutter_status = readback("ShutterStatus_RBV", "Closed", enum_strings=["Closed", "Open"])
    shutter_status_epics = readback("ShutterStatusEPICS_RBV", "Closed",
                                    enum_strings=["Closed", "Open"])
    shutter_open_delay, shutter_open_delay_rbv = fixed("ShutterOpenDelay", 0.0, NO_SHUTTER)
    shutter_close_delay, shutter_close_delay_rbv = fixed("ShutterCloseDelay", 0.0,
                                                         NO_SHUTTER)
    shutter_open_epics = fixed("ShutterOpenEPICS", 0, NO_SHUTTER, rbv=False)
    shutter_close_epics = fixed("ShutterCloseEPICS", 0, NO_SHUTTER, rbv=False)
    shutter_control_epics = fixed("ShutterControlEPICS", "Closed", NO_SHUTTER, rbv=False,
                                  enum_strings=["Closed", "Open"])
    shutter_fanout = fixed("ShutterFanout", 0, NO_SHUTTER, rbv=False)
    # strings (DBR_STRING, 39 characters) as ADCore's stringin records: ophyd reads a
    # char waveform as an array of bytes and describes the camera with it
    manufacturer = readback("Manufacturer_RBV", "")
    model = readback("Model_RBV", "")
    serial_number = readback("SerialNumber_RBV", "")
    firmware_version = readback("FirmwareVersion_RBV", "")
    sdk_version = readback("SDKVersion_RBV", "")
    # NDArrayBase's per-frame readbacks, which ADCore serves on the driver too
    unique_id = readback("UniqueId_RBV", 0, doc="camera frame id of the newest frame")
    array_size0 = readback("ArraySize0_RBV", 0, doc="frame width (x)")
    array_size1 = readback("ArraySize1_RBV", 0, doc="frame height (y)")
    array_size2 = readback("ArraySize2_RBV", 0, doc="0: one colour plane")
    frame_fields = readback("FrameFields_RBV", "", text=True,
                            doc="per-frame fields this camera adds to every frame "
                                "(comma-separated; e.g. its own timestamp)")
    string_from_server = readback("StringFromServer_RBV", "", text=True)
    string_to_server = readback("StringToServer_RBV", "", text=True)
    read_status = pvproperty(name="ReadStatus", value=0,
                             doc="put 1: read the camera's state now")
    empty_free_list = pvproperty(name="EmptyFreeList", value=0,
                                 doc="put 1: free the frame buffer's memory (not while "
                                     "capturing)")
    pre_alloc_buffers = pvproperty(name="PreAllocBuffers", value="Done",
                                   enum_strings=["Done", "Allocate"], record="bo",
                                   dtype=ChannelType.ENUM,
                                   doc="put Allocate (1): allocate the frame buffer now for "
                                       "the current frame size")
    num_pre_alloc_buffers = pvproperty(name="NumPreAllocBuffers", value=0, lower_ctrl_limit=0,
                                       upper_ctrl_limit=100_000,
                                       doc="frames the buffer holds: sets HDF1:BufferFrames "
                                           "(0: sized from RAM)")
    pool_poll_stats = pvproperty(name="PoolPollStats", value=0, record="bo",
                                 doc="the pool counters are published at 5 Hz")
    # -- this project's additions -------------------------------------------------------
    background_acquire = pvproperty(
        name="BackgroundAcquire", value=0, lower_ctrl_limit=0, upper_ctrl_limit=10_000,
        doc="put N: average N frames as background; completes when done")
    background_enable = pvproperty(name="BackgroundEnable", value="On",
                                   dtype=ChannelType.ENUM, enum_strings=["Off", "On"])
    background_valid = readback("BackgroundValid_RBV", 0,
                                doc="0 after exposure, binning or ROI changed")
    background_frames = readback("BackgroundFrames_RBV", 0)
    background_level = readback("BackgroundLevel_RBV", 0.0, units="ADU", precision=2)
    preview = pvproperty(name="Preview_RBV", value=[0] * (PREVIEW_SIZE * PREVIEW_SIZE),
                         dtype=ChannelType.LONG, max_length=PREVIEW_SIZE * PREVIEW_SIZE,
                         read_only=True, doc="latest frame binned to 128x128 (drops frames); "
                                             "the full frame is image1:ArrayData")
    preview_counter = readback("PreviewCounter_RBV", 0)
    sim_fail_after = pvproperty(name="SimFailAfter", value=0, lower_ctrl_limit=0,
                                upper_ctrl_limit=100_000_000,
                                doc="simulated camera only: the sensor fails after N "
                                    "frames of each acquisition (0: never)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # stopping joins the camera's thread (a real SDK may wait on the device):
        # off the event loop, one driver call at a time
        self._driver_worker = DeviceWorker("camera")
        self._stamps: collections.deque[float] = collections.deque(maxlen=50)
        self.latest = None
        self.preview_mode = False
        self._published: CameraSettings | None = None
        self._saved: dict | None = None  # what autosave holds; None: not restored yet
        self.background: Background | None = None
        self.accumulator: BackgroundAccumulator | None = None
        self.background_done = threading.Event()
        self._preview_id = -1
        self._preview_t = 0.0
        self._counted_base = 0  # ArrayCounter at the start of this acquisition
        self._frame_base = 0  # the same, fixed until the next start (frame ids)
        self._ended: asyncio.Event | None = None  # set when the acquisition ends
        self._starting: str | None = None  # "acquire" or "preview" while one starts
        self._stop_when_started: str | None = None  # a stop's message, asked meanwhile
        self._started_at = 0.0
        self._n_frames: int | None = None

    @property
    def driver(self):
        return self.parent.driver

    @property
    def acquiring(self) -> bool:
        return self.detector_state.value == "Acquire"

    def note_frame(self, timestamp: float) -> None:
        """Camera thread: a frame arrived (for the measured rate)."""
        self._stamps.append(timestamp)

    # -- region and binning: held to what the sensor can read out, as drivers do -------
    # A value the sensor cannot take is clamped when it is put (the readback shows what
    # the camera will use), not refused later at Acquire or Capture: stock clients set
    # the region one PV at a time, and ophyd's HDF5 staging waits forever on a Capture
    # the IOC refuses. Changes made while acquiring apply from the next acquisition;
    # ArraySize*_RBV keep describing the frames being delivered until then.
    def _sensor(self) -> tuple[int, int]:
        h, w = self.driver.sensor_shape
        return int(w), int(h)

    def _clamp_size(self, axis: str, value: int, start: int, binning: int) -> int:
        """Largest whole number of bins from ``start`` up to ``value`` that fits the
        sensor (at least one bin)."""
        limit = self._sensor()[0 if axis == "X" else 1]
        size = min(int(value), limit - start)
        return max(binning, size - size % binning)

    async def _region_put(self, axis: str, name: str, value, clamped: int) -> int:
        if clamped != int(value):
            log.info("cam1:%s%s %s held to %d: sensor %dx%d px, MinX %d, MinY %d, bin %d",
                     name, axis, value, clamped, *self._sensor(), int(self.min_x.value),
                     int(self.min_y.value), int(self.bin_x.value))
        return clamped

    @min_x.putter
    async def min_x(self, instance, value):
        return await self._set_start("X", value)

    @min_y.putter
    async def min_y(self, instance, value):
        return await self._set_start("Y", value)

    async def _set_start(self, axis: str, value) -> int:
        binning = int(getattr(self, f"bin_{axis.lower()}").value)
        limit = self._sensor()[0 if axis == "X" else 1]
        start = min(max(int(value), 0), limit - binning)
        size_pv = getattr(self, f"size_{axis.lower()}")
        size = self._clamp_size(axis, size_pv.value, start, binning)
        if size != size_pv.value:  # a region moved right (down) shrinks to fit
            await size_pv.write(size, verify_value=False)
        return await self._region_put(axis, "Min", value, start)

    @size_x.putter
    async def size_x(self, instance, value):
        return await self._region_put("X", "Size", value, self._clamp_size(
            "X", value, int(self.min_x.value), int(self.bin_x.value)))

    @size_y.putter
    async def size_y(self, instance, value):
        return await self._region_put("Y", "Size", value, self._clamp_size(
            "Y", value, int(self.min_y.value), int(self.bin_y.value)))

    @bin_x.putter
    async def bin_x(self, instance, value):
        return await self._set_binning(int(value), self.bin_y)

    @bin_y.putter
    async def bin_y(self, instance, value):
        return await self._set_binning(int(value), self.bin_x)

    async def _set_binning(self, value: int, other) -> int:
        """This camera bins square (BinX = BinY, one of ``BINNINGS``): the other axis
        follows, and the region shrinks to whole bins."""
        if value not in BINNINGS:
            raise ValueError(f"binning {value} refused: this camera bins "
                             f"{', '.join(map(str, BINNINGS))} (BinX and BinY together)")
        if int(other.value) != value:
            await other.write(value, verify_value=False)
        for axis, start in (("X", self.min_x), ("Y", self.min_y)):
            size_pv = getattr(self, f"size_{axis.lower()}")
            size = self._clamp_size(axis, size_pv.value, int(start.value), value)
            if size != size_pv.value:
                await size_pv.write(size, verify_value=False)
        return value

    # -- settings ----------------------------------------------------------------------
    def settings(self) -> CameraSettings:
        if self.bin_x.value != self.bin_y.value:
            raise ValueError(f"BinX ({self.bin_x.value}) and BinY ({self.bin_y.value}) differ")
        return CameraSettings(
            exposure_s=self.acquire_time.value,
            binning=int(self.bin_x.value),
            roi=(int(self.min_x.value), int(self.min_y.value), int(self.size_x.value),
                 int(self.size_y.value)),
            trigger_mode=self.trigger_mode.value,
            period_s=self.acquire_period.value,
        )

    @staticmethod
    def settings_key(settings: CameraSettings) -> tuple:
        return (settings.exposure_s, settings.binning, tuple(settings.roi))

    def background_for(self, settings: CameraSettings) -> Background | None:
        """The background to subtract from frames taken with ``settings``, if any."""
        bg = self.background
        if (bg is not None and self.background_enable.value == "On"
                and bg.matches(self.settings_key(settings))):
            return bg
        return None

    # -- starting and stopping -------------------------------------------------------------
    async def ensure_open(self) -> None:
        """Open the camera if it is not (one that was away, or did not open at start),
        on its worker; a failure is raised as the camera's own reason. Why: with the
        camera unopened its sensor is 0 x 0, and every capture was refused as "roi does
        not fit the 0x0 sensor", the real cause only in StatusMessage_RBV."""
        try:
            await self._driver_worker.call(self.driver.open)
        except Exception as exc:  # noqa: BLE001 - any driver's failure, told as such
            message = f"camera did not open: {exc}"
            await self._not_open(message)
            raise RuntimeError(message) from exc
        if self.detector_state.value == "Disconnected":  # it opened now, not at start
            await self._publish_sensor()
            if self._saved is None:  # not restored at start, against a 0 x 0 sensor
                await self._restore_settings()
            await self.detector_state.write("Idle")
            label = getattr(self.driver, "name", type(self.driver).__name__)
            await self.status_message.write(f"camera opened: {label}"[:500])
            log.info("camera opened: %s", label)

    async def _not_open(self, message: str) -> None:
        """areaDetector's way of saying the camera is not there: DetectorState_RBV
        "Disconnected" (stock screens show it; plans refuse to start on it) and the
        driver's reason in StatusMessage_RBV."""
        await self.status_message.write(message[:500])
        await self.detector_state.write("Disconnected")

    async def _publish_sensor(self) -> None:
        """The sensor size and the camera's identity, as the driver knows them."""
        h, w = self.driver.sensor_shape
        await self.max_size_x.write(w)
        await self.max_size_y.write(h)
        for pv, value in ((self.manufacturer, "manufacturer"), (self.model, "model"),
                          (self.serial_number, "serial_number"),
                          (self.firmware_version, "firmware_version"),
                          (self.sdk_version, "sdk_version")):
            await pv.write(str(getattr(self.driver, value, ""))[:39])

    async def start(self, preview: bool) -> asyncio.Event:
        """Start the camera (``preview``: free-running, for the viewers only) and return
        the event set when this acquisition ends. Whatever waits on the acquisition
        this one replaces (an Acquire put when a Preview takes over) is told it ended;
        an Acquire put while this one starts waits with it."""
        previous, ended = self._ended, asyncio.Event()
        self._ended = ended
        if previous is not None:
            previous.set()
        self._starting = "preview" if preview else "acquire"
        self._stop_when_started = None
        try:
            await self._start(preview)
        except BaseException:
            self._ended.set()  # nothing to wait for
            raise
        finally:
            self._starting = None
        if self._stop_when_started is not None:  # asked while it started: not lost
            await self.stop(self._stop_when_started)
        return ended

    async def _start(self, preview: bool) -> None:
        settings = self.settings()
        await self.ensure_open()  # a camera that was away
        settings.validate(self.driver.sensor_shape)
        if self.driver.running:
            await self._driver_worker.call(self.driver.stop)
        n = {"Single": 1, "Multiple": int(self.num_images.value), "Continuous": None}[
            self.image_mode.value
        ]
        self.preview_mode = preview
        if not preview:
            self.parent.hdf.camera_starting()
        self._stamps.clear()
        self._counted_base = self._frame_base = int(self.array_counter_rbv.value)
        await self.array_rate.write(0.0)
        await self.num_images_counter.write(0)
        if preview:
            settings = CameraSettings(settings.exposure_s, settings.binning, settings.roi,
                                      "Internal", settings.period_s)
            n = None
        self._n_frames = n
        self._started_at = time.monotonic()
        await self._driver_worker.call(self.driver.start, settings, n, self.parent.on_frame)
        log.info("camera started (%s, %s frames, %s trigger)",
                 "preview" if preview else "acquire", n or "continuous", settings.trigger_mode)
        await self.publish_geometry(settings)
        await self.detector_state.write("Acquire")
        await self.acquire_rbv.write("Acquiring")
        await self.acquire_busy.write("Acquiring")
        await self.status_message.write("previewing" if preview else "acquiring")

    async def publish_geometry(self, settings: CameraSettings) -> None:
        h, w = settings.frame_shape
        await self.array_size_x.write(w)
        await self.array_size_y.write(h)
        await self.array_size0.write(w)
        await self.array_size1.write(h)
        await self.array_size.write(w * h * 2)
        await self.readout_time.write(self.driver.readout_time_s(settings))
        self.parent.prime_plugins((h, w))

    async def stop(self, message: str) -> None:
        if self._starting is not None:
            # Acquire 0, Pause or Abort while the camera starts: it would start after
            # this stop (one worker runs both) and run on; stopped once it has started
            self._stop_when_started = message
            return
        await self._driver_worker.call(self.driver.stop)
        self.preview_mode = False
        # stopped by a client (Acquire 0, Abort, Pause): ends at once, not after the
        # writer's queue (an Abort must not wait for a stalled disk)
        await self._ended_with(message, drain=False)

    async def _plugins_caught_up(self, drain: bool = True) -> None:
        """Before Acquire says Done: the file writer has the acquisition's frames when
        asked to (WaitForPlugins) or when its callbacks block (what ophyd's HDF5 plugin
        stages; in areaDetector the driver's thread then writes each frame itself),
        and every plugin's counters (ArrayCounter_RBV, NumCaptured_RBV ..., otherwise
        published at 5 Hz) count them, so a client that reads them when Acquire goes
        Done (ophyd's SingleTrigger) or its put completes sees every frame. A writer
        stuck on its disk holds the end for at most `PLUGIN_WAIT_S`."""
        hdf = self.parent.hdf
        if drain and (self.wait_for_plugins.value == "Yes"
                      or hdf.blocking_callbacks.value == "Yes"):
            try:
                await asyncio.wait_for(hdf.drained(), PLUGIN_WAIT_S)
            except TimeoutError:
                log.warning("the file writer still holds %d frame(s) %g s after the "
                            "acquisition ended; Acquire ends without them",
                            hdf.queue_state()[1], PLUGIN_WAIT_S)
        for plugin in self.parent.plugins:
            await plugin.publish()
        await hdf.refresh()

    async def _publish_counts(self, frames: int) -> None:
        await write_if_changed(self.num_images_counter, frames)
        await write_if_changed(self.num_exposures_counter, frames)
        await write_if_changed(self.array_counter_rbv, self._counted_base + frames)

    async def _ended_with(self, message: str, drain: bool = True) -> None:
        if self.acquiring:
            # the final counts: published at 5 Hz while it ran, the frames after the
            # last refresh were not counted, and the next acquisition numbers its
            # frames on from ArrayCounter_RBV (a pause and resume took an id twice)
            await self._publish_counts(self.driver.frames_acquired)
        await self._plugins_caught_up(drain)
        await self.detector_state.write("Idle")
        await self.status_message.write(message)
        await self.acquire.write("Done", verify_value=False)
        await self.camera_mode.write("Paused", verify_value=False)
        await self.acquire_rbv.write("Done")
        await self.acquire_busy.write("Done")
        await self.time_remaining.write(0.0)
        if self._ended is not None:
            self._ended.set()

    async def _start_acquiring(self) -> asyncio.Event:
        """Start acquiring for the writer and return the event set when it ends; a
        refusal goes to StatusMessage_RBV and the log, and fails the put."""
        try:
            return await self.start(preview=False)
        except (ValueError, RuntimeError) as exc:
            await self.status_message.write(f"acquire refused: {exc}"[:500])
            log.error("acquire refused: %s", exc)
            raise

    # -- putters ----------------------------------------------------------------------
    @acquire.putter
    async def acquire(self, instance, value):
        if value != "Acquire":
            if self.acquiring or self._starting is not None:
                await self.stop("stopped")
            return "Done"
        if self._starting == "acquire":  # a second Acquire=1: completes with the first
            await self._ended.wait()
            return "Done"
        if self.acquiring:
            ended = self._ended
            if ended is not None and not self.preview_mode:
                await ended.wait()  # busy: a second Acquire=1 completes with the first
                return "Done"
            return "Acquire"
        # this acquisition's own end: a Preview that takes over while the writes below
        # wait replaces self._ended, and this put then waited on the preview instead
        ended = await self._start_acquiring()
        await clear_write_alarm(instance)  # accepted: a refusal before is over now
        if ended.is_set():
            return "Done"  # stopped as it started (Acquire 0 meanwhile)
        await instance.write("Acquire", verify_value=False)
        await self.camera_mode.write("Acquire", verify_value=False)
        await ended.wait()  # busy: the put completes when the acquisition ends
        return "Done"

    @camera_mode.putter
    async def camera_mode(self, instance, value):
        if value == "Acquire":
            if not self.acquiring or self.preview_mode:
                await self._start_acquiring()
            await self.acquire.write("Acquire", verify_value=False)
        elif value == "Preview":
            await self.start(preview=True)
            await self.acquire.write("Done", verify_value=False)
        elif value == "Abort":
            await self.stop("aborted")
            self.parent.hdf.abort()  # the loop reports when the file has closed
            return "Paused"
        else:
            await self.stop("paused")
        return value

    @background_acquire.putter
    async def background_acquire(self, instance, value):
        """Average ``value`` frames (internal trigger, current settings) as background.
        Turn the excitation off first: the plan ``acquire_background`` does."""
        n = int(value)
        if n == 0:
            return 0
        if self.driver.running:
            raise RuntimeError("camera is acquiring; stop it before taking a background")
        settings = self.settings()
        await self.ensure_open()
        settings.validate(self.driver.sensor_shape)
        settings = CameraSettings(settings.exposure_s, settings.binning, settings.roi,
                                  "Internal", 0.0)
        self.background_done.clear()
        self.accumulator = BackgroundAccumulator(n, self.settings_key(settings))
        self._stamps.clear()
        await self._driver_worker.call(self.driver.start, settings, n, self.parent.on_frame)
        try:
            loop = asyncio.get_running_loop()
            timeout = 10 + 2 * n * (settings.exposure_s + self.driver.readout_time_s(settings))
            done = await loop.run_in_executor(None, self.background_done.wait, timeout)
            if not done:
                raise TimeoutError(f"background: only {self.accumulator.count} of {n} frames")
            self.background = self.accumulator.result()
        finally:
            await self._driver_worker.call(self.driver.stop)
            self.accumulator = None
        await self.background_valid.write(1)
        await self.background_frames.write(self.background.n_frames)
        await self.background_level.write(float(self.background.mean.mean()))
        await self.status_message.write(f"background of {n} frames taken")
        log.info("background of %d frames, mean %.2f ADU", n, float(self.background.mean.mean()))
        return 0

    @sim_fail_after.putter
    async def sim_fail_after(self, instance, value):
        if not hasattr(self.driver, "fail_after"):
            raise ValueError("only the simulated camera can be made to fail")
        self.driver.fail_after = int(value)
        return int(value)

    @empty_free_list.putter
    async def empty_free_list(self, instance, value):
        if value:
            await self.parent.hdf.free_buffer()
        return 0

    @pre_alloc_buffers.putter
    async def pre_alloc_buffers(self, instance, value):
        if value == "Allocate":
            await self.parent.hdf.allocate_buffer(self.parent.frame_shape())
        return "Done"

    @num_pre_alloc_buffers.putter
    async def num_pre_alloc_buffers(self, instance, value):
        await self.parent.hdf.buffer_frames.write(int(value))
        return value

    @read_status.putter
    async def read_status(self, instance, value):
        """areaDetector's ReadStatus: read the camera's state now; a camera that did
        not open is tried again (plans put this before they refuse to start on it)."""
        if value:
            if self.detector_state.value == "Disconnected":
                with contextlib.suppress(RuntimeError):  # said in StatusMessage_RBV
                    await self.ensure_open()
            await self.refresh()
        return 0

    # -- status (event loop) -------------------------------------------------------------
    @max_size_x.startup
    async def max_size_x(self, instance, async_lib):
        try:  # a real camera opens here, on its worker (seconds; never on the loop)
            await self._driver_worker.call(self.driver.open)
        except Exception as exc:  # noqa: BLE001 - served anyway; acquiring retries
            log.error("camera did not open: %s", exc)
            await self._not_open(f"camera did not open: {exc}")
        await self._publish_sensor()
        await self.frame_fields.write(",".join(self.driver.frame_fields))
        if self.detector_state.value != "Disconnected":
            # restored against the sensor's size (clamped to a 0 x 0 sensor they would
            # be lost, and then saved so); a camera that opens later restores them then
            await self._restore_settings()

    def _autosaved_values(self) -> dict:
        return {name: self.pvdb[f"{self.prefix}{name}"].value for name in AUTOSAVED}

    async def _restore_settings(self) -> None:
        """The settings saved before the last restart, each through its PV (a value
        today's sensor or limits refuse is skipped, with a warning)."""
        saved = read_saved(self.autosave, "camera settings")
        await restore_pvs(self.pvdb, self.prefix, AUTOSAVED, saved, "camera")
        if saved:
            log.info("camera settings restored from %s", self.autosave)
        self._saved = self._autosaved_values()

    async def _save_settings(self) -> None:
        """Keep the settings when they changed (off the event loop; a failure to save
        is logged, the settings are in use either way)."""
        if self.autosave is None or self._saved is None:
            return
        values = self._autosaved_values()
        if values == self._saved:
            return
        self._saved = values
        try:
            await asyncio.to_thread(write_json_atomic, self.autosave, values)
        except OSError as exc:
            log.error("camera: could not save its settings to %s: %s", self.autosave, exc)

    @temperature_actual.startup
    async def temperature_actual(self, instance, async_lib):
        """Ask the camera its sensor temperature every 5 s (on the driver's worker: an
        SDK call may wait)."""
        while True:
            try:
                t = await self._driver_worker.call(self.driver.temperature_c)
            except Exception as exc:  # noqa: BLE001 - reported, asked again later
                log.warning("camera temperature: %s", exc)
                t = math.nan
            if not (math.isnan(t) and math.isnan(instance.value)) and t != instance.value:
                await instance.write(t)
            await asyncio.sleep(5.0)

    async def refresh(self) -> None:
        try:
            settings = self.settings()
            settings.validate(self.driver.sensor_shape)
        except ValueError:
            settings = None
        if settings is not None and settings != self._published and not self.acquiring:
            # while acquiring, the geometry stays that of the frames being delivered
            self._published = settings
            await self.publish_geometry(settings)
            await self._save_settings()
            if self.background is not None and not self.background.matches(
                    self.settings_key(settings)):
                log.info("background invalidated: exposure, binning or ROI changed")
                self.background = None
                await self.background_valid.write(0)
        await self._refresh_preview()
        # whether the camera still runs is read before its frame count: a camera that
        # stopped has its final count, so the acquisition ends with every frame counted
        # (read the other way round, the last frame could land in between: 29 of 30)
        running = self.driver.running
        frames = self.driver.frames_acquired
        if self.acquiring:
            await self._publish_counts(frames)
            await self._refresh_time_remaining(frames)
        await write_if_changed(self.num_queued_arrays, self.parent.hdf.queue_state()[1])
        stamps = list(self._stamps)
        if len(stamps) >= 2 and stamps[-1] > stamps[0]:
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
            if abs(rate - self.array_rate.value) > 0.01:
                await self.array_rate.write(rate)
        await write_if_changed(self.triggers_missed, self.driver.triggers_missed)
        if not running and self.acquiring:
            failure = self.driver.failure
            if failure:
                log.error("camera failed after %d frames: %s", frames, failure)
                self.parent.hdf.camera_failed(failure)
                await self._ended_with(f"camera failed: {failure}"[:500])
            else:
                await self._ended_with(f"done: {frames} frames")

    async def _refresh_time_remaining(self, frames: int) -> None:
        n = self._n_frames
        if n is None or self.trigger_mode.value != "Internal":
            return
        s = self._published or self.settings()
        interval = max(s.period_s, s.exposure_s + self.driver.readout_time_s(s))
        await write_if_changed(self.time_remaining, round(max(0, n - frames) * interval, 3))

    async def _refresh_preview(self) -> None:
        latest = self.latest
        if latest is not None and latest.frame_id != self._preview_id and (
                time.monotonic() - self._preview_t > 0.2):  # ~5 Hz, only the newest frame
            self._preview_id = latest.frame_id
            self._preview_t = time.monotonic()
            await self.preview.write(preview_image(latest.image).ravel().tolist())
            await self.preview_counter.write(self.preview_counter.value + 1)
        if latest is not None:
            await write_if_changed(self.unique_id, int(latest.frame_id))
        name = DTYPE_NAMES.get(latest.image.dtype.name) if latest is not None else None
        if name is not None and name != self.data_type_rbv.value:
            await self.data_type_rbv.write(name)

    @property
    def frame_base(self) -> int:
        """ArrayCounter when this acquisition started: the id of its first frame (camera
        index 0). Fixed for the acquisition: ArrayCounter put while it runs moves the
        counter, never the ids of frames already placed in a capture."""
        return self._frame_base

    @array_counter.putter
    async def array_counter(self, instance, value):
        frames = self.driver.frames_acquired if self.acquiring else 0
        self._counted_base = int(value) - frames
        await self.array_counter_rbv.write(int(value))
        return value

