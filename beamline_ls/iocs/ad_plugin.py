"""What every areaDetector plugin exposes (ADCore's NDPluginBase), for the camera's
``image1:`` and ``HDF1:`` groups.

A plugin receives every frame the camera passes on (``cam1:ArrayCallbacks`` Enable)
while its ``EnableCallbacks`` is Enable, counts it (``ArrayCounter_RBV``,
``UniqueId_RBV``, ``TimeStamp_RBV``, ``ArrayRate_RBV``), learns its geometry
(``ArraySize0/1/2_RBV``, ``NDimensions_RBV``, ``DataType_RBV``) and either takes it or
drops it (``DroppedArrays_RBV``). Frames arrive on the camera's thread; the counts
reach Channel Access from the event loop (:meth:`PluginGroup.publish`).
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Any

from caproto import AlarmSeverity, AlarmStatus, ChannelType
from caproto.server import PVGroup, pvproperty

from beamline_ls import __version__
from beamline_ls.frame import Frame
from beamline_ls.iocs.ad_params import fixed, readback, setting, write_if_changed
from beamline_ls.iocs.alarms import RecordAlarms

# areaDetector's enumerations, in its order, so clients reading numbers agree
ND_DATA_TYPES = ["Int8", "UInt8", "Int16", "UInt16", "Int32", "UInt32", "Int64", "UInt64",
                 "Float32", "Float64"]
ND_COLOR_MODES = ["Mono", "Bayer", "RGB1", "RGB2", "RGB3", "YUV444", "YUV422", "YUV421"]
BAYER_PATTERNS = ["RGGB", "GBRG", "GRBG", "BGGR"]
NO_YES = ["No", "Yes"]
DISABLE_ENABLE = ["Disable", "Enable"]
CAMERA_PORT = "CAM1"
MAX_DIMS = 10
EPICS_EPOCH = 631152000.0  # 1990-01-01 UTC in Unix seconds
DTYPE_NAMES = {"uint8": "UInt8", "int8": "Int8", "uint16": "UInt16", "int16": "Int16",
               "uint32": "UInt32", "int32": "Int32", "float32": "Float32",
               "float64": "Float64"}
VERSION = f"beamline-ls {__version__}"

ONE_THREAD = "each plugin runs on one thread of its own"
IN_ORDER = ("frames reach each plugin in the camera's order, one thread each: there is "
            "nothing to sort")
NO_ATTRIBUTES = ("NDAttribute files are not supported; per-frame metadata is named in "
                 "HDF1:ExtraFields")


def dims_of(shape: tuple[int, int]) -> list[int]:
    """areaDetector's dimension list: fastest-varying (x) first, padded to 10."""
    h, w = shape
    return [w, h] + [0] * (MAX_DIMS - 2)


class PortGroup(RecordAlarms):
    """What every areaDetector port (the camera driver and each plugin) shows: its
    name, versions, asyn record, and the camera's frame buffer as the NDArray pool."""

    port = "PORT"

    port_name = readback("PortName_RBV", "")
    asyn_io = pvproperty(name="AsynIO", value=0, record="asyn")
    nd_attributes_file = fixed("NDAttributesFile", "", NO_ATTRIBUTES, text=True, rbv=False)
    nd_attributes_macros = fixed("NDAttributesMacros", "", NO_ATTRIBUTES, text=True,
                                 rbv=False)
    nd_attributes_status = readback(
        "NDAttributesStatus", "Attributes file OK",
        enum_strings=["Attributes file OK", "File not found", "XML syntax error",
                      "Macro substitution error"], doc=NO_ATTRIBUTES)
    adcore_version = readback("ADCoreVersion_RBV", VERSION)
    driver_version = readback("DriverVersion_RBV", VERSION)
    pool_alloc_buffers = readback("PoolAllocBuffers", 0,
                                  doc="frames the camera's frame buffer holds")
    pool_free_buffers = readback("PoolFreeBuffers", 0)
    pool_max_buffers = readback("PoolMaxBuffers", 0)
    pool_used_buffers = readback("PoolUsedBuffers", 0)
    pool_max_mem = readback("PoolMaxMem", 0.0, units="MB", precision=1)
    pool_used_mem = readback("PoolUsedMem", 0.0, units="MB", precision=1)

    @port_name.startup
    async def port_name(self, instance, async_lib):
        await self.port_name.write(self.port)

    async def publish_pool(self, pool: tuple[int, int, int]) -> None:
        """``pool``: the camera's frame buffer as (capacity, used, bytes per frame)."""
        capacity, used, frame_bytes = pool
        await write_if_changed(self.pool_alloc_buffers, capacity)
        await write_if_changed(self.pool_max_buffers, capacity)
        await write_if_changed(self.pool_used_buffers, used)
        await write_if_changed(self.pool_free_buffers, capacity - used)
        await write_if_changed(self.pool_max_mem, round(capacity * frame_bytes / 1e6, 1))
        await write_if_changed(self.pool_used_mem, round(used * frame_bytes / 1e6, 1))


