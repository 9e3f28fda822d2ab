"""``HDF1:``: the frame writer as areaDetector's NDFileHDF5 plugin.

Clients name the file as on any areaDetector (``FilePath``, ``FileName``,
``FileNumber``, ``FileTemplate``, ``AutoIncrement``; ``FullFileName_RBV`` is the
result), arm it with ``Capture`` and read ``NumCaptured_RBV``, ``WriteStatus`` and
``WriteMessage``. ``Capture_RBV`` turns 1 when the file is open and back to 0 when it is
closed, so ophyd's ``HDF5Plugin`` (``FileStoreHDF5IterativeWrite``) stages and unstages
as on a real detector. ``NumCapture`` 0 captures until ``Capture`` is set to 0.
``Stream`` and ``Capture`` modes both write each frame as it comes (the file is the
same; frames reach the disk sooner). ``Single`` with ``AutoSave`` Yes writes every frame
to its own file as it arrives (``FileNumber`` counting on with ``AutoIncrement``), and
``WriteFile`` writes the last frame; a frame that finds the single-file queue full is
counted in ``DroppedArrays``.

The file layout is this project's (``/entry/data/data`` as areaDetector, one chunk per
frame with a checksum, per-frame metadata under ``/entry/meta``; see
:mod:`beamline_ls.pipeline.hdf5_writer`), so the HDF5 parameters that choose other
layouts (compression, chunking, extra dimensions, NDAttributes) hold the value that
describes it and refuse others with the reason.

The project's own additions keep their names: ``FramesPerVolume`` (4-D volumetric
layout), ``ExtraFields``, ``MaxFileFrames`` (roll-over), the frame buffer
(``BufferFrames``), lost-frame accounting and the mirror (``Mirror*``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, SubGroup, pvproperty

from beamline_ls.frame import Frame
from beamline_ls.iocs.ad_params import fixed, readback, setting, write_if_changed
from beamline_ls.iocs.ad_plugin import NO_ATTRIBUTES, NO_YES, PluginGroup
from beamline_ls.iocs.alarms import clear_write_alarm
from beamline_ls.iocs.blocking import DeviceWorker
from beamline_ls.iocs.mirror import MirrorGroup
from beamline_ls.iocs.text import text_pv
from beamline_ls.pipeline import concurrence
from beamline_ls.pipeline.diskspace import capture_problem, nearest_existing
from beamline_ls.pipeline.recorder import Recorder
from beamline_ls.pipeline.recovery import release_abandoned_captures
from beamline_ls.pipeline.rolling import frames_per_file
from beamline_ls.pipeline.single_files import SingleFileWriter

log = logging.getLogger(__name__)

LAYOUT = ("frames are stored uncompressed, one chunk per frame with a fletcher32 "
          "checksum (beamline_ls.pipeline.hdf5_writer)")
WRITE_MODES = ["Single", "Capture", "Stream"]
COMPRESSIONS = ["None", "N-bit", "szip", "zlib", "Blosc", "BSLZ4", "LZ4", "JPEG"]
BLOSC_COMPRESSORS = ["BloscLZ", "LZ4", "LZ4HC", "SNAPPY", "ZLIB", "ZSTD"]
BLOSC_SHUFFLES = ["None", "Byte", "Bit"]


def format_file_name(template: str, directory: str, name: str, number: int) -> str:
    """areaDetector's ``FileTemplate`` expansion (C ``printf`` with path, name and
    number): conversions beyond the template's own are not passed."""
    conversions = template.replace("%%", "").count("%")
    if conversions > 3:
        raise ValueError(f"FileTemplate {template!r} has more than 3 conversions")
    try:
        return template % (directory, name, number)[:conversions]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"FileTemplate {template!r} cannot take (path, name, number): "
                         f"{exc}") from exc


EXTRA_DIMS = "NXY3456789"  # NDFileHDF5's extra dimensions, as its PVs name them
NO_POSITIONS = "no position plugin feeds this writer (PositionMode Off)"


