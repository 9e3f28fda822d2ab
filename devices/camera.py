"""The sCMOS camera and its HDF5 file writer, as an ophyd flyer that writes stream
assets: frames stay in the IOC's HDF5 files; the run gets StreamResource documents
for the image and each per-frame metadata dataset, and StreamDatum documents per
batch of complete volumes (or frames), never one Event per frame."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

from event_model import compose_stream_resource
from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal, EpicsSignalRO
from ophyd.status import Status, SubscriptionStatus

from beamline_ls.pipeline.parts import part_path
from devices.status import ProgressStatus, ioc_silence, late, settle, within
from devices.text import TextSignal, TextSignalRO

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a connected camera IOC may take to answer before it counts as gone: Channel
#: Access's own limit for a silent server (EPICS_CA_CONN_TMO, 30 s by default). Why
#: wait at all: a read that times out (ophyd's 2 s) while its channel stays connected is
#: a busy IOC, not a dead one; on a loaded 2-core machine (three browsers watching a
#: scan) one read took longer and ended a healthy scan as "lost contact". A dead IOC
#: disconnects its channels and is reported at once.
IOC_PATIENCE_S = 30.0

META_KEYS = {
    # data key suffix: (dataset, numpy dtype, units)
    "frame_id": ("/entry/meta/frame_id", "<i8", ""),
    "timestamp": ("/entry/meta/timestamp", "<f8", "s"),
    "z": ("/entry/meta/z_um", "<f8", "um"),
    "plane": ("/entry/meta/plane", "<i4", ""),
    "volume": ("/entry/meta/volume", "<i4", ""),
}
IMAGE_DATASET = "/entry/data/data"
EXTRA_UNITS = {"trigger_time": "s", "fired_at": "s", "gating_phase": "rad",
               "true_phase": "rad", "period_s": "s", "brightfield_time": "s",
               "camera_timestamp": "s"}


class CamControls(Device):
    acquire = Cpt(EpicsSignal, "Acquire", string=True, put_complete=True)
    camera_mode = Cpt(EpicsSignal, "CameraMode", string=True, put_complete=True)
    acquire_time = Cpt(EpicsSignal, "AcquireTime_RBV", write_pv="AcquireTime", limits=True,
                       put_complete=True, kind="config")
    acquire_period = Cpt(EpicsSignal, "AcquirePeriod", limits=True, put_complete=True,
                         kind="config")
    image_mode = Cpt(EpicsSignal, "ImageMode", string=True, put_complete=True, kind="config")
    num_images = Cpt(EpicsSignal, "NumImages", limits=True, put_complete=True, kind="config")
    trigger_mode = Cpt(EpicsSignal, "TriggerMode", string=True, put_complete=True,
                       kind="config")
    bin_x = Cpt(EpicsSignal, "BinX", limits=True, put_complete=True, kind="config")
    bin_y = Cpt(EpicsSignal, "BinY", limits=True, put_complete=True, kind="config")
    min_x = Cpt(EpicsSignal, "MinX", limits=True, put_complete=True, kind="config")
    min_y = Cpt(EpicsSignal, "MinY", limits=True, put_complete=True, kind="config")
    size_x = Cpt(EpicsSignal, "SizeX", limits=True, put_complete=True, kind="config")
    size_y = Cpt(EpicsSignal, "SizeY", limits=True, put_complete=True, kind="config")
    max_size_x = Cpt(EpicsSignalRO, "MaxSizeX_RBV", kind="omitted")
    max_size_y = Cpt(EpicsSignalRO, "MaxSizeY_RBV", kind="omitted")
    array_size_x = Cpt(EpicsSignalRO, "ArraySizeX_RBV", kind="omitted")
    array_size_y = Cpt(EpicsSignalRO, "ArraySizeY_RBV", kind="omitted")
    readout_time = Cpt(EpicsSignalRO, "ReadoutTime_RBV", kind="config")
    array_counter = Cpt(EpicsSignal, "ArrayCounter_RBV", write_pv="ArrayCounter",
                        auto_monitor=True, put_complete=True, kind="omitted")
    array_rate = Cpt(EpicsSignalRO, "ArrayRate_RBV", auto_monitor=True, kind="omitted")
    triggers_missed = Cpt(EpicsSignalRO, "TriggersMissed_RBV", auto_monitor=True,
                          kind="omitted")
    detector_state = Cpt(EpicsSignalRO, "DetectorState_RBV", string=True, kind="omitted")
    status_message = Cpt(TextSignalRO, "StatusMessage_RBV", kind="omitted")
    #: areaDetector's ReadStatus: the IOC reads the camera now (one that did not open is
    #: tried again)
    read_status = Cpt(EpicsSignal, "ReadStatus", put_complete=True, kind="omitted")
    background_acquire = Cpt(EpicsSignal, "BackgroundAcquire", put_complete=True,
                             kind="omitted")
    background_enable = Cpt(EpicsSignal, "BackgroundEnable", string=True, put_complete=True,
                            kind="config")
    background_valid = Cpt(EpicsSignalRO, "BackgroundValid_RBV", kind="config")
    background_frames = Cpt(EpicsSignalRO, "BackgroundFrames_RBV", kind="config")
    background_level = Cpt(EpicsSignalRO, "BackgroundLevel_RBV", kind="omitted")
    preview = Cpt(EpicsSignalRO, "Preview_RBV", auto_monitor=True, kind="omitted")
    preview_counter = Cpt(EpicsSignalRO, "PreviewCounter_RBV", auto_monitor=True,
                          kind="omitted")
    sim_fail_after = Cpt(EpicsSignal, "SimFailAfter", put_complete=True, kind="omitted")
    frame_fields = Cpt(TextSignalRO, "FrameFields_RBV", kind="omitted")


class HDF5Writer(Device):
    file_path = Cpt(TextSignal, "FilePath", put_complete=True, kind="config")
    file_path_exists = Cpt(EpicsSignalRO, "FilePathExists_RBV", auto_monitor=True,
                           kind="omitted")
    file_name = Cpt(TextSignal, "FileName", put_complete=True, kind="omitted")
    full_file_name = Cpt(TextSignalRO, "FullFileName_RBV", auto_monitor=True,
                         kind="omitted")
    #: a busy record (as ADCore's): a put with completion completes when the capture
    #: has ended; Capture_RBV says when the file is open
    capture = Cpt(EpicsSignal, "Capture", put_complete=True, auto_monitor=True,
                  kind="omitted")
    capture_rbv = Cpt(EpicsSignalRO, "Capture_RBV", auto_monitor=True, kind="omitted")
    num_capture = Cpt(EpicsSignal, "NumCapture", limits=True, put_complete=True,
                      kind="omitted")
    num_captured = Cpt(EpicsSignalRO, "NumCaptured_RBV", auto_monitor=True, kind="omitted")
    num_flushed = Cpt(EpicsSignalRO, "NumFlushed_RBV", kind="omitted")
    frames_per_volume = Cpt(EpicsSignal, "FramesPerVolume", limits=True, put_complete=True,
                            kind="omitted")
    extra_fields = Cpt(TextSignal, "ExtraFields", put_complete=True,
                       kind="omitted")
    dropped_frames = Cpt(EpicsSignalRO, "DroppedFrames_RBV", auto_monitor=True,
                         kind="omitted")
    write_message = Cpt(TextSignalRO, "WriteMessage", auto_monitor=True,
                        kind="omitted")
    write_status = Cpt(EpicsSignalRO, "WriteStatus", string=True, auto_monitor=True,
                       kind="omitted")
    lost_frames = Cpt(EpicsSignalRO, "LostFrames_RBV", kind="omitted")
    data_root = Cpt(TextSignalRO, "DataRoot_RBV", kind="omitted")
    buffer_frames = Cpt(EpicsSignal, "BufferFrames", limits=True, put_complete=True,
                        kind="config")
    buffer_used = Cpt(EpicsSignalRO, "BufferUsed_RBV", auto_monitor=True, kind="omitted")
    first_dropped = Cpt(EpicsSignalRO, "FirstDroppedId_RBV", kind="omitted")
    max_file_frames = Cpt(EpicsSignal, "MaxFileFrames", limits=True, put_complete=True,
                          kind="config")
    file_frames = Cpt(EpicsSignalRO, "FileFrames_RBV", kind="omitted")
    file_count = Cpt(EpicsSignalRO, "FileCount_RBV", kind="omitted")
    sim_write_delay = Cpt(EpicsSignal, "SimWriteDelay", limits=True, put_complete=True,
                          kind="omitted")
    concurrence_log = Cpt(EpicsSignal, "ConcurrenceLog", string=True, put_complete=True,
                          kind="omitted")
    concurrence_file = Cpt(TextSignalRO, "ConcurrenceFile_RBV",
                           kind="omitted")
    # copies of closed files to a slow destination; the catalog follows verified copies
    mirror_path = Cpt(TextSignal, "MirrorPath", put_complete=True,
                      kind="config")
    mirror_retries = Cpt(EpicsSignal, "MirrorRetries", limits=True, put_complete=True,
                         kind="omitted")
    mirror_backoff = Cpt(EpicsSignal, "MirrorBackoff", limits=True, put_complete=True,
                         kind="omitted")
    mirror_queued = Cpt(EpicsSignalRO, "MirrorQueued_RBV", kind="omitted")
    mirror_verified = Cpt(EpicsSignalRO, "MirrorVerified_RBV", kind="omitted")
    mirror_failed = Cpt(EpicsSignalRO, "MirrorFailed_RBV", kind="omitted")
    mirror_message = Cpt(TextSignalRO, "MirrorMessage_RBV", kind="omitted")
    mirror_last_copy = Cpt(TextSignalRO, "MirrorLastCopy_RBV",
                           kind="omitted")


#: columns of ``VOL1:Rows_RBV`` (beamline_ls.pipeline.summary.COLUMNS): data key
#: suffix, dtype, units, hinted (shown by live tables and plots)
SUMMARY_KEYS = {
    "frames": ("integer", "", False),
    "z_min": ("number", "um", False),
    "z_max": ("number", "um", False),
    "mean": ("number", "counts", True),
    "max": ("number", "counts", True),
}


class CaptureSummary(Device):
    """The IOC's summary of the capture, a row per volume (per block of 100 frames when
    planar): an Event stream of data, read while the camera flies, so live tables,
    BestEffortCallback and ``table()`` show a fly scan as it goes.

    Rows come from ``VOL1:Rows_RBV`` (the newest 256; each read takes the rows after
    the last one collected). Data keys carry this device's name
    (``camera_summary_mean``, ...: ``camera_volume`` in ``primary`` is each frame's
    volume); the row index is ``..._volume`` in volumetric captures and ``..._block``
    in planar ones; each Event's time is when the IOC finished the row.
    """

    rows = Cpt(EpicsSignalRO, "Rows_RBV", kind="omitted")
    columns = Cpt(TextSignalRO, "Columns_RBV", kind="omitted")
    count = Cpt(EpicsSignalRO, "Count_RBV", kind="omitted")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._next = 0
        self._volumetric = False

    def start_capture(self, volumetric: bool) -> None:
        """A new capture: collect its rows from the first (called by ``prepare``)."""
        self._next = 0
        self._volumetric = volumetric

    @property
    def index_key(self) -> str:
        return f"{self.name}_{'volume' if self._volumetric else 'block'}"

    @property
    def hints(self) -> dict:
        return {"fields": [f"{self.name}_{k}"
                           for k, (_, _, hinted) in SUMMARY_KEYS.items() if hinted]}

    def describe_collect(self) -> dict:
        source = self.rows.pvname
        keys = {self.index_key: {"source": source, "shape": [], "dtype": "integer",
                                 "dtype_numpy": "<i8"}}
        for suffix, (dtype, units, _) in SUMMARY_KEYS.items():
            keys[f"{self.name}_{suffix}"] = {
                "source": source, "shape": [], "dtype": dtype,
                "dtype_numpy": "<i8" if dtype == "integer" else "<f8", "units": units}
        return keys

    def collect(self) -> Iterator[dict]:
        """Events for the rows finished since the last call."""
        import numpy as np

        # a dead IOC is reported as such, with its files
        columns, flat = self.parent._ask(lambda: (
            str(self.columns.get(use_monitor=False)).split(","),
            np.asarray(self.rows.get(use_monitor=False), dtype=float)))
        table = flat.reshape(-1, len(columns))
        col = {name: table[:, i] for i, name in enumerate(columns)}
        new = col["index"] >= self._next
        if new.any():
            first = int(col["index"][new].min())
            if first > self._next:  # not read for longer than the IOC keeps rows
                self.log.warning("%s: %d summary row(s) were replaced before they were "
                                 "read (frames are unaffected)", self.name, first - self._next)
        for k in np.flatnonzero(new):
            index = int(col["index"][k])
            data = {self.index_key: index}
            for suffix, (dtype, _, _) in SUMMARY_KEYS.items():
                value = float(col[suffix][k])
                data[f"{self.name}_{suffix}"] = int(value) if dtype == "integer" else value
            t = float(col["time"][k])
            self._next = index + 1
            yield {"data": data, "timestamps": dict.fromkeys(data, t), "time": t}


#: most frames one capture takes (the IOC's cam1:NumImages and HDF1:NumCapture limit)
MAX_FRAMES = 100_000_000


@dataclass(frozen=True)
class Acquisition:
    """What :meth:`Camera.prepare` arms: ``n_frames`` frames, grouped in volumes of
    ``frames_per_volume`` (0 for a plain frame series), into ``file_name``.

    Checked on construction, which plans do before anything moves: a capture the camera
    cannot take otherwise failed at the first put, after the scan board and the piezo
    had been set up for it."""

    n_frames: int
    file_name: str
    frames_per_volume: int = 0
    trigger_mode: str = "External"
    file_path: str = "."
    stall_timeout: float = 10.0
    extra_fields: tuple[str, ...] = ()  # further float metadata per frame (gating)

    def __post_init__(self) -> None:
        if not 1 <= self.n_frames <= MAX_FRAMES:
            unit = (f" ({self.n_frames // self.frames_per_volume} volumes of "
                    f"{self.frames_per_volume} frames)" if self.frames_per_volume else "")
            raise ValueError(f"{self.n_frames} frames{unit} in one capture: the camera "
                             f"takes 1 to {MAX_FRAMES} (cam1:NumImages); acquire fewer")


class Camera(Device):
    """sCMOS camera: ``cam`` controls, ``hdf`` file writer; flyable, writes stream assets."""

    cam = Cpt(CamControls, "cam1:")
    hdf = Cpt(HDF5Writer, "HDF1:")
    summary = Cpt(CaptureSummary, "VOL1:")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._acq: Acquisition | None = None
        self._bundles: dict = {}  # file number -> {data key: stream resource bundle}
        self._index = 0
        # read from the IOC at the capture's first collect (the file opens at kickoff)
        self._first_file = Path()
        # frames written, as last read from the IOC (progress or collect); None until
        # the capture's count was first read
        self._written_seen: int | None = None
        self._contact_error = ""  # why the IOC could not be read during complete()
        self._units_per_file = 1
        # a pause that came while the camera started (stops it once started), and the
        # lock that keeps that stop and a resume in order
        self._pausing = False
        self._pause_lock = threading.Lock()

    # -- configuration ------------------------------------------------------------
    def set_centered_roi(self, width: int, height: int | None = None,
                         binning: int = 1, timeout: float = 5.0) -> None:
        """Centre a ``width`` x ``height`` ROI (unbinned pixels) on the sensor and wait
        until the IOC reports the new frame geometry (readout time included)."""
        height = height or width
        sensor_w = int(self.cam.max_size_x.get())
        sensor_h = int(self.cam.max_size_y.get())
        if sensor_w == 0 or sensor_h == 0:  # no sensor: the camera did not open
            raise RuntimeError(f"{self.name}: no sensor (0x0): "
                               f"{self.cam.status_message.get(use_monitor=False)}")
        if not (0 < width <= sensor_w and 0 < height <= sensor_h):
            raise ValueError(f"ROI {width}x{height} does not fit the {sensor_w}x{sensor_h} sensor")
        # start before size: the IOC holds a region to the sensor as each PV is put
        # (a size that does not fit from the old start would be cut)
        for sig, value in ((self.cam.bin_x, binning), (self.cam.bin_y, binning),
                           (self.cam.min_x, (sensor_w - width) // 2),
                           (self.cam.min_y, (sensor_h - height) // 2),
                           (self.cam.size_x, width), (self.cam.size_y, height)):
            sig.set(value).wait(timeout)
        deadline = time.monotonic() + timeout
        while int(self.cam.array_size_x.get(use_monitor=False)) != width // binning or int(
                self.cam.array_size_y.get(use_monitor=False)) != height // binning:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: the IOC did not apply the ROI")
            time.sleep(0.02)

    @property
    def frame_shape(self) -> tuple[int, int]:
        b = int(self.cam.bin_x.get())
        return (int(self.cam.size_y.get()) // b, int(self.cam.size_x.get()) // b)

    def prepare(self, value: Acquisition) -> Status:
        """Configure trigger mode, counts and file name; done when the IOC has them."""
        if value.n_frames < 1:
            raise ValueError("n_frames must be >= 1")
        if value.frames_per_volume and value.n_frames % value.frames_per_volume:
            raise ValueError("n_frames must be a whole number of volumes")
        # what this camera adds to every frame (a real camera's own timestamp)
        own = [f for f in str(self.cam.frame_fields.get()).split(",")
               if f and f not in value.extra_fields]
        value = replace(value, extra_fields=tuple(value.extra_fields) + tuple(own))
        # a new acquisition: kicked off and completed afresh (see kickoff, complete). The
        # last one's completion may still be waiting (a run stopped while paused): it
        # ends now, and its callbacks no longer touch this acquisition's state
        if self._completing is not None:
            self._completing.abandon("its acquisition was replaced by a new one")
        self._acq = value
        self._kickoff_status = self._completing = None
        self.summary.start_capture(bool(value.frames_per_volume))
        self._bundles = {}
        self._index = 0
        self._first_file = Path()
        self._shape = (0, 0)
        self._written_seen = None
        self._flushed_seen = 0
        self._facts = None
        self._stopped_for_pause = self._pausing = False  # a run stopped while paused
        self._contact_error = ""
        st = self.cam.trigger_mode.set(value.trigger_mode)
        for sig, v in (
            (self.cam.array_counter, 0),  # frame ids of this acquisition from 0
            (self.cam.image_mode, "Multiple"),
            (self.cam.num_images, value.n_frames),
            (self.hdf.num_capture, value.n_frames),
            (self.hdf.frames_per_volume, value.frames_per_volume),
            (self.hdf.file_path, value.file_path),
            (self.hdf.file_name, value.file_name),
            (self.hdf.extra_fields, ",".join(value.extra_fields)),
        ):
            st = st & sig.set(v)
        return self._checked_path(st)

    def _checked_path(self, settings: Status) -> Status:
        """``settings`` done, then fail if the IOC found FilePath unusable (read-only,
        outside the data root, no room): a plan stops here, before it opens a run."""
        result = Status(obj=self)

        def verify() -> None:  # fresh reads: monitors may lag the put's completion
            try:
                ok = int(self.hdf.file_path_exists.get(use_monitor=False)) == 1
                why = "" if ok else self.hdf.write_message.get(use_monitor=False)
                if ok and self.catalog_roots:
                    why = self._unreadable_root(self.hdf.data_root.get(use_monitor=False))
                    ok = not why
            except Exception as exc:  # noqa: BLE001 - delivered to the plan
                settle(result, exc)
                return
            settle(result, None if ok else RuntimeError(f"{self.name}: {why}"))

        def check(st) -> None:
            if not st.success:
                settle(result, st.exception() or RuntimeError(f"{self.name}: prepare"))
            else:  # Channel Access reads must not run on the callback thread
                threading.Thread(target=verify, name=f"{self.name}-path-check",
                                 daemon=True).start()

        settings.add_callback(check)
        return within(result, self.setup_timeout, lambda: self._late(
            "did not take the capture's settings (trigger mode, counts, file name)"))

    #: directories the session's catalog reads frames from (set by the session; empty:
    #: not checked): a capture whose IOC writes elsewhere is refused before its run
    #: opens, as its run would be stored with frames no one could read through it
    catalog_roots: tuple[str, ...] = ()

    def _unreadable_root(self, root: str) -> str:
        """Why frames written under the IOC's data root ``root`` could not be read
        through the session's catalog, or ""."""
        where = Path(root).resolve()
        for allowed in (Path(r).resolve() for r in self.catalog_roots):
            if where == allowed or allowed in where.parents:
                return ""
        return (f"the camera IOC writes frames under {root} (HDF1:DataRoot_RBV), where "
                f"this session's catalog does not read ({', '.join(self.catalog_roots)}): "
                "its runs would be stored with frames no one can load. Start the IOC "
                "with the session's data directory (beamline-ls ioc --data-dir, "
                "BEAMLINE_LS_DATA_DIR), or map its path ([path_map] in the TOML)")

    def _late(self, what: str) -> str:
        """Why the camera IOC has not done ``what`` within ``setup_timeout``."""
        return late(self, "camera", what, self.setup_timeout,
                    [self.cam.status_message, self.hdf.write_message])

    #: seconds the IOC has to take a capture's settings (``prepare``) and to open its
    #: file and start the camera (``kickoff``): a real sCMOS arms in a few seconds; one
    #: that takes longer hangs (its SDK, or a file open on a dead network share)
    setup_timeout: float = 60.0

    # -- flying -----------------------------------------------------------------------
    def kickoff(self) -> Status:
        """Open the file, then arm the camera (it waits for triggers in External mode)."""
        if self._acq is None:
            raise RuntimeError(f"{self.name}: prepare() must come before kickoff()")
        # asked again for the same acquisition (a RunEngine resuming after a pause
        # replays the scan's start): the capture already open is this one
        last = self._kickoff_status
        if last is not None and (
                not last.done or (last.success and int(self.hdf.capture_rbv.get()))):
            return last
        status = self._kickoff_status = Status(obj=self)
        # Capture is a busy record: its put completes when the capture ends, and at
        # once when the IOC refuses it; the file is open when Capture_RBV says so in
        # an update that comes after this put (not the value held from before: the
        # last capture's 0 may still be on its way, monitors being batched)
        opened = SubscriptionStatus(self.hdf.capture_rbv,
                                    lambda *, value, **_: int(value) == 1, run=False)

        def refused(st) -> None:
            # the put completed before the file was open: the IOC refused it (pyepics
            # reports a refused put as completed; the camera is not armed before the
            # file is open, so no capture can have begun and ended in between)
            if opened.done:
                return
            try:
                err: Exception = RuntimeError(
                    f"{self.name}: {self.hdf.write_message.get(use_monitor=False)}")
            except Exception as exc:  # noqa: BLE001 - the IOC went away: that is the end
                err = exc
            settle(opened, err)  # and stop watching Capture_RBV
            settle(status, err)

        def arm_camera(st) -> None:
            if not st.success or status.done:
                return
            # CameraMode completes once the camera runs (Acquire, a busy record,
            # completes only when the acquisition ends)
            self.cam.camera_mode.set("Acquire").add_callback(
                lambda s: settle(status, None if s.success else RuntimeError(
                    f"{self.name}: {self.cam.status_message.get()}")))

        def forget(st) -> None:  # failed otherwise (a deadline): stop watching
            if not opened.done:
                settle(opened, st.exception())

        opened.add_callback(arm_camera)
        status.add_callback(forget)
        self.hdf.capture.set(1).add_callback(refused)
        file_name = self._acq.file_name
        return within(status, self.setup_timeout, lambda: self._late(
            "did not start the camera" if opened.done and opened.success
            else f"did not open the capture's file {file_name}"))

    def complete(self) -> ProgressStatus:
        """Done when every frame is accounted for (written, or lost and reported) and the
        file is closed; shows progress. Lost frames end the run 'fail' (see plans).
        One status per acquisition, however often it is asked for."""
        acq = self._acq
        if acq is None:
            raise RuntimeError(f"{self.name}: nothing to complete")
        # asked again for the same acquisition (plans ask at every checkpoint: a pause
        # loses the RunEngine's wait groups, not the device's): the same status
        if self._completing is not None:
            return self._completing
        unit = "volumes" if acq.frames_per_volume else "frames"
        per = acq.frames_per_volume or 1

        def accounted() -> int:
            """Frames written or reported lost; the last known count when the IOC
            cannot be read (then `_write_error` reports the lost contact). Nothing of a
            newer acquisition's state is read or set (FullFileName_RBV still names this
            one's file until the next capture opens)."""
            if self._acq is not acq:
                return 0
            try:
                if self._facts is None:  # named in fault messages, needed to collect
                    self._facts = self._capture_facts()
                    self._first_file = self._facts[0]
                written = int(self.hdf.num_captured.get(use_monitor=False))
                dropped = int(self.hdf.dropped_frames.get(use_monitor=False))
                flushed = int(self.hdf.num_flushed.get(use_monitor=False))
            except Exception as exc:  # noqa: BLE001 - disconnected, timed out
                self._note_failed_read(exc)
                return self._written_seen or 0
            self._note_written(written)
            self._flushed_seen = flushed
            return written + dropped

        def done() -> bool:
            if self._acq is not acq:
                return False
            try:
                closed = int(self.hdf.capture.get(use_monitor=False)) == 0
            except Exception as exc:  # noqa: BLE001 - as above
                self._note_failed_read(exc)
                return False
            return closed and accounted() >= acq.n_frames

        self._contact_error = ""
        status = ProgressStatus(
            self, target=acq.n_frames // per, unit=unit, stall_timeout=acq.stall_timeout,
            done_check=done, error_check=self._write_error, stall_cause=self._stall_cause,
        )

        def on_change(value=None, **kwargs):
            frames = accounted()  # any frame is progress, not only a whole volume
            status.update(frames // per, activity=frames)

        # Monitor caches may still hold the previous capture's counts: progress comes
        # from fresh reads, triggered by the (always newer) monitor events.
        cids = [(sig, sig.subscribe(on_change, run=False))
                for sig in (self.hdf.num_captured, self.hdf.dropped_frames, self.hdf.capture)]

        def cleanup(_):
            for sig, cid in cids:
                sig.unsubscribe(cid)

        status.add_callback(cleanup)
        frames = accounted()
        status.update(frames // per, activity=frames)
        self._completing = status
        return status

    _completing: ProgressStatus | None = None  # the capture being completed
    _facts: tuple[Path, int, tuple[int, int]] | None = None  # see `_capture_facts`
    _flushed_seen = 0  # frames the IOC last said were on disk (`HDF1:NumFlushed_RBV`)

    def _capture_facts(self) -> tuple[Path, int, tuple[int, int]]:
        """(first file, frames per file, frame shape) of the open capture, read once
        while the IOC answers: collecting what is on disk after the IOC is lost needs
        them."""
        return (Path(self.hdf.full_file_name.get(use_monitor=False)),
                int(self.hdf.file_frames.get(use_monitor=False)), self.frame_shape)

    def _stall_cause(self) -> str:
        """Why no frame came (the stall watchdog's thread): the IOC not answering, or
        how far the camera and the writer got, in frames."""
        acq = self._acq
        try:
            written = int(self.hdf.num_captured.get(use_monitor=False, timeout=2.0))
            taken = int(self.cam.array_counter.get(use_monitor=False, timeout=2.0))
            missed = int(self.cam.triggers_missed.get(use_monitor=False, timeout=2.0))
            dropped = int(self.hdf.dropped_frames.get(use_monitor=False, timeout=2.0))
        except Exception as exc:  # noqa: BLE001 - that is the cause
            self._contact_error = f"{type(exc).__name__}: {exc}"
            return self._write_error()
        n = acq.n_frames if acq else 0
        why = (f"the camera took {taken} frames, {written} of {n} are written"
               + (f", {missed} triggers came while it was still busy"
                  if missed else ""))
        if taken > written + dropped:
            why += (f": {taken - written - dropped} frames taken are not written yet (the "
                    "writer is behind)")
        elif acq is not None and acq.trigger_mode != "Internal" and taken < n and not missed:
            why += ": no trigger reached it in that time"
        return why

    _kickoff_status: Status | None = None  # this acquisition's kickoff

    def pause(self) -> None:
        """RunEngine pause. External trigger: frames stop because their source (the
        scan board, the gating) pauses. Internal trigger: the camera stops after the
        frame in progress. Either way the capture stays open (whole volumes are on
        disk already: the writer flushes at each volume's end and every 0.5 s), and a
        stall is not an error until ``resume``.

        Also before the first ``complete``: a Ctrl-C while a scan starts takes effect
        at the plan's first checkpoint, before it asks for completion, and two (an
        immediate pause) may land while the camera starts; either way the camera took
        its frames on through the pause. Started, it stops; still starting, it stops
        once started (unless resumed first)."""
        status, acq, started = self._completing, self._acq, self._kickoff_status
        if acq is None or (status is not None and status.done):
            return
        if status is not None:
            status.hold()
        elif started is None or (started.done and not started.success):
            return  # nothing started
        internal = acq.trigger_mode == "Internal"
        if status is None and not started.done:
            if internal:
                self._pausing = True
                started.add_callback(self._stop_once_started)
            return
        if internal:
            with self._pause_lock:
                self._stop_for_pause()

    def _stop_for_pause(self) -> None:
        """Stop the internally triggered camera after the frame in progress (the
        capture stays open); ``resume`` takes the frames left. Under ``_pause_lock``."""
        self.cam.acquire.set("Done").wait(30)
        self._stopped_for_pause = True

    def _stop_once_started(self, started: Status) -> None:
        """The kickoff a pause came during has ended: stop the camera it started,
        unless the RunEngine resumed meanwhile (or the start failed). On a thread of
        its own: this callback runs on ophyd's put-completion thread, which the stop's
        own put completion needs (waited for there, it timed out)."""
        def stop() -> None:
            with self._pause_lock:
                if started.success and self._pausing:
                    self._stop_for_pause()
                self._pausing = False

        threading.Thread(target=stop, name=f"{self.name}-pause", daemon=True).start()

    def resume(self) -> None:
        """RunEngine resume: an internally triggered capture takes the frames left."""
        status, acq = self._completing, self._acq
        with self._pause_lock:
            self._pausing = False
            if acq is None or (status is not None and status.done):
                return
            if self._stopped_for_pause:
                self._stopped_for_pause = False
                left = acq.n_frames - self._settled_count()
                if left > 0:
                    self.cam.num_images.set(left).wait(10)
                    self.cam.camera_mode.set("Acquire").wait(30)
        if status is not None:
            status.release()

    _stopped_for_pause = False

    def _settled_count(self, timeout: float = 10.0) -> int:
        """Frames written or lost once the writer has drained what the stopped camera
        delivered (two equal reads 0.2 s apart)."""
        def count() -> int:
            return (int(self.hdf.num_captured.get(use_monitor=False))
                    + int(self.hdf.dropped_frames.get(use_monitor=False)))

        deadline = time.monotonic() + timeout
        last = count()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = count()
            if now == last:
                break
            last = now
        return last

    def subscribe_preview(self, callback) -> int:
        """Call ``callback(image)`` with each preview (a 128x128 int array, the newest
        frame only: previews are dropped when the viewer is behind, saving never is)."""
        import numpy as np

        def relay(value, **kwargs):
            callback(np.asarray(value).reshape(128, 128))

        return self.cam.preview.subscribe(relay, run=False)

    def _meta_keys(self) -> dict[str, tuple[str, str, str]]:
        extra = self._acq.extra_fields if self._acq else ()
        return {**META_KEYS, **{name: (f"/entry/meta/{name}", "<f8", EXTRA_UNITS.get(name, ""))
                                for name in extra}}

    def _first_file_name(self) -> str:
        """The capture's (first) file, as known without asking the IOC."""
        return str(self._first_file) if self._first_file != Path() else "the capture's file"

    def _write_error(self) -> str:
        """The writer's own words when the capture failed (areaDetector's WriteStatus
        says whether; WriteMessage says why, with what was stored and lost), or that
        the IOC is gone (its channels disconnected: stopped, killed, network down) or
        does not answer (for ``IOC_PATIENCE_S``, or when a stall is looked into)."""
        if self._contact_error or not self._writer_connected():
            n = self._acq.n_frames if self._acq else 0
            if self._writer_connected():  # frozen: it may answer, and write, again
                cause = ioc_silence("camera", self._contact_error)
                later = ("; if the IOC answers again it writes on and closes the file "
                         "itself, the frames it writes then in the file, not in this run")
            else:
                cause = (f"lost contact with the camera IOC ({self.hdf.capture.pvname} "
                         "disconnected: IOC stopped or network down)")
                later = (", by other HDF5 readers once the restarted IOC releases the "
                         "file or after `h5clear -s` on it")
            seen = self._written_seen
            age = time.monotonic() - self._written_seen_at
            wrote = (f"it had written {seen} of {n} frames by its last count, {age:.1f} s "
                     "earlier," if seen is not None else
                     f"its count of frames written (of {n}) had not been read yet;")
            return (f"{cause}; {wrote} the file is {self._first_file_name()} (all but "
                    f"its last half second are readable: through the catalog now{later})")
        if self.hdf.write_status.get() != "Write error":
            return ""
        return self.hdf.write_message.get() or "the file writer reported an error"

    def _note_written(self, written: int) -> None:
        """Keep the capture's written-frame count as last read (progress and collect
        both read it): a lost IOC's error says how far it got. Before, only progress
        updates kept it, and a scan whose IOC died before the first of them said 0 where
        the file held 150 frames."""
        self._written_seen = written
        self._written_seen_at = time.monotonic()

    _written_seen_at = 0.0  # monotonic time of that count

    def _writer_connected(self) -> bool:
        return bool(self.hdf.capture.connected and self.hdf.write_status.connected)

    def _note_failed_read(self, exc: Exception) -> bool:
        """A read failed. With the writer's channels disconnected the IOC is gone:
        the cause is kept for the error, and False. Connected, the IOC is busy: said,
        and True; the caller reads again (progress at the next poll, where an IOC that
        never answers again ends in CA's disconnect or the capture's stall timeout)."""
        if not self._writer_connected():
            self._contact_error = f"{type(exc).__name__}: {exc}"
            return False
        log.info("%s: the camera IOC is slow to answer (%s); reading again", self.name, exc)
        return True

    def stop(self, *, success: bool = False) -> None:
        """Abort camera and writer (RunEngine calls this on abort/pause)."""
        if not success:
            self.cam.camera_mode.put("Abort", wait=False)

    # -- stream assets ------------------------------------------------------------------
    def get_index(self) -> int:
        """Units (volumes or frames) accounted for: written, or lost and left as holes
        at their place in the file (so later frames keep their plane).

        A volume (or gated pass) that a stop or abort cut short counts too once the
        capture has closed: the file holds it, the planes never taken as holes
        (``frame_id`` -1), and nothing more will be written to it. Counting whole
        volumes only, an abort mid-pass left the frames of that pass out of the run (7
        frames on disk, none in the catalog). Not after a write error (the file may not
        hold that volume whole) nor when frames were lost (the lost ones after the last
        written are counted but hold no place in the file)."""
        per = (self._acq.frames_per_volume if self._acq else 0) or 1
        kicked = self._kickoff_status
        started = kicked is not None and kicked.done and kicked.success
        if not started:  # nothing captured yet (the counts are the last capture's)
            return self._index

        def read() -> tuple[bool, int, int]:
            # closed first: once it is, the counts read after it are final
            closed = per > 1 and self.hdf.capture_rbv.get(use_monitor=False) in (
                "Done", 0) and self.hdf.write_status.get(use_monitor=False) != "Write error"
            dropped = int(self.hdf.dropped_frames.get(use_monitor=False))
            flushed = int(self.hdf.num_flushed.get(use_monitor=False))
            written = int(self.hdf.num_captured.get(use_monitor=False))
            self._note_written(written)
            return closed and not dropped, written + dropped, flushed

        try:
            closed, accounted, flushed = self._ask(read)
        except RuntimeError:
            if not self._contact_error or self._facts is None:
                raise
            # the IOC is gone: what it last said was on disk is (whole volumes are
            # flushed before they are counted), so the run keeps those frames
            return self._flushed_seen // per
        if closed:
            return -(-accounted // per)
        # only what is on disk (NumFlushed_RBV, holes included): frames the writer has
        # taken but not flushed are not in the file yet, and if the IOC dies they never
        # will be (a planar run advertised 221 rows of a file that kept 200, and every
        # read of it failed)
        self._flushed_seen = max(self._flushed_seen, flushed)
        return min(accounted, flushed) // per

    def _ask(self, read: Callable[[], T]) -> T:
        """``read()`` from the IOC during collection. A read that fails while the
        writer's channels stay connected is a busy IOC: asked again, for up to
        ``IOC_PATIENCE_S``. When the IOC is gone (channels disconnected) or does not
        answer in that time, raise that, with what it had written, not which channel
        happened to time out."""
        started = time.monotonic()
        while True:
            try:
                return read()
            except Exception as exc:  # noqa: BLE001 - disconnected, timed out, destroyed
                # an IOC found not answering (`_stall_cause`, before or while this
                # waits) is asked once more, not waited for: the run fails on that
                # anyway (retrying cost the frozen-IOC error 2 s per read)
                patience = 0.0 if self._contact_error else IOC_PATIENCE_S
                if self._note_failed_read(exc) and time.monotonic() - started < patience:
                    time.sleep(0.1)
                    continue
                self._contact_error = f"{type(exc).__name__}: {exc}"
                raise RuntimeError(f"{self.name}: {self._write_error()}") from exc

    def describe_collect(self) -> dict:
        acq = self._acq
        if acq is None:
            raise RuntimeError(f"{self.name}: prepare() must come before describe_collect()")
        h, w = self.frame_shape
        lead = [acq.frames_per_volume] if acq.frames_per_volume else []
        source = self.hdf.full_file_name.pvname
        keys = {
            f"{self.name}_image": {
                "source": source, "shape": lead + [h, w], "dtype": "array",
                "dtype_numpy": "<u2", "external": "STREAM:",
            }
        }
        for suffix, (_, dt, units) in self._meta_keys().items():
            keys[f"{self.name}_{suffix}"] = {
                "source": source, "shape": list(lead),
                "dtype": "array" if lead else ("number" if dt == "<f8" else "integer"),
                "dtype_numpy": dt, "external": "STREAM:", "units": units,
            }
        return keys

    def collect_asset_docs(self, index: int | None = None) -> Iterator[tuple[str, dict]]:
        """StreamResource per file and data key, StreamDatum per batch of complete units.

        A capture that rolled over into several files (``HDF1:MaxFileFrames``) gets one
        StreamResource per file; one call covers one file at most (bluesky numbers the
        rows of one collect together), so plans call :func:`plans.common.collect_all`
        to drain what is left after the camera completes.
        """
        acq = self._acq
        if acq is None:
            return
        available = self.get_index()
        stop = available if index is None else min(index, available)
        if stop <= self._index:
            return
        per = acq.frames_per_volume or 1
        if not self._bundles:
            if self._facts is None:
                self._facts = self._ask(self._capture_facts)
            self._first_file, file_frames, self._shape = self._facts
            self._units_per_file = (file_frames // per if file_frames >= per
                                    else max(1, acq.n_frames // per))
        part, offset = divmod(self._index, self._units_per_file)
        stop = min(stop, (part + 1) * self._units_per_file)
        if part not in self._bundles:
            self._bundles[part] = self._compose_resources(part_path(self._first_file, part))
            for bundle in self._bundles[part].values():
                yield "stream_resource", bundle.stream_resource_doc
        for bundle in self._bundles[part].values():
            yield "stream_datum", bundle.compose_stream_datum(
                indices={"start": offset, "stop": offset + stop - self._index})
        self._index = stop

    @property
    def collected_index(self) -> int:
        """Units (volumes or frames) whose StreamDatum documents have been made."""
        return self._index

    def assets_pending(self) -> bool:
        """True while written frames still wait for their StreamDatum documents."""
        return self._acq is not None and self.get_index() > self._index

    def _compose_resources(self, path: Path) -> dict:
        acq = self._acq
        uri = f"file://localhost{path.as_posix()}"
        h, w = self._shape  # read once per capture: later parts need no IOC
        per = acq.frames_per_volume
        unit: list[int] = [1, per] if per else [1]
        datasets = {f"{self.name}_image": (IMAGE_DATASET, [1, 1, h, w] if per else [1, h, w])}
        for suffix, (ds, _, _) in self._meta_keys().items():
            datasets[f"{self.name}_{suffix}"] = (ds, unit)
        return {
            key: compose_stream_resource(
                mimetype="application/x-hdf5", uri=uri, data_key=key,
                parameters={"dataset": ds, "chunk_shape": chunks})
            for key, (ds, chunks) in datasets.items()
        }