def _per_dimension_pvs() -> type:
    """ADCore NDArrayBase's per-dimension records, N = 0..9: ``DimNSA`` (element N of
    ``Dimensions``), ``ArraySizeN`` (its value), and their ``_RBV`` twins (of
    ``Dimensions_RBV``); plus ``ArraySizeX/Y/Z_RBV``. A mixin built in a loop: forty
    PVs that differ only by N."""
    attrs: dict[str, Any] = {}
    for n in range(MAX_DIMS):
        for suffix, what in (("", "Dimensions"), ("_RBV", "Dimensions_RBV")):
            attrs[f"dim{n}_sa{suffix.lower()}"] = pvproperty(
                name=f"Dim{n}SA{suffix}", value=[0], dtype=ChannelType.LONG, max_length=1,
                read_only=True, doc=f"element {n} of {what}")
            attrs[f"array_size{n}{suffix.lower()}"] = readback(
                f"ArraySize{n}{suffix}", 0, doc=f"element {n} of {what}")
    for axis in "XYZ":
        attrs[f"array_size_{axis.lower()}"] = readback(
            f"ArraySize{axis}_RBV", 0, doc=f"{axis} size of the last frame (0: none)")
    return type(PVGroup)("ArrayDimensionPVs", (PVGroup,), attrs)  # PVGroup's metaclass


ArrayDimensionPVs = _per_dimension_pvs()