def _extra_dimension_pvs() -> type:
    """NDFileHDF5's per-extra-dimension records (ExtraDimSize*, ExtraDimName*_RBV,
    ExtraDimChunk*, PosIndexDim*, PosNameDim*), each held at what it is here: this
    writer stores volumes through HDF1:FramesPerVolume, not extra dimensions. A mixin
    built in a loop: fifty PVs that differ only by the dimension."""
    attrs: dict[str, Any] = {}
    for d in EXTRA_DIMS:
        k = d.lower()
        attrs[f"extra_dim_size_{k}"], attrs[f"extra_dim_size_{k}_rbv"] = fixed(
            f"ExtraDimSize{d}", 1, "see HDF1:FramesPerVolume")
        attrs[f"extra_dim_name_{k}"] = readback(f"ExtraDimName{d}_RBV",
                                                k if d in "NXY" else "")
        if d != "N":
            attrs[f"extra_dim_chunk_{k}"], attrs[f"extra_dim_chunk_{k}_rbv"] = fixed(
                f"ExtraDimChunk{d}", 1, LAYOUT)
        for kind in ("Index", "Name"):
            attrs[f"pos_{kind.lower()}_dim_{k}"], attrs[f"pos_{kind.lower()}_dim_{k}_rbv"] = \
                fixed(f"Pos{kind}Dim{d}", "", NO_POSITIONS)
    return type(PluginGroup)("ExtraDimensionPVs", (PVGroup,), attrs)  # PVGroup's metaclass


ExtraDimensionPVs = _extra_dimension_pvs()


def creation_refused(directory: Path, depth: int) -> str:
    """Why CreateDirectory ``depth`` forbids creating the missing part of ``directory``,
    or "". areaDetector's rule (``asynNDArrayDriver::createFilePath``), counting the
    directories below the root from 0: only levels at or past ``depth`` are created,
    and ``-N`` means ``levels - N`` (at least 1), so 0 creates nothing, ``-N`` the last
    N levels and ``N > 0`` everything from the N-th level on."""
    existing = nearest_existing(directory)
    missing = len(directory.parts) - len(existing.parts)
    if missing <= 0:
        return ""
    if depth == 0:
        return f"{directory} does not exist (CreateDirectory is 0)"
    levels = len(directory.parts) - 1  # below the root
    first = max(levels + depth, 1) if depth < 0 else depth
    if levels - missing < first:
        return (f"CreateDirectory {depth} creates only levels {first + 1} to {levels} of "
                f"{directory} (down to {existing} exists)")
    return ""


