"""Camera and file-writer PVs with areaDetector names (``cam1:...``, ``HDF1:...``).

Frames never cross Channel Access: the camera driver hands them to the recorder in
this process, which writes HDF5. Clients arm the writer (``HDF1:Capture``), start the
camera (``cam1:Acquire``) and follow counters (``cam1:ArrayCounter_RBV``,
``HDF1:NumCaptured_RBV``, ``HDF1:DroppedFrames_RBV``).

``cam1:CameraMode`` offers the four states users ask for: Paused, Preview (free-running,
nothing saved), Acquire (frames go to the writer when it is capturing) and Abort (stop
the camera and the writer at once; back to Paused).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from beamline_ls.frame import Frame
from beamline_ls.hardware.camera import CameraDriver, CameraSettings
from beamline_ls.iocs.blocking import DeviceWorker
from beamline_ls.iocs.mirror import MirrorGroup
from beamline_ls.iocs.text import text_pv
from beamline_ls.pipeline import concurrence
from beamline_ls.pipeline.background import Background, BackgroundAccumulator
from beamline_ls.pipeline.diskspace import capture_problem
from beamline_ls.pipeline.recorder import Recorder
from beamline_ls.pipeline.rolling import frames_per_file

log = logging.getLogger(__name__)


def _string(name: str, value: str = "", read_only: bool = False, doc: str = ""):
    return text_pv(name, value, read_only=read_only, doc=doc)


PREVIEW_SIZE = 128
# areaDetector's DetectorState order, so clients reading the number agree
AD_DETECTOR_STATES = ["Idle", "Acquire", "Readout", "Correct", "Saving", "Aborting", "Error",
                      "Waiting", "Initializing", "Disconnected", "Aborted"]


def preview_image(image: np.ndarray, size: int = PREVIEW_SIZE) -> np.ndarray:
    """Bin (mean) an image to at most size x size, padded to exactly size x size."""
    h, w = image.shape
    f = max(1, -(-max(h, w) // size))
    hh, ww = h // f * f, w // f * f
    small = image[:hh, :ww].reshape(hh // f, f, ww // f, f).mean(axis=(1, 3))
    out = np.zeros((size, size), np.int32)
    out[: small.shape[0], : small.shape[1]] = small
    return out


class CameraGroup(PVGroup):
    # -- camera (cam1:) ---------------------------------------------------------
    acquire = pvproperty(name="cam1:Acquire", value="Done", dtype=ChannelType.ENUM,
                         enum_strings=["Done", "Acquire"])
    camera_mode = pvproperty(name="cam1:CameraMode", value="Paused", dtype=ChannelType.ENUM,
                             enum_strings=["Paused", "Preview", "Acquire", "Abort"])
    acquire_time = pvproperty(name="cam1:AcquireTime", value=0.005, units="s", precision=6,
                              lower_ctrl_limit=1e-5, upper_ctrl_limit=10.0)
    acquire_time_rbv = pvproperty(name="cam1:AcquireTime_RBV", value=0.005, units="s",
                                  precision=6, read_only=True)
    acquire_period = pvproperty(name="cam1:AcquirePeriod", value=0.0, units="s", precision=6,
                                lower_ctrl_limit=0.0, upper_ctrl_limit=100.0)
    image_mode = pvproperty(name="cam1:ImageMode", value="Multiple", dtype=ChannelType.ENUM,
                            enum_strings=["Single", "Multiple", "Continuous"])
    num_images = pvproperty(name="cam1:NumImages", value=1, lower_ctrl_limit=1,
                            upper_ctrl_limit=100_000_000)
    trigger_mode = pvproperty(name="cam1:TriggerMode", value="Internal",
                              dtype=ChannelType.ENUM, enum_strings=["Internal", "External"])
    bin_x = pvproperty(name="cam1:BinX", value=1, lower_ctrl_limit=1, upper_ctrl_limit=4)
    bin_y = pvproperty(name="cam1:BinY", value=1, lower_ctrl_limit=1, upper_ctrl_limit=4)
    min_x = pvproperty(name="cam1:MinX", value=0, lower_ctrl_limit=0, upper_ctrl_limit=8192)
    min_y = pvproperty(name="cam1:MinY", value=0, lower_ctrl_limit=0, upper_ctrl_limit=8192)
    size_x = pvproperty(name="cam1:SizeX", value=2048, lower_ctrl_limit=1, upper_ctrl_limit=8192)
    size_y = pvproperty(name="cam1:SizeY", value=2048, lower_ctrl_limit=1, upper_ctrl_limit=8192)
    max_size_x = pvproperty(name="cam1:MaxSizeX_RBV", value=0, read_only=True)
    max_size_y = pvproperty(name="cam1:MaxSizeY_RBV", value=0, read_only=True)
    array_size_x = pvproperty(name="cam1:ArraySizeX_RBV", value=0, read_only=True)
    array_size_y = pvproperty(name="cam1:ArraySizeY_RBV", value=0, read_only=True)
    readout_time = pvproperty(name="cam1:ReadoutTime_RBV", value=0.0, units="s", precision=6,
                              read_only=True)
    array_counter = pvproperty(name="cam1:ArrayCounter_RBV", value=0, read_only=True)
    array_rate = pvproperty(name="cam1:ArrayRate_RBV", value=0.0, units="Hz", precision=2,
                            read_only=True, doc="measured frame rate")
    triggers_missed = pvproperty(name="cam1:TriggersMissed_RBV", value=0, read_only=True)
    detector_state = pvproperty(name="cam1:DetectorState_RBV", value="Idle",
                                dtype=ChannelType.ENUM, read_only=True,
                                enum_strings=AD_DETECTOR_STATES)
    status_message = _string("cam1:StatusMessage_RBV", read_only=True)
    # -- background (laser-off mean) and preview ------------------------------------------
    background_acquire = pvproperty(
        name="cam1:BackgroundAcquire", value=0, lower_ctrl_limit=0, upper_ctrl_limit=10_000,
        doc="put N: average N frames as background; completes when done")
    background_enable = pvproperty(name="cam1:BackgroundEnable", value="On",
                                   dtype=ChannelType.ENUM, enum_strings=["Off", "On"])
    background_valid = pvproperty(name="cam1:BackgroundValid_RBV", value=0, read_only=True,
                                  doc="0 after exposure, binning or ROI changed")
    background_frames = pvproperty(name="cam1:BackgroundFrames_RBV", value=0, read_only=True)
    background_level = pvproperty(name="cam1:BackgroundLevel_RBV", value=0.0, units="ADU",
                                  precision=2, read_only=True)
    preview = pvproperty(name="cam1:Preview_RBV", value=[0] * (PREVIEW_SIZE * PREVIEW_SIZE),
                         dtype=ChannelType.LONG, max_length=PREVIEW_SIZE * PREVIEW_SIZE,
                         read_only=True, doc="latest frame binned to 128x128 (drops frames)")
    preview_counter = pvproperty(name="cam1:PreviewCounter_RBV", value=0, read_only=True)
    # -- file writer (HDF1:) ----------------------------------------------------
    file_path = _string("HDF1:FilePath", doc="directory, relative to the IOC's data root")
    file_path_exists = pvproperty(name="HDF1:FilePathExists_RBV", value=0, read_only=True,
                                  doc="1: FilePath can take a capture (writable, room)")
    file_name = _string("HDF1:FileName")
    full_file_name = _string("HDF1:FullFileName_RBV", read_only=True)
    capture = pvproperty(name="HDF1:Capture", value=0, lower_ctrl_limit=0, upper_ctrl_limit=1)
    num_capture = pvproperty(name="HDF1:NumCapture", value=1, lower_ctrl_limit=1,
                             upper_ctrl_limit=100_000_000)
    num_captured = pvproperty(name="HDF1:NumCaptured_RBV", value=0, read_only=True)
    frames_per_volume = pvproperty(name="HDF1:FramesPerVolume", value=0, lower_ctrl_limit=0,
                                   upper_ctrl_limit=1000, doc="0: (frames, y, x) layout")
    extra_fields = _string("HDF1:ExtraFields",
                           doc="comma-separated extra per-frame metadata (e.g. gating)")
    dropped_frames = pvproperty(name="HDF1:DroppedFrames_RBV", value=0, read_only=True)
    write_message = _string("HDF1:WriteMessage", read_only=True)
    write_status = pvproperty(name="HDF1:WriteStatus", value="Write OK", dtype=ChannelType.ENUM,
                              enum_strings=["Write OK", "Write error"], read_only=True,
                              doc="Write error: the last capture failed (see WriteMessage)")
    lost_frames = pvproperty(name="HDF1:LostFrames_RBV", value=0, read_only=True,
                             doc="frames of the last capture not in the file")
    data_root_pv = _string("HDF1:DataRoot_RBV", read_only=True)
    buffer_frames = pvproperty(name="HDF1:BufferFrames", value=0, lower_ctrl_limit=0,
                               upper_ctrl_limit=100_000, doc="ring capacity; 0: from RAM")
    buffer_used = pvproperty(name="HDF1:BufferUsed_RBV", value=0, read_only=True)
    first_dropped = pvproperty(name="HDF1:FirstDroppedId_RBV", value=-1, read_only=True)
    sim_fail_after = pvproperty(name="cam1:SimFailAfter", value=0, lower_ctrl_limit=0,
                                upper_ctrl_limit=100_000_000,
                                doc="simulated camera only: the sensor fails after N "
                                    "frames of each acquisition (0: never)")
    sim_write_delay = pvproperty(name="HDF1:SimWriteDelay", value=0.0, units="s",
                                 precision=4, lower_ctrl_limit=0.0, upper_ctrl_limit=1.0,
                                 doc="simulated slow disk: seconds added to every write")
    max_file_frames = pvproperty(
        name="HDF1:MaxFileFrames", value=0, lower_ctrl_limit=0, upper_ctrl_limit=100_000_000,
        doc="most frames per file (whole volumes); 0: a quarter of this machine's RAM")
    file_frames = pvproperty(name="HDF1:FileFrames_RBV", value=0, read_only=True,
                             doc="frames per file of the current capture")
    file_count = pvproperty(name="HDF1:FileCount_RBV", value=0, read_only=True,
                            doc="files of the current capture so far")
    concurrence_log = pvproperty(
        name="HDF1:ConcurrenceLog", value="Off", dtype=ChannelType.ENUM,
        enum_strings=["Off", "On"],
        doc="log every pipeline event (ns) while capturing; saved when capture ends")
    concurrence_file = _string("HDF1:ConcurrenceFile_RBV", read_only=True)
    mirror = SubGroup(MirrorGroup, prefix="HDF1:",
                      doc="copies of closed files to a slow destination (HDF1:Mirror*)")

    def __init__(self, *args, driver: CameraDriver, data_root: Path,
                 annotate: Callable[[Frame], None] | None = None,
                 mirror_root: str | Path | None = None,
                 mirror_roots: Sequence[str | Path] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver
        # stopping joins the camera's thread (a real SDK may wait on the device):
        # off the event loop, one driver call at a time
        self._driver_worker = DeviceWorker("camera")
        self._file_worker = DeviceWorker("camera-files")  # file creation, logs
        self.annotate = annotate  # adds per-frame metadata known elsewhere (gating)
        self.data_root = Path(data_root).resolve()
        self.mirror.configure(self.data_root, mirror_root, mirror_roots)
        self.recorder = Recorder()
        self._stamps: collections.deque[float] = collections.deque(maxlen=50)
        self.latest: Frame | None = None
        self._preview = False
        self._published: CameraSettings | None = None
        self._aborted = False
        self.background: Background | None = None
        self._accumulator: BackgroundAccumulator | None = None
        self._background_done = threading.Event()
        self._preview_id = -1
        self._preview_t = 0.0

    # -- frame path (camera thread) ---------------------------------------------
    def on_frame(self, frame: Frame) -> None:
        if self.annotate is not None:
            self.annotate(frame)
        self._stamps.append(frame.timestamp)
        self.latest = frame  # the preview task samples this; it never slows saving
        acc = self._accumulator
        if acc is not None:
            if acc.add(frame.image):
                self._background_done.set()
            return
        if not self._preview:
            concurrence.record("camera frame", frame_id=frame.frame_id)
            self.recorder.submit(frame)

    def frames_per_file(self, frame_shape: tuple[int, int], planes: int) -> int:
        """HDF1:MaxFileFrames rounded down to whole volumes (at least one), or sized
        from RAM when it is 0."""
        per = planes or 1
        wanted = int(self.max_file_frames.value)
        if wanted == 0:
            return frames_per_file(frame_shape, planes)
        return max(per, wanted // per * per)

    def settings_key(self, settings: CameraSettings) -> tuple:
        return (settings.exposure_s, settings.binning, tuple(settings.roi))

    # -- helpers ----------------------------------------------------------------
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

    def resolve_path(self) -> Path:
        name = self.file_name.value.strip()
        if not name:
            raise ValueError("HDF1:FileName is empty")
        if not name.endswith((".h5", ".hdf5")):
            name += ".h5"
        directory = Path(self.file_path.value.strip() or ".")
        if not directory.is_absolute():
            directory = self.data_root / directory
        path = (directory / name).resolve()
        if self.data_root not in path.parents:
            raise ValueError(f"{path} is outside the IOC's data root {self.data_root}")
        if path.exists():
            raise FileExistsError(f"{path} exists; choose another FileName (never overwritten)")
        return path

    async def _start_camera(self, preview: bool) -> None:
        settings = self.settings()
        settings.validate(self.driver.sensor_shape)
        if self.driver.running:
            await self._driver_worker.call(self.driver.stop)
        n = {"Single": 1, "Multiple": int(self.num_images.value), "Continuous": None}[
            self.image_mode.value
        ]
        self._preview = preview
        if not preview and self.recorder.capturing:
            self.recorder.camera_restarted()  # a paused capture goes on (RunEngine resume)
        self._stamps.clear()
        # a client whose start put has completed must not see the previous run's counts
        await self.array_counter.write(0)
        await self.array_rate.write(0.0)
        if preview:
            settings = CameraSettings(settings.exposure_s, settings.binning, settings.roi,
                                      "Internal", settings.period_s)
            n = None
        await self._driver_worker.call(self.driver.start, settings, n, self.on_frame)
        log.info("camera started (%s, %s frames, %s trigger)",
                 "preview" if preview else "acquire", n or "continuous", settings.trigger_mode)
        await self._publish_geometry(settings)
        await self.detector_state.write("Acquire")
        await self.status_message.write("previewing" if preview else "acquiring")

    async def _publish_geometry(self, settings: CameraSettings) -> None:
        h, w = settings.frame_shape
        await self.array_size_x.write(w)
        await self.array_size_y.write(h)
        await self.readout_time.write(self.driver.readout_time_s(settings))
        await self.acquire_time_rbv.write(settings.exposure_s)

    async def _stop_camera(self, message: str) -> None:
        await self._driver_worker.call(self.driver.stop)
        self._preview = False
        await self.detector_state.write("Idle")
        await self.status_message.write(message)

    # -- putters ----------------------------------------------------------------
    @acquire.putter
    async def acquire(self, instance, value):
        if value == "Acquire":
            try:
                await self._start_camera(preview=False)
            except (ValueError, RuntimeError) as exc:
                await self.status_message.write(f"acquire refused: {exc}"[:500])
                log.error("acquire refused: %s", exc)
                raise
            await self.camera_mode.write("Acquire", verify_value=False)
        else:
            await self._stop_camera("stopped")
            await self.camera_mode.write("Paused", verify_value=False)
        return value

    @camera_mode.putter
    async def camera_mode(self, instance, value):
        if value == "Acquire":
            await self.acquire.write("Acquire")
        elif value == "Preview":
            await self._start_camera(preview=True)
            await self.acquire.write("Done", verify_value=False)
        elif value == "Abort":
            await self._stop_camera("aborted")
            if self.recorder.capturing:  # the status loop reports when it has closed
                self._aborted = True
                self.recorder.request_stop(discard=True)  # a stalled disk must not hold it
            await self.acquire.write("Done", verify_value=False)
            return "Paused"
        else:
            await self._stop_camera("paused")
            await self.acquire.write("Done", verify_value=False)
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
        settings.validate(self.driver.sensor_shape)
        settings = CameraSettings(settings.exposure_s, settings.binning, settings.roi,
                                  "Internal", 0.0)
        self._background_done.clear()
        self._accumulator = BackgroundAccumulator(n, self.settings_key(settings))
        self._stamps.clear()
        await self._driver_worker.call(self.driver.start, settings, n, self.on_frame)
        try:
            loop = asyncio.get_running_loop()
            timeout = 10 + 2 * n * (settings.exposure_s + self.driver.readout_time_s(settings))
            done = await loop.run_in_executor(None, self._background_done.wait, timeout)
            if not done:
                raise TimeoutError(f"background: only {self._accumulator.count} of {n} frames")
            self.background = self._accumulator.result()
        finally:
            await self._driver_worker.call(self.driver.stop)
            self._accumulator = None
        await self.background_valid.write(1)
        await self.background_frames.write(self.background.n_frames)
        await self.background_level.write(float(self.background.mean.mean()))
        await self.status_message.write(f"background of {n} frames taken")
        log.info("background of %d frames, mean %.2f ADU", n, float(self.background.mean.mean()))
        return 0

    @file_path.putter
    async def file_path(self, instance, value):
        """Check at once that a capture could write there (as areaDetector's
        FilePathExists_RBV, plus writability and room), so a plan fails before it
        opens a run; the reason goes to WriteMessage."""
        loop = asyncio.get_running_loop()
        problem = await loop.run_in_executor(None, self._path_problem, value)
        if problem:  # the cause first: a client seeing 0 finds it
            await self.write_message.write(problem[:500])
            log.error("HDF1:FilePath %r: %s", value, problem)
        await self.file_path_exists.write(0 if problem else 1)
        return value

    def _path_problem(self, value: str) -> str:
        directory = Path(value.strip() or ".")
        if not directory.is_absolute():
            directory = self.data_root / directory
        directory = directory.resolve()
        if directory != self.data_root and self.data_root not in directory.parents:
            return f"{directory} is outside the IOC's data root {self.data_root}"
        try:
            h, w = self.settings().frame_shape
        except ValueError:
            h, w = self.driver.sensor_shape
        return capture_problem(directory, h * w * 2)

    @sim_fail_after.putter
    async def sim_fail_after(self, instance, value):
        if not hasattr(self.driver, "fail_after"):
            raise ValueError("only the simulated camera can be made to fail")
        self.driver.fail_after = int(value)
        return int(value)

    @acquire_time.putter
    async def acquire_time(self, instance, value):
        await self.acquire_time_rbv.write(value)
        return value

    def _open_capture(self) -> tuple[Path, int]:
        """Check the path and settings and start the recorder (file worker thread);
        returns the file and the frames per file."""
        path = self.resolve_path()
        settings = self.settings()
        settings.validate(self.driver.sensor_shape)
        attrs = {
            "exposure_s": settings.exposure_s,
            "binning": settings.binning,
            "roi": list(settings.roi),
            "trigger_mode": settings.trigger_mode,
        }
        extra = tuple(f.strip() for f in self.extra_fields.value.split(",") if f.strip())
        bg = self.background if (
            self.background is not None and self.background_enable.value == "On"
            and self.background.matches(self.settings_key(settings))) else None
        self.recorder.buffer_frames = int(self.buffer_frames.value)
        self.recorder.write_delay_s = float(self.sim_write_delay.value)
        planes = int(self.frames_per_volume.value)
        per_file = self.frames_per_file(settings.frame_shape, planes)
        self.recorder.start(path, settings.frame_shape, int(self.num_capture.value),
                            planes, attrs, extra, bg, max_frames_per_file=per_file,
                            on_file_closed=self.mirror.submit)
        return path, per_file

    @capture.putter
    async def capture(self, instance, value):
        if value:
            try:
                # paths are resolved and the file and its disk reserve created on the
                # file worker: a slow or hung disk must not freeze every PV
                path, per_file = await self._file_worker.call(self._open_capture)
            except (ValueError, RuntimeError, OSError) as exc:
                await self.write_message.write(f"capture refused: {exc}"[:500])
                await self.write_status.write("Write error")
                log.error("capture refused: %s", exc)
                raise
            if self.concurrence_log.value == "On":
                concurrence.enable()
                concurrence.record("capture start")
            await self.full_file_name.write(str(path))
            await self.file_frames.write(per_file)
            await self.file_count.write(1)
            await self.num_captured.write(0)
            await self.dropped_frames.write(0)
            await self.lost_frames.write(0)
            await self.first_dropped.write(-1)
            await self.write_status.write("Write OK")
            await self.write_message.write("capturing")
        elif self.recorder.capturing:  # the status loop reports when it has closed
            self.recorder.request_stop()
        return value

    # -- status loop --------------------------------------------------------------
    @array_counter.startup
    async def array_counter(self, instance, async_lib):
        h, w = self.driver.sensor_shape
        await self.max_size_x.write(w)
        await self.max_size_y.write(h)
        await self.data_root_pv.write(str(self.data_root))
        while True:
            await self._refresh()
            await asyncio.sleep(0.02)

    async def _refresh(self) -> None:
        try:
            settings = self.settings()
            settings.validate(self.driver.sensor_shape)
        except ValueError:
            settings = None
        if settings is not None and settings != self._published:
            self._published = settings
            await self._publish_geometry(settings)
            if self.background is not None and not self.background.matches(
                    self.settings_key(settings)):
                log.info("background invalidated: exposure, binning or ROI changed")
                self.background = None
                await self.background_valid.write(0)
        latest = self.latest
        if latest is not None and latest.frame_id != self._preview_id and (
                time.monotonic() - self._preview_t > 0.2):  # ~5 Hz, only the newest frame
            self._preview_id = latest.frame_id
            self._preview_t = time.monotonic()
            await self.preview.write(preview_image(latest.image).ravel().tolist())
            await self.preview_counter.write(self.preview_counter.value + 1)
        frames = self.driver.frames_acquired
        if frames != self.array_counter.value:
            await self.array_counter.write(frames)
        stamps = list(self._stamps)
        if len(stamps) >= 2 and stamps[-1] > stamps[0]:
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
            if abs(rate - self.array_rate.value) > 0.01:
                await self.array_rate.write(rate)
        missed = self.driver.triggers_missed
        if missed != self.triggers_missed.value:
            await self.triggers_missed.write(missed)
        if not self.driver.running and self.detector_state.value == "Acquire":
            await self.detector_state.write("Idle")
            await self.acquire.write("Done", verify_value=False)
            await self.camera_mode.write("Paused", verify_value=False)
            failure = self.driver.failure
            if failure:
                await self.status_message.write(f"camera failed: {failure}"[:500])
                log.error("camera failed after %d frames: %s", frames, failure)
                if self.recorder.capturing:
                    self.recorder.fail(f"the camera stopped with an error: {failure}")
            else:
                await self.status_message.write(f"done: {frames} frames")
        st = self.recorder.status
        if st.frames_written != self.num_captured.value:
            await self.num_captured.write(st.frames_written)
        if st.frames_dropped != self.dropped_frames.value:
            await self.dropped_frames.write(st.frames_dropped)
            if st.dropped_ids and self.first_dropped.value < 0:
                await self.first_dropped.write(int(st.dropped_ids[0]))
        if st.files != self.file_count.value and st.files:
            await self.file_count.write(st.files)
        ring = self.recorder._ring
        used = len(ring) if ring is not None and st.capturing else 0
        if used != self.buffer_used.value:
            await self.buffer_used.write(used)
        if self.capture.value and not st.capturing:
            self.recorder.stop()
            msg = st.error or (
                f"{'aborted after' if self._aborted else 'wrote'} {st.frames_written} frames "
                f"({st.frames_dropped} dropped, {st.frames_lost} lost)")
            self._aborted = False
            await self._save_concurrence_log(Path(st.path))
            await self.lost_frames.write(st.frames_lost)
            await self.write_message.write(msg[:500])
            if st.error:  # after the message: a client seeing the error finds its cause
                await self.write_status.write("Write error")
            await self.capture.write(0, verify_value=False)

    async def _save_concurrence_log(self, data_file: Path) -> None:
        """Save the capture's concurrence log next to the data (if it was on)."""
        events = concurrence.disable()
        if events is None:
            return
        events.record("capture end")
        path = data_file.with_name(data_file.stem + ".concurrence.csv")
        try:
            await self._file_worker.call(events.save, path)
        except OSError as exc:
            log.error("could not save the concurrence log %s: %s", path, exc)
            return
        log.info("concurrence log of %s: %s", data_file.name, path)
        await self.concurrence_file.write(str(path))