class PluginGroup(PortGroup, ArrayDimensionPVs):
    """NDPluginBase. Subclasses set ``plugin_type`` and ``port`` and implement
    :meth:`take` (camera thread: keep the frame or return False to drop it) and
    :meth:`queue_state`."""

    plugin_type = "NDPluginBase"
    port = "PLUGIN"

    enable_callbacks, enable_callbacks_rbv = setting(
        "EnableCallbacks", "Enable", enum_strings=DISABLE_ENABLE,
        doc="Disable: this plugin ignores frames")
    blocking_callbacks, blocking_callbacks_rbv = setting(
        "BlockingCallbacks", "No", enum_strings=NO_YES,
        doc="accepted for compatibility: frames reach this plugin through its own queue "
            "either way, and a full queue drops them (DroppedArrays), never the camera")
    min_callback_time, min_callback_time_rbv = setting(
        "MinCallbackTime", 0.0, units="s", precision=3, lower_ctrl_limit=0.0,
        upper_ctrl_limit=3600.0, doc="frames closer together than this are skipped")
    array_counter, array_counter_rbv = setting(
        "ArrayCounter", 0, doc="frames this plugin received; put N to count on from N")
    dropped_arrays, dropped_arrays_rbv = setting(
        "DroppedArrays", 0, doc="frames this plugin could not take; put 0 to reset")
    array_rate = readback("ArrayRate_RBV", 0.0, units="Hz", precision=2)
    unique_id = readback("UniqueId_RBV", 0, doc="camera frame id of the last frame")
    time_stamp = readback("TimeStamp_RBV", 0.0, units="s", precision=6,
                          doc="exposure start of the last frame")
    execution_time = readback("ExecutionTime_RBV", 0.0, units="ms", precision=3,
                              doc="time the camera thread spent handing the last frame "
                                  "to this plugin")
    ndimensions = readback("NDimensions_RBV", 2)
    codec = readback("Codec_RBV", "", doc="codec of the frames it takes: none (empty)")
    compressed_size = readback("CompressedSize_RBV", 0,
                               doc="bytes of the last frame as taken (not compressed)")
    dimensions = pvproperty(name="Dimensions_RBV", value=[0] * MAX_DIMS,
                            dtype=ChannelType.LONG, max_length=MAX_DIMS, read_only=True)
    data_type = readback("DataType_RBV", "UInt16", enum_strings=ND_DATA_TYPES)
    color_mode = readback("ColorMode_RBV", "Mono", enum_strings=ND_COLOR_MODES)
    bayer_pattern = readback("BayerPattern_RBV", "RGGB", enum_strings=BAYER_PATTERNS)
    plugin_type_rbv = readback("PluginType_RBV", "")
    nd_array_port, nd_array_port_rbv = fixed(
        "NDArrayPort", CAMERA_PORT, "every plugin takes its frames from the camera")
    nd_array_address, nd_array_address_rbv = fixed(
        "NDArrayAddress", 0, "the camera has one output")
    queue_size = readback("QueueSize", 0, doc="frames this plugin can hold")
    queue_free = readback("QueueFree", 0)
    queue_use = readback("QueueUse", 0)
    queue_free_low = pvproperty(name="QueueFreeLow", value=0.0,
                                doc="QueueFree below this raises a MINOR alarm")
    queue_use_high = pvproperty(name="QueueUseHIGH", value=0.0,
                                doc="QueueUse above this raises a MINOR alarm (0: off)")
    queue_use_hihi = pvproperty(name="QueueUseHIHI", value=0.0,
                                doc="QueueUse above this raises a MAJOR alarm (0: off)")
    process_plugin = pvproperty(name="ProcessPlugin", value=0,
                                doc="put 1: hand the last frame to this plugin again")
    # -- the rest of ADCore 3.4's NDPluginBase (NDArrayBase) PVs, so stock clients
    # (ophyd's *_V34 plugin classes, ADCore's screens) find every one they name
    queue_size_rbv = readback("QueueSize_RBV", 0, doc="what QueueSize holds")
    epics_ts_sec = readback("EpicsTSSec_RBV", 0,
                            doc="exposure start of the last frame, s since 1990 (EPICS)")
    epics_ts_nsec = readback("EpicsTSNsec_RBV", 0, doc="... and its nanoseconds")
    array_size_bytes = readback("ArraySize_RBV", 0, doc="bytes of the last frame")
    ndimensions_out = readback("NDimensions", 2, doc="as NDimensions_RBV")
    dimensions_out = pvproperty(name="Dimensions", value=[0] * MAX_DIMS,
                                dtype=ChannelType.LONG, max_length=MAX_DIMS, read_only=True,
                                doc="as Dimensions_RBV")
    color_mode_out = fixed("ColorMode", "Mono", "a plugin's frames have the colour mode "
                           "they arrive with (ColorMode_RBV)", enum_strings=ND_COLOR_MODES,
                           rbv=False)
    data_type_out = fixed("DataType", "UInt16", "a plugin's frames have the data type "
                          "they arrive with (DataType_RBV)", enum_strings=ND_DATA_TYPES,
                          rbv=False)
    array_callbacks, array_callbacks_rbv = setting(
        "ArrayCallbacks", "Enable", enum_strings=DISABLE_ENABLE,
        doc="no plugin takes frames from this one (every plugin takes them from the "
            "camera), so either value passes nothing on")
    num_threads, num_threads_rbv = fixed("NumThreads", 1, ONE_THREAD)
    max_threads = readback("MaxThreads_RBV", 1, doc=ONE_THREAD)
    sort_mode, sort_mode_rbv = fixed("SortMode", "Unsorted", IN_ORDER,
                                     enum_strings=["Unsorted", "Sorted"])
    sort_time, sort_time_rbv = fixed("SortTime", 0.1, IN_ORDER, units="s", precision=3)
    sort_size, sort_size_rbv = fixed("SortSize", 10, IN_ORDER)
    sort_free = readback("SortFree", 10, doc=IN_ORDER)
    sort_free_low = readback("SortFreeLow", 10, doc=IN_ORDER)
    disordered_arrays, disordered_arrays_rbv = fixed("DisorderedArrays", 0, IN_ORDER)
    dropped_output_arrays, dropped_output_arrays_rbv = fixed(
        "DroppedOutputArrays", 0, "this plugin passes no frames on")
    max_byte_rate, max_byte_rate_rbv = fixed(
        "MaxByteRate", 0.0, "this plugin passes no frames on (0: no limit)", units="B/s")
    max_array_rate, max_array_rate_rbv = setting(
        "MaxArrayRate", 0.0, units="Hz", precision=2, lower_ctrl_limit=0.0,
        upper_ctrl_limit=1e6, doc="frames per second this plugin takes at most "
                                  "(0: all); the same limit as MinCallbackTime")
    max_array_rate_cout = readback("MaxArrayRate_COUT", 0.0, precision=6,
                                   doc="the MinCallbackTime that MaxArrayRate sets")
    empty_free_list = pvproperty(name="EmptyFreeList", value=0,
                                 doc="put 1: free unused frame buffers (a plugin keeps "
                                     "none of its own: nothing to free)")
    num_queued_arrays = readback("NumQueuedArrays", 0, doc="frames waiting in this plugin")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()
        self._received = 0  # frames counted toward ArrayCounter
        self._dropped = 0
        self._last: Frame | None = None
        self._last_taken_t = -1e300
        self._seconds = 0.0
        self._stamps: collections.deque[float] = collections.deque(maxlen=50)
        self._shape: tuple[int, int] | None = None
        self._dtype = "uint16"

    # -- frames (camera thread) -----------------------------------------------------
    @property
    def enabled(self) -> bool:
        return self.enable_callbacks.value == "Enable"

    def receive(self, frame: Frame) -> None:
        """Count ``frame`` and offer it to :meth:`take` (skipped within
        MinCallbackTime of the last one taken; dropped when the plugin cannot take it)."""
        if not self.enabled:
            return
        t0 = time.perf_counter()
        now = time.monotonic()
        min_dt = float(self.min_callback_time.value)
        if min_dt > 0 and now - self._last_taken_t < min_dt:
            return  # skipped, as areaDetector does: not counted, not dropped
        self._last_taken_t = now
        with self._lock:
            self._received += 1
            self._last = frame
            self._stamps.append(now)
            self._shape = frame.image.shape
            self._dtype = frame.image.dtype.name
        if not self.take(frame):  # one array (this one, or the one it replaced) is lost
            with self._lock:
                self._dropped += 1
                # ADCore counts in ArrayCounter the arrays a plugin processed, and in
                # DroppedArrays the ones it did not: together, the arrays it was sent
                self._received -= 1
        self._seconds = time.perf_counter() - t0

    def take(self, frame: Frame) -> bool:
        """Keep ``frame``; False when it had to be dropped."""
        return True

    def queue_state(self) -> tuple[int, int]:
        """(capacity, frames waiting) of this plugin's queue."""
        return (1, 0)

    def prime(self, shape: tuple[int, int]) -> None:
        """The frame size this plugin will receive, known before the first frame
        (the camera's settings); a received frame's own size takes over."""
        with self._lock:
            if self._last is None:
                self._shape = shape

    # -- putters --------------------------------------------------------------------
    @array_counter.putter
    async def array_counter(self, instance, value):
        with self._lock:
            self._received = int(value)
        return value

    @min_callback_time.putter
    async def min_callback_time(self, instance, value):
        rate = 1.0 / value if value > 0 else 0.0
        await write_if_changed(self.max_array_rate_cout, float(value))
        if abs(rate - self.max_array_rate.value) > 1e-9 * max(rate, 1.0):
            await self.max_array_rate.write(rate, verify_value=False)
        return value

    @max_array_rate.putter
    async def max_array_rate(self, instance, value):
        period = 1.0 / value if value > 0 else 0.0
        if abs(period - self.min_callback_time.value) > 1e-12:
            await self.min_callback_time.write(period)
        return value

    @empty_free_list.putter
    async def empty_free_list(self, instance, value):
        return 0

    @dropped_arrays.putter
    async def dropped_arrays(self, instance, value):
        with self._lock:
            self._dropped = int(value)
        return value

    @process_plugin.putter
    async def process_plugin(self, instance, value):
        last = self._last
        if value and last is not None:
            self.take(last)
        return 0

    # -- publishing (event loop) -------------------------------------------------------
    @plugin_type_rbv.startup
    async def plugin_type_rbv(self, instance, async_lib):
        await self.plugin_type_rbv.write(self.plugin_type)

    async def publish(self) -> None:
        """Bring the counters to Channel Access (called by the camera's loop)."""
        with self._lock:
            received, dropped, last, shape = (self._received, self._dropped, self._last,
                                              self._shape)
            stamps = list(self._stamps)
            dtype = self._dtype
        await write_if_changed(self.array_counter_rbv, received)
        await write_if_changed(self.dropped_arrays_rbv, dropped)
        if last is not None and last.frame_id != self.unique_id.value:
            await self.unique_id.write(int(last.frame_id))
            await self.time_stamp.write(float(last.timestamp))
            await self.execution_time.write(self._seconds * 1e3)
            epics_s = float(last.timestamp) - EPICS_EPOCH
            await self.epics_ts_sec.write(int(epics_s))
            await self.epics_ts_nsec.write(int(round((epics_s % 1.0) * 1e9)) % 1_000_000_000)
            await write_if_changed(self.array_size_bytes, int(last.image.nbytes))
            await write_if_changed(self.compressed_size, int(last.image.nbytes))
        rate = 0.0
        if len(stamps) >= 2 and stamps[-1] > stamps[0] and time.monotonic() - stamps[-1] < 2:
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        if abs(rate - self.array_rate.value) > 0.01:
            await self.array_rate.write(rate)
        if shape is not None and (shape[1], shape[0]) != (self.array_size0_rbv.value,
                                                          self.array_size1_rbv.value):
            await self._publish_dimensions(dims_of(shape))
        name = DTYPE_NAMES.get(dtype)
        if name is not None and name != self.data_type.value:
            await self.data_type.write(name)
        size, waiting = self.queue_state()
        await write_if_changed(self.queue_size, size)
        await write_if_changed(self.queue_size_rbv, size)
        await write_if_changed(self.num_queued_arrays, waiting)
        await write_if_changed(self.queue_free, size - waiting)
        await self._queue_alarm(waiting)

    async def _publish_dimensions(self, dims: list[int]) -> None:
        """A new frame geometry on ``Dimensions`` and each per-dimension PV (x first:
        ArraySize0 = x, ArraySize1 = y; ArraySizeX/Y/Z as areaDetector gives them)."""
        for pv in (self.dimensions, self.dimensions_out):
            await pv.write(dims)
        for n, size in enumerate(dims):
            for suffix in ("", "_rbv"):
                await getattr(self, f"dim{n}_sa{suffix}").write([size])
                await getattr(self, f"array_size{n}{suffix}").write(size)
        for axis, size in zip("xyz", dims[:3], strict=True):
            await getattr(self, f"array_size_{axis}").write(size)

    async def _queue_alarm(self, waiting: int) -> None:
        free = self.queue_free.value
        severity = AlarmSeverity.NO_ALARM
        if self.queue_use_hihi.value and waiting > self.queue_use_hihi.value:
            severity = AlarmSeverity.MAJOR_ALARM
        elif (self.queue_use_high.value and waiting > self.queue_use_high.value) or (
                self.queue_free_low.value and free < self.queue_free_low.value):
            severity = AlarmSeverity.MINOR_ALARM
        status = AlarmStatus.NO_ALARM if severity == AlarmSeverity.NO_ALARM else \
            AlarmStatus.HIGH
        if waiting != self.queue_use.value or severity != self.queue_use.alarm.severity:
            await self.queue_use.write(waiting, status=status, severity=severity)