class HDF5FileGroup(PluginGroup, ExtraDimensionPVs):
    """NDFileHDF5 on the project's recorder."""

    plugin_type = "NDFileHDF5"
    port = "FileHDF1"

    # -- NDFile ---------------------------------------------------------------------
    file_path, file_path_rbv = setting(
        "FilePath", "", text=True,
        doc="directory inside the IOC's data root (relative paths are taken from it)")
    file_path_exists = readback("FilePathExists_RBV", "No", enum_strings=NO_YES,
                                record="bi",
                                doc="Yes: FilePath can take a capture (writable, room)")
    file_name, file_name_rbv = setting("FileName", "", text=True)
    file_number, file_number_rbv = setting("FileNumber", 0, lower_ctrl_limit=0,
                                           upper_ctrl_limit=2**31 - 1)
    file_number_sync = readback("FileNumber_Sync", 0)
    file_number_write = readback("FileNumber_write", 0)
    file_template, file_template_rbv = setting(
        "FileTemplate", "%s%s.h5", text=True,
        doc="printf template of (FilePath, FileName, FileNumber)")
    auto_increment, auto_increment_rbv = setting(
        "AutoIncrement", "No", enum_strings=NO_YES,
        doc="Yes: FileNumber goes up by one after each file is opened")
    auto_save, auto_save_rbv = setting(
        "AutoSave", "Yes", enum_strings=NO_YES,
        doc="Single mode: Yes writes every frame to its own file as it arrives")
    full_file_name = readback("FullFileName_RBV", "", text=True)
    file_format, file_format_rbv = fixed("FileFormat", "HDF5", "this plugin writes HDF5",
                                         enum_strings=["HDF5"])
    file_write_mode, file_write_mode_rbv = setting(
        "FileWriteMode", "Stream", enum_strings=WRITE_MODES)
    capture = pvproperty(name="Capture", value="Done", dtype=ChannelType.ENUM,
                         enum_strings=["Done", "Capture"],
                         doc="Capture opens the file; Done finishes and closes it")
    capture_rbv = readback("Capture_RBV", "Done", enum_strings=["Done", "Capturing"],
                           doc="Capture while a file is open")
    num_capture, num_capture_rbv = setting(
        "NumCapture", 1, lower_ctrl_limit=0, upper_ctrl_limit=100_000_000,
        doc="frames per capture; 0: until Capture is set to Done")
    num_captured = readback("NumCaptured_RBV", 0)
    num_flushed = readback(
        "NumFlushed_RBV", 0,
        doc="frames of the capture on disk (flushed; whole volumes when volumetric, holes "
            "of lost frames included): what a reader can count on if the IOC dies")
    write_file, write_file_rbv = setting(
        "WriteFile", "Done", enum_strings=["Done", "Write"],
        rbv_enum_strings=["Done", "Writing"],
        doc="Single mode: write the last frame to the next file")
    read_file, read_file_rbv = fixed(
        "ReadFile", "Done", "reading files back into the IOC is not supported",
        enum_strings=["Done", "Read"], rbv_enum_strings=["Done", "Reading"])
    delete_driver_file, delete_driver_file_rbv = fixed(
        "DeleteDriverFile", "No", "the camera writes no files of its own",
        enum_strings=NO_YES)
    lazy_open, lazy_open_rbv = fixed(
        "LazyOpen", "No", "the file opens at Capture, so a bad path fails before frames",
        enum_strings=NO_YES)
    create_directory, create_directory_rbv = setting(
        "CreateDirectory", -20, doc="directories of FilePath the IOC may create (at the "
                                    "FilePath put): 0 none, -N the last N, N all below "
                                    "the first N (areaDetector's rule)")
    temp_suffix, temp_suffix_rbv = fixed(
        "TempSuffix", "", "files are written under their final name (readers follow "
        "them live over SWMR)", text=True)
    free_capture = pvproperty(name="FreeCapture", value="Done", enum_strings=["Done", "Free"],
                              dtype=ChannelType.ENUM, record="bo",
                              doc="put Free (1): release the frame buffer's memory")
    write_status = readback("WriteStatus", "Write OK", enum_strings=["Write OK", "Write error"],
                            doc="Write error: the last capture failed (see WriteMessage)")
    write_message = readback("WriteMessage", "", text=True)
    # -- NDFileHDF5 ---------------------------------------------------------------------
    compression, compression_rbv = fixed("Compression", "None", LAYOUT,
                                         enum_strings=COMPRESSIONS)
    zlevel, zlevel_rbv = fixed("ZLevel", 0, LAYOUT)
    szip_num_pixels, szip_num_pixels_rbv = fixed("SZipNumPixels", 16, LAYOUT)
    num_data_bits, num_data_bits_rbv = fixed("NumDataBits", 0, LAYOUT)
    data_bits_offset, data_bits_offset_rbv = fixed("DataBitsOffset", 0, LAYOUT)
    blosc_compressor, blosc_compressor_rbv = fixed("BloscCompressor", "BloscLZ", LAYOUT,
                                                   enum_strings=BLOSC_COMPRESSORS)
    blosc_level, blosc_level_rbv = fixed("BloscLevel", 0, LAYOUT)
    blosc_shuffle, blosc_shuffle_rbv = fixed("BloscShuffle", "None", LAYOUT,
                                             enum_strings=BLOSC_SHUFFLES)
    jpeg_quality, jpeg_quality_rbv = fixed("JPEGQuality", 90, LAYOUT)
    num_row_chunks, num_row_chunks_rbv = fixed("NumRowChunks", 0, LAYOUT + "; 0: all rows")
    num_col_chunks, num_col_chunks_rbv = fixed("NumColChunks", 0,
                                               LAYOUT + "; 0: all columns")
    num_frames_chunks, num_frames_chunks_rbv = fixed("NumFramesChunks", 1, LAYOUT)
    chunk_size2, chunk_size2_rbv = fixed("ChunkSize2", 1, LAYOUT)
    chunk_size_auto, chunk_size_auto_rbv = fixed("ChunkSizeAuto", "No", LAYOUT,
                                                 enum_strings=NO_YES)
    boundary_align, boundary_align_rbv = fixed("BoundaryAlign", 0, LAYOUT)
    boundary_threshold, boundary_threshold_rbv = fixed("BoundaryThreshold", 65536, LAYOUT)
    fill_value, fill_value_rbv = fixed("FillValue", 0.0, "lost frames read as 0")
    num_frames_flush, num_frames_flush_rbv = fixed(
        "NumFramesFlush", 0, "the writer flushes every 0.5 s and whenever frames stop")
    flush_now = fixed("FlushNow", "Done", "the writer flushes every 0.5 s and whenever "
                      "frames stop", enum_strings=["Done", "Flush"], rbv=False)
    num_extra_dims, num_extra_dims_rbv = fixed(
        "NumExtraDims", 0, "volumes use HDF1:FramesPerVolume (a 4-D dataset)")
    store_attr, store_attr_rbv = fixed("StoreAttr", "No", NO_ATTRIBUTES,
                                       enum_strings=NO_YES)
    store_perform, store_perform_rbv = fixed(
        "StorePerform", "No", "per-frame timing is in HDF1:ConcurrenceLog",
        enum_strings=NO_YES)
    swmr_mode, swmr_mode_rbv = fixed("SWMRMode", "On", "files are always written SWMR "
                                     "(readable while written)", enum_strings=["Off", "On"])
    swmr_supported = readback("SWMRSupported_RBV", "Supported",
                              enum_strings=["Not Supported", "Supported"])
    swmr_active = readback("SWMRActive_RBV", "Off", enum_strings=["Off", "Active"])
    swmr_cb_counter = readback("SWMRCbCounter_RBV", 0,
                               doc="flushes of this capture's files so far (each one "
                                   "shows SWMR readers the frames written before it)")
    nd_attribute_chunk, nd_attribute_chunk_rbv = fixed("NDAttributeChunk", 0,
                                                       NO_ATTRIBUTES)
    dim_att_datasets, dim_att_datasets_rbv = fixed("DimAttDatasets", "No", NO_ATTRIBUTES,
                                                   enum_strings=NO_YES)
    position_mode, position_mode_rbv = fixed(
        "PositionMode", "Off", "frames are stored in the order they arrive (volumes by "
        "HDF1:FramesPerVolume); no position plugin feeds this writer",
        enum_strings=["Off", "On"])
    xml_file_name, xml_file_name_rbv = fixed("XMLFileName", "",
                                             "the file layout is fixed (see the module)",
                                             text=True)
    xml_valid = readback("XMLValid_RBV", "No", enum_strings=NO_YES)
    xml_error = readback("XMLErrorMsg_RBV", "no layout file: the layout is fixed",
                         text=True)
    io_speed = readback("IOSpeed", 0.0, units="MB/s", precision=1,
                        doc="write rate of the current capture")
    run_time = readback("RunTime", 0.0, units="s", precision=3,
                        doc="seconds since the capture opened")
    # -- this project's additions -----------------------------------------------------
    frames_per_volume = pvproperty(name="FramesPerVolume", value=0, lower_ctrl_limit=0,
                                   upper_ctrl_limit=1000, doc="0: (frames, y, x) layout")
    extra_fields = text_pv("ExtraFields",
                           doc="comma-separated extra per-frame metadata (gating)")
    dropped_frames = readback("DroppedFrames_RBV", 0,
                              doc="frames not stored: the writer fell behind, or the "
                                  "camera never delivered them")
    lost_frames = readback("LostFrames_RBV", 0,
                           doc="frames of the last capture not in the file")
    data_root_pv = readback("DataRoot_RBV", "", text=True)
    buffer_frames = pvproperty(name="BufferFrames", value=0, lower_ctrl_limit=0,
                               upper_ctrl_limit=100_000, doc="ring capacity; 0: from RAM")
    buffer_used = readback("BufferUsed_RBV", 0)
    first_dropped = readback("FirstDroppedId_RBV", -1)
    sim_write_delay = pvproperty(name="SimWriteDelay", value=0.0, units="s", precision=4,
                                 lower_ctrl_limit=0.0, upper_ctrl_limit=1.0,
                                 doc="simulated slow disk: seconds added to every write")
    max_file_frames = pvproperty(
        name="MaxFileFrames", value=0, lower_ctrl_limit=0, upper_ctrl_limit=100_000_000,
        doc="most frames per file (whole volumes); 0: a quarter of this machine's RAM, "
            "or one file when NumCapture is 0")
    file_frames = readback("FileFrames_RBV", 0, doc="frames per file of the current capture")
    file_count = readback("FileCount_RBV", 0, doc="files of the current capture so far")
    concurrence_log = pvproperty(
        name="ConcurrenceLog", value="Off", dtype=ChannelType.ENUM, enum_strings=["Off", "On"],
        doc="log every pipeline event (ns) while capturing; saved when capture ends")
    concurrence_file = readback("ConcurrenceFile_RBV", "", text=True)
    mirror = SubGroup(MirrorGroup, prefix="",
                      doc="copies of closed files to a slow destination (Mirror*)")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorder = Recorder()
        self.data_root = Path(".").resolve()
        self._file_worker = DeviceWorker("camera-files")  # file creation, logs
        self._path_problem_said: str | None = None  # WriteMessage of the last FilePath
        self._open = False  # a capture was opened and has not been reported closed
        self._no_capture = asyncio.Event()  # set while no capture is open
        self._no_capture.set()
        self._aborted = False
        self._ioc_stopping = False  # the IOC is stopping: the capture is closed for it
        self._opened_at = 0.0
        self._unit_frames = 1  # frames per unit of the recorder's flushed count
        self._number_lock = threading.Lock()
        self._next_number = 0  # Single mode: the number the next file takes
        self._single = SingleFileWriter(self._single_path)
        self._single_base = 0  # files written before Single mode was chosen
        self._single_failed = 0

    def configure(self, data_root: Path, mirror_root: str | Path | None,
                  mirror_roots: Sequence[str | Path]) -> None:
        self.data_root = Path(data_root).resolve()
        self.mirror.configure(self.data_root, mirror_root, mirror_roots)

    # -- frames (camera thread) -----------------------------------------------------------
    def take(self, frame: Frame) -> bool:
        if self.file_write_mode.value == "Single":
            if self.auto_save.value != "Yes":
                return True  # areaDetector writes nothing then either
            return self._single.offer(frame, self._take_number())
        if not self.recorder.capturing:
            return True  # not capturing: areaDetector ignores the frame too
        concurrence.record("camera frame", frame_id=frame.frame_id)
        return self.recorder.submit(frame)

    def _take_number(self) -> int:
        with self._number_lock:
            number = self._next_number
            if self.auto_increment.value == "Yes":
                self._next_number += 1
        return number

    def queue_state(self) -> tuple[int, int]:
        if self.file_write_mode.value == "Single":
            return (self._single.capacity, self._single.waiting)
        ring = self.recorder._ring
        if ring is None:
            return (int(self.buffer_frames.value), 0)
        return (ring.capacity, len(ring) if self.recorder.capturing else 0)

    # -- paths ------------------------------------------------------------------------
    def _directory(self, value: str) -> Path:
        directory = Path(value.strip() or ".")
        if not directory.is_absolute():
            directory = self.data_root / directory
        return directory.resolve()

    def resolve_path(self, number: int | None = None) -> Path:
        """FullFileName for the next file (``number``: FileNumber): the template filled
        in, inside the data root, not yet existing."""
        if number is None:
            number = int(self.file_number.value)
        name = self.file_name.value.strip()
        if not name:
            raise ValueError("HDF1:FileName is empty")
        directory = self._directory(self.file_path.value)
        full = format_file_name(self.file_template.value, f"{directory}/", name, number)
        path = Path(full).resolve()
        if self.data_root not in path.parents:
            raise ValueError(f"{path} is outside the IOC's data root {self.data_root}")
        if path.exists():
            raise FileExistsError(f"{path} exists; choose another FileName (never overwritten)")
        if not path.parent.is_dir():
            refused = creation_refused(path.parent, int(self.create_directory.value))
            if refused:
                raise FileNotFoundError(refused)
        return path

    def _single_path(self, number: int) -> Path:
        """Single mode (writer thread): where file ``number`` goes."""
        return self.resolve_path(number)

    def _path_problem(self, value: str, frame_bytes: int) -> str:
        """Why a capture into FilePath ``value`` would fail, or "". A directory that
        does not exist is created now when CreateDirectory allows (as areaDetector
        does at the FilePath put, so FilePathExists_RBV = 1 means it exists)."""
        directory = self._directory(value)
        if directory != self.data_root and self.data_root not in directory.parents:
            return f"{directory} is outside the IOC's data root {self.data_root}"
        refused = creation_refused(directory, int(self.create_directory.value))
        if refused:
            return refused
        problem = capture_problem(directory, frame_bytes)  # checked where it would be made
        if problem or directory.is_dir():
            return problem
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return f"cannot create {directory}: {exc.strerror or exc}"
        return ""

    @file_path.putter
    async def file_path(self, instance, value):
        """Check at once that a capture could write there (as areaDetector's
        FilePathExists_RBV, plus writability and room), so a plan fails before it
        opens a run; the reason goes to WriteMessage."""
        loop = asyncio.get_running_loop()
        h, w = self.parent.frame_shape()
        problem = await loop.run_in_executor(None, self._path_problem, value, h * w * 2)
        if problem:  # the cause first: a client seeing 0 finds it
            await self.write_message.write(problem[:500])
            await self.write_status.write("Write error")  # the message's status with it
            log.error("HDF1:FilePath %r: %s", value, problem)
        elif self.write_message.value == self._path_problem_said:
            # that path's problem is gone with it (a capture's error stays until the
            # next capture, as in areaDetector)
            await self.write_message.write("")
            await self.write_status.write("Write OK")
        self._path_problem_said = problem[:500] if problem else None
        await self.file_path_exists.write("No" if problem else "Yes")
        # areaDetector ends the path it holds with the separator (checkPath), and
        # clients build names as FilePath_RBV + FileName
        return value if not value or value.endswith("/") else value + "/"

    @file_write_mode.putter
    async def file_write_mode(self, instance, value):
        if self.recorder.capturing:
            raise ValueError("FileWriteMode cannot change while capturing")
        if self._open:  # a capture that ended since the last refresh: report it now
            await self._closed()  # (Single mode's refresh would never close it)
        if value == "Single":
            self._single_base = self._single.status.written
            self._single_failed = self._single.status.failed
            await self.num_captured.write(0)
        return value

    @file_number.putter
    async def file_number(self, instance, value):
        with self._number_lock:
            self._next_number = int(value)
        return value

    @write_file.putter
    async def write_file(self, instance, value):
        if value != "Write":
            return "Done"
        mode = self.file_write_mode.value
        if mode == "Capture" and not self.recorder.capturing:
            # areaDetector writes the buffered capture now; here its frames went to the
            # file as they came, so the file the client asks for is already written
            return "Done"
        if mode != "Single":
            raise ValueError(f"WriteFile in {mode} mode: every frame goes to the file as "
                             "it comes, which is complete when Capture_RBV returns to 0 "
                             "(in Single mode WriteFile writes the last frame)")
        last = self._last
        if last is None:
            raise ValueError("WriteFile: no frame has arrived yet")
        if not self._single.offer(last, self._take_number()):
            raise RuntimeError("WriteFile: the single-file queue is full")
        return "Done"

    @free_capture.putter
    async def free_capture(self, instance, value):
        if value == "Free":
            await self.free_buffer()
        return "Done"

    async def free_buffer(self) -> None:
        """Release the frame buffer's memory (refused while capturing)."""
        await self._file_worker.call(self.recorder.release_buffer)

    async def allocate_buffer(self, shape: tuple[int, int]) -> None:
        """Allocate the frame buffer for ``shape`` now (pages fault in behind)."""
        self.recorder.buffer_frames = int(self.buffer_frames.value)
        await self._file_worker.call(self.recorder.prepare, shape)

    # -- capture ------------------------------------------------------------------------
    def _frames_per_file(self, frame_shape: tuple[int, int], planes: int, n: int) -> int:
        """MaxFileFrames rounded down to whole volumes (at least one); when it is 0,
        sized from RAM, or a single file for a capture of open length."""
        per = planes or 1
        wanted = int(self.max_file_frames.value)
        if wanted == 0:
            return 0 if n == 0 else frames_per_file(frame_shape, planes)
        return max(per, wanted // per * per)

    def _open_capture(self, n_frames: int) -> tuple[Path, int]:
        """Check the path and settings and start the recorder (file worker thread);
        returns the file and the frames per file (0: one file)."""
        path = self.resolve_path()
        cam = self.parent.cam
        settings = cam.settings()
        settings.validate(self.parent.driver.sensor_shape)
        attrs = {
            "exposure_s": settings.exposure_s,
            "binning": settings.binning,
            "roi": list(settings.roi),
            "trigger_mode": settings.trigger_mode,
        }
        extra = tuple(f.strip() for f in self.extra_fields.value.split(",") if f.strip())
        bg = cam.background_for(settings)
        self.recorder.buffer_frames = int(self.buffer_frames.value)
        self.recorder.write_delay_s = float(self.sim_write_delay.value)
        planes = int(self.frames_per_volume.value)
        self._unit_frames = max(planes, 1)  # frames per unit of the writer's count
        per_file = self._frames_per_file(settings.frame_shape, planes, n_frames)
        self.recorder.start(path, settings.frame_shape, n_frames, planes, attrs, extra, bg,
                            max_frames_per_file=per_file, on_file_closed=self.mirror.submit)
        return path, per_file

    @capture.putter
    async def capture(self, instance, value):
        """Capture is a busy record, as in ADCore: a put of Capture with completion
        completes when the capture has ended and its file is closed (a refused one
        fails at once, with the reason in WriteMessage), so ``caput -c ... Capture 1``
        returns with the file whole. Clients that need the file open watch
        Capture_RBV ("Capturing")."""
        if value == "Capture":
            if self.recorder.capturing or self._open or not self._no_capture.is_set():
                # a second Capture (also while the first opens its file) waits for the
                # same end
                await self._no_capture.wait()
                return "Done"
            n = int(self.num_capture.value)
            self._no_capture.clear()
            try:
                if self.file_write_mode.value == "Single":
                    raise ValueError("in Single mode each frame is written to its own "
                                     "file as it arrives (AutoSave Yes); Capture is for "
                                     "Stream/Capture")
                await self.parent.cam.ensure_open()  # its sensor decides the frame size
                # paths are resolved and the file and its disk reserve created on the
                # file worker: a slow or hung disk must not freeze every PV
                path, per_file = await self._file_worker.call(self._open_capture, n)
            except (ValueError, RuntimeError, OSError) as exc:
                self._no_capture.set()
                await self.write_message.write(f"capture refused: {exc}"[:500])
                await self.write_status.write("Write error")
                log.error("capture refused: %s", exc)
                raise
            except BaseException:
                self._no_capture.set()
                raise
            await self._opened(path, per_file)
            await clear_write_alarm(instance)  # accepted: a refusal before is over now
            await instance.write("Capture", verify_value=False)  # busy: 1 until it ends
            await self._no_capture.wait()
            return "Done"
        if self.recorder.capturing:  # the loop reports when the file has closed
            self.recorder.request_stop()
        return value

    async def _opened(self, path: Path, per_file: int) -> None:
        self._open = True
        self._opened_at = time.monotonic()
        if self.concurrence_log.value == "On":
            concurrence.enable()
            concurrence.record("capture start")
        await self.full_file_name.write(str(path))
        if self.auto_increment.value == "Yes":
            await self.file_number.write(int(self.file_number.value) + 1)
        await self.file_frames.write(per_file)
        await self.file_count.write(1)
        await self.num_captured.write(0)
        await self.num_flushed.write(0)
        await self.swmr_cb_counter.write(0)
        await self.dropped_frames.write(0)
        await self.lost_frames.write(0)
        await self.first_dropped.write(-1)
        await self.write_status.write("Write OK")
        await self.write_message.write("capturing")
        await self.swmr_active.write("Active")
        await self.parent.summary.publish(self.recorder.summary)  # no rows of the last
        await self.capture_rbv.write("Capturing")

    async def close_for_ioc_stop(self, timeout: float = 10.0) -> None:
        """The IOC is stopping (SIGTERM, Ctrl-C): close an open capture while clients
        are still connected and say so in WriteMessage/WriteStatus, so a client's scan
        ends with that cause and what the file holds, not with "lost contact" and
        advice to clear a file the IOC closed cleanly."""
        if not self._open:
            return
        self._ioc_stopping = True
        # after the frame being written: the camera may go on delivering frames, and
        # the frames still queued would keep the writer from ever finishing
        self.recorder.request_stop(discard=True)
        deadline = time.monotonic() + timeout
        while self._open and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the status loop reports the close (`_closed`)

    def abort(self) -> bool:
        """Stop the capture after the frame being written (the rest count as lost);
        False when nothing was capturing."""
        if not self.recorder.capturing:
            return False
        self._aborted = True
        self.recorder.request_stop(discard=True)  # a stalled disk must not hold it
        return True

    def camera_starting(self) -> None:
        """The camera starts (again) within an open capture (a trigger of a stepped
        scan, a resume): its frames continue the capture's positions."""
        if self.recorder.capturing:
            self.recorder.camera_restarted()

    async def drained(self, poll_s: float = 0.02) -> None:
        """Return when the writer holds no frame it has not written (or is not
        capturing)."""
        while self.recorder.capturing and self.queue_state()[1]:
            await asyncio.sleep(poll_s)

    def camera_failed(self, reason: str) -> None:
        if self.recorder.capturing:
            self.recorder.fail(f"the camera stopped with an error: {reason}")

    # -- status (event loop) -------------------------------------------------------------
    async def refresh(self) -> None:
        if self.file_write_mode.value == "Single":
            await self._refresh_single()
            return
        st = self.recorder.status
        await self._publish_counts()
        if st.files and st.files != self.file_count.value:
            await self.file_count.write(st.files)
        waiting = self.queue_state()[1]
        await write_if_changed(self.buffer_used, waiting)
        if self._open:
            elapsed = time.monotonic() - self._opened_at
            await write_if_changed(self.run_time, round(elapsed, 3))
            if elapsed > 0:
                h, w = self.parent.frame_shape()
                rate = st.frames_written * h * w * 2 / elapsed / 1e6
                await write_if_changed(self.io_speed, round(rate, 1))
        if self._open and not st.capturing:
            await self._closed()

    async def _refresh_single(self) -> None:
        st = self._single.status
        if self._next_number != self.file_number.value:
            await self.file_number.write(self._next_number, verify_value=False)
        await write_if_changed(self.num_captured, st.written - self._single_base)
        await write_if_changed(self.buffer_used, self._single.waiting)
        if st.last_path and st.last_path != self.full_file_name.value:
            await self.full_file_name.write(st.last_path)
        if st.failed != self._single_failed:
            self._single_failed = st.failed
            await self.write_message.write(st.error[:500])
            await self.write_status.write("Write error")

    async def _publish_counts(self) -> None:
        st = self.recorder.status
        await write_if_changed(self.num_captured, st.frames_written)
        await write_if_changed(self.num_flushed, st.complete_units * self._unit_frames)
        await write_if_changed(self.swmr_cb_counter, st.flushes)
        not_stored = st.frames_dropped + st.frames_missing
        if not_stored != self.dropped_frames.value:
            await self.dropped_frames.write(not_stored)
            first = min(st.dropped_ids[:1] + st.missing_ids[:1], default=-1)
            if first >= 0 and self.first_dropped.value < 0:
                await self.first_dropped.write(int(first))

    async def _closed(self) -> None:
        self.recorder.stop()
        st = self.recorder.status
        self._open = False
        # final before Capture_RBV says Done: a client reading them then (the plans'
        # last collect) must not find a frame that landed after the last refresh
        await self._publish_counts()
        msg = st.error or (
            f"{'aborted after' if self._aborted else 'wrote'} {st.frames_written} frames "
            f"({st.frames_dropped} dropped, {st.frames_missing} never delivered by the "
            f"camera, {st.frames_lost} lost)")
        # cut short by the IOC's stop, unless it had every frame it was asked for: a
        # capture "until stopped" (NumCapture 0) always is
        complete = bool(st.frames_expected) and st.frames_written >= st.frames_expected
        stopped = self._ioc_stopping and (st.frames_lost > 0 or not complete)
        if stopped:
            msg = (f"the camera IOC was stopped during the capture: {st.path} was closed "
                   f"with {st.frames_written} of {st.frames_expected or st.frames_offered} "
                   f"frames ({st.frames_lost} not taken), readable by any HDF5 reader"
                   + (f"; {st.error}" if st.error else ""))
        self._aborted = self._ioc_stopping = False
        await self._save_concurrence_log(Path(st.path))
        await self.lost_frames.write(st.frames_lost)
        await self.write_message.write(msg[:500])
        if st.error or stopped:  # after the message: a client seeing it finds its cause
            await self.write_status.write("Write error")
        await self.swmr_active.write("Off")
        await self.parent.summary.publish(self.recorder.summary)  # its last rows first
        await self.capture.write("Done", verify_value=False)
        await self.capture_rbv.write("Done")
        self._no_capture.set()  # completes the Capture put (busy record)

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

    @data_root_pv.startup
    async def data_root_pv(self, instance, async_lib):
        await self.data_root_pv.write(str(self.data_root))
        # captures the last IOC left open (it was killed): plain HDF5 readers refuse
        # their files until the SWMR write marks are cleared (a walk of the data
        # root, on the file worker)
        released = await self._file_worker.call(release_abandoned_captures, self.data_root)
        if released:
            await self.write_message.write(
                f"released {len(released)} file(s) the last IOC left open: "
                + ", ".join(p.name for p in released)[:400])

