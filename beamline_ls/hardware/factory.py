"""Build the set of drivers an IOC serves, from the microscope's TOML description.

``hardware`` is the ``[hardware.<device>]`` tables of the configuration file, one per
device, each naming a ``backend``; a device not named stays simulated, and all
simulated devices share one :class:`SimMicroscope` so they act on the same world.

Devices and backends (see ``examples/microscope.toml`` for every key):

============  ======================  ============================================
device        backends                real hardware
============  ======================  ============================================
camera        sim, pylablib           sCMOS through pylablib: Hamamatsu DCAM or
                                      Andor SDK3 (``sdk = "dcam" | "andor3"``)
brightfield   sim, pylon, tiff        gating camera: GenICam through pylon, or a
                                      recorded TIFF replayed at its own rate
scanboard     sim, nidaqmx            NI board: piezo + galvo AO, camera pulses, AI
stage         sim, asi                ASI MS-2000 style controller, serial
laser         sim, cobolt             Cobolt-style laser head, serial
trigger_box   sim, serial, nidaq      gating trigger output: software scheduler
                                      (sim), a box with its own clock (serial), an
                                      NI counter or DO line fired by the scheduler
============  ======================  ============================================

The gating system is assembled from ``brightfield`` (its frame source) and
``trigger_box`` (its output). The simulated microscope exists only while some device
is simulated; the simulated heart only when the brightfield camera is, so the
simulator-only ``true_phase`` is stored only then.

With the ``nidaqmx`` scan board the piezo and galvo positioners are the board's AO
channels (static writes). Building drivers never touches hardware: serial ports open
on first use, NI tasks when a scan or a move starts. Any bad key or value raises a
``ValueError`` naming it (``hardware.laser.max_power_mw: ...``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beamline_ls.clock import Clock, RealTimeClock
from beamline_ls.hardware.asi_stage import AsiStage, AxisConfig
from beamline_ls.hardware.brightfield import FrameSource, TiffReplaySource
from beamline_ls.hardware.camera import CameraDriver, SimCamera
from beamline_ls.hardware.gating import GatingSystem
from beamline_ls.hardware.laser import LaserDriver, SimLaser
from beamline_ls.hardware.nidaq_positioner import NidaqAxis
from beamline_ls.hardware.nidaq_scanboard import (
    CAMERA_OUTPUTS,
    NidaqBoardConfig,
    NidaqScanBoard,
    TaskFactory,
)
from beamline_ls.hardware.positioner import (
    PositionerDriver,
    SimActuatorPositioner,
    SimStageAxis,
)
from beamline_ls.hardware.scanboard import ScanBoardDriver, SimScanBoard
from beamline_ls.hardware.serial_laser import SerialLaser
from beamline_ls.hardware.serial_link import SerialFactory, SerialLink
from beamline_ls.hardware.trigger_box import TriggerBox
from beamline_ls.hardware.trigger_output import (
    BoxOutput,
    NidaqOutput,
    NidaqTriggerConfig,
    ScheduledOutput,
    TriggerOutput,
)
from beamline_ls.sim.heart import SimHeart
from beamline_ls.sim.microscope import SimMicroscope

log = logging.getLogger(__name__)

BACKENDS: dict[str, tuple[str, ...]] = {
    "camera": ("sim", "pylablib"),
    "brightfield": ("sim", "pylon", "tiff"),
    "scanboard": ("sim", "nidaqmx"),
    "stage": ("sim", "asi"),
    "laser": ("sim", "cobolt"),
    "trigger_box": ("sim", "serial", "nidaq"),
}
STAGE_AXES = ("x", "y", "z")
HEART_HOURS = 3  # simulated heart timeline; phase is precomputed on a 5 ms grid


@dataclass
class Drivers:
    camera: CameraDriver
    scanboard: ScanBoardDriver
    piezo: PositionerDriver
    galvos: list[PositionerDriver]
    stage: dict[str, PositionerDriver]
    laser: LaserDriver
    microscope: SimMicroscope | None = None
    trigger_box: TriggerBox | None = None
    backends: dict[str, str] = field(default_factory=dict)
    links: list[SerialLink] = field(default_factory=list)
    gating: GatingSystem | None = None

    def close(self) -> None:
        """Stop gating and the scan board, close every serial port (IOC shutdown)."""
        if self.gating is not None:
            self.gating.close()
        self.camera.close()
        self.scanboard.stop()
        for link in self.links:
            link.close()


# ---------------------------------------------------------------------- TOML reading
class Table:
    """Typed, checked access to one ``[hardware.<device>]`` table.

    Every getter names the full key in its error; :meth:`finish` rejects keys nobody
    asked for, so a typo never silently falls back to a default.
    """

    def __init__(self, cfg: Any, where: str, read: tuple[str, ...] = ("backend",)) -> None:
        """``read``: keys read elsewhere (a device's ``backend``, by `backend_of`)."""
        if not isinstance(cfg, dict):
            raise ValueError(f"{where}: must be a table, got {type(cfg).__name__}")
        self.cfg = cfg
        self.where = where
        self.used: set[str] = set(read)

    def _raw(self, key: str, default: Any) -> Any:
        self.used.add(key)
        return self.cfg.get(key, default)

    def fail(self, key: str, why: str) -> ValueError:
        return ValueError(f"{self.where}.{key}: {why}")

    def str(self, key: str, default: str | None = None, choices: tuple[str, ...] = ()) -> str:
        v = self._raw(key, default)
        if v is None:
            raise self.fail(key, "is required")
        if not isinstance(v, str):
            raise self.fail(key, f"must be a string, got {v!r}")
        if choices and v not in choices:
            raise self.fail(key, f"must be one of {list(choices)}, got {v!r}")
        return v

    def float(self, key: str, default: float | None = None, lo: float = -math.inf,
              hi: float = math.inf, lo_open: bool = False) -> float:
        v = self._raw(key, default)
        if v is None:
            raise self.fail(key, "is required")
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise self.fail(key, f"must be a number, got {v!r}")
        if (v <= lo if lo_open else v < lo) or v > hi:
            raise self.fail(key, f"must be in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {v}")
        return float(v)

    def int(self, key: str, default: int | None = None, lo: int = 0,
            hi: int = 10**9) -> int:
        v = self._raw(key, default)
        if v is None:
            raise self.fail(key, "is required")
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.fail(key, f"must be an integer, got {v!r}")
        if not lo <= v <= hi:
            raise self.fail(key, f"must be in [{lo}, {hi}], got {v}")
        return v

    def pair(self, key: str, default: tuple[float, float]) -> tuple[float, float]:
        v = self._raw(key, list(default))
        if (not isinstance(v, list) or len(v) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)):
            raise self.fail(key, f"must be [low, high], got {v!r}")
        if not v[0] < v[1]:
            raise self.fail(key, f"low must be below high, got {v!r}")
        return (float(v[0]), float(v[1]))

    def strings(self, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
        v = self._raw(key, list(default))
        if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
            raise self.fail(key, f"must be a list of names, got {v!r}")
        return tuple(v)

    def table(self, key: str) -> Table | None:
        v = self._raw(key, None)
        return None if v is None else Table(v, f"{self.where}.{key}", read=())

    def finish(self) -> None:
        unknown = sorted(set(self.cfg) - self.used)
        if unknown:
            raise self.fail(unknown[0], f"unknown key (allowed: {', '.join(sorted(self.used))})")


def backend_of(hardware: dict[str, Any], device: str) -> str:
    cfg = hardware.get(device)
    if cfg is None:
        return "sim"
    t = Table(cfg, f"hardware.{device}")
    return t.str("backend", "sim", BACKENDS[device])


def check_devices(hardware: dict[str, Any]) -> dict[str, str]:
    """Backend of every device; rejects unknown devices and backends."""
    for name in hardware:
        if name not in BACKENDS:
            raise ValueError(f"hardware.{name}: unknown device (known: {', '.join(BACKENDS)})")
    return {dev: backend_of(hardware, dev) for dev in BACKENDS}


def serial_link(t: Table, name: str, baudrate: int, timeout_s: float = 0.5,
                serial_factory: SerialFactory | None = None) -> SerialLink:
    return SerialLink(name, t.str("port"), t.int("baudrate", baudrate, 300, 4_000_000),
                      t.float("timeout_s", timeout_s, 0.01, 30.0), serial_factory=serial_factory)


def nidaq_config(cfg: dict[str, Any]) -> NidaqBoardConfig:
    t = Table(cfg, "hardware.scanboard")
    d = NidaqBoardConfig()
    max_rate = t.float("max_sample_rate_hz", d.max_sample_rate_hz, 1_000.0, 10_000_000.0)
    rate = t.float("sample_rate_hz", d.sample_rate_hz, 1_000.0, max_rate)
    um_per_v = t.float("piezo_um_per_volt", d.piezo_um_per_volt)
    if um_per_v == 0:
        raise t.fail("piezo_um_per_volt", "must not be 0")
    c = NidaqBoardConfig(
        device=t.str("device", d.device),
        piezo_channel=t.str("piezo_channel", d.piezo_channel),
        galvo_channels=t.strings("galvo_channels", d.galvo_channels),
        piezo_um_per_volt=um_per_v,
        piezo_offset_v=t.float("piezo_offset_v", d.piezo_offset_v, -10.0, 10.0),
        piezo_range_v=t.pair("piezo_range_v", d.piezo_range_v),
        galvo_range_v=t.pair("galvo_range_v", d.galvo_range_v),
        sample_rate_hz=rate,
        max_sample_rate_hz=max_rate,
        camera_output=t.str("camera_output", d.camera_output, CAMERA_OUTPUTS),
        camera_counter=t.str("camera_counter", d.camera_counter),
        camera_do_line=t.str("camera_do_line", d.camera_do_line),
        camera_terminal=t.str("camera_terminal", d.camera_terminal),
        piezo_ai_channel=t.str("piezo_ai_channel", d.piezo_ai_channel),
        piezo_ai_um_per_volt=t.float("piezo_ai_um_per_volt", d.piezo_ai_um_per_volt),
        piezo_ai_offset_v=t.float("piezo_ai_offset_v", d.piezo_ai_offset_v, -10.0, 10.0),
        piezo_ai_range_v=t.pair("piezo_ai_range_v", d.piezo_ai_range_v),
        start_trigger_source=t.str("start_trigger_source", d.start_trigger_source),
        export_start_trigger=t.str("export_start_trigger", d.export_start_trigger),
        flyback_settle_s=t.float("flyback_settle_s", d.flyback_settle_s, 0.0, 10.0),
        settle_s=t.float("settle_s", d.settle_s, 0.0, 10.0),
        position_tolerance_um=t.float("position_tolerance_um", d.position_tolerance_um,
                                      0.0, 100.0, lo_open=True),
        preposition_timeout_s=t.float("preposition_timeout_s", d.preposition_timeout_s,
                                      0.0, 60.0),
    )
    if len(c.galvo_channels) != 2:
        raise t.fail("galvo_channels", f"must name 2 channels (one per beam), got "
                                       f"{list(c.galvo_channels)}")
    if len(set(c.ao_channels)) != len(c.ao_channels):
        raise t.fail("galvo_channels", f"channels must differ from each other and from "
                                       f"piezo_channel, got {list(c.ao_channels)}")
    t.finish()
    return c


def stage_config(cfg: dict[str, Any]) -> tuple[Table, dict[str, AxisConfig]]:
    t = Table(cfg, "hardware.stage")
    axes: dict[str, AxisConfig] = {}
    for name in STAGE_AXES:
        at = t.table(name)
        if at is None:
            axes[name] = AxisConfig(name.upper())
            continue
        axes[name] = AxisConfig(
            letter=at.str("letter", name.upper()),
            limits_um=at.pair("limits_um", AxisConfig("X").limits_um),
            velocity_um_s=at.float("velocity_um_s", 2_000.0, 0.0, 1e6, lo_open=True),
        )
        at.finish()
    letters = [a.letter for a in axes.values()]
    if len(set(letters)) != len(letters):
        raise t.fail("x", f"axis letters must differ, got {letters}")
    return t, axes


def build_stage(cfg: dict[str, Any], serial_factory: SerialFactory | None = None
                ) -> tuple[AsiStage, SerialLink]:
    t, axes = stage_config(cfg)
    link = serial_link(t, "stage", 115200, serial_factory=serial_factory)
    stage = AsiStage(link, axes,
                     settle_timeout_s=t.float("settle_timeout_s", 0.5, 0.0, 60.0),
                     tolerance_um=t.float("tolerance_um", 0.2, 0.0, 1000.0))
    t.finish()
    return stage, link


def build_laser(cfg: dict[str, Any], serial_factory: SerialFactory | None = None
                ) -> tuple[SerialLaser, SerialLink]:
    t = Table(cfg, "hardware.laser")
    link = serial_link(t, "laser", 115200, serial_factory=serial_factory)
    laser = SerialLaser(link, t.float("max_power_mw", None, 0.0, 100_000.0, lo_open=True),
                        t.float("wavelength_nm", None, 100.0, 10_000.0))
    t.finish()
    return laser, link


def build_trigger_box(cfg: dict[str, Any], serial_factory: SerialFactory | None = None,
                      clock: Clock | None = None) -> tuple[TriggerBox, SerialLink]:
    t = Table(cfg, "hardware.trigger_box")
    link = serial_link(t, "trigger_box", 115200, 0.2, serial_factory=serial_factory)
    box = TriggerBox(link, clock=clock,
                     tick_s=t.float("tick_us", 2.56, 0.0, 1e6, lo_open=True) * 1e-6,
                     resync_s=t.float("resync_s", 10.0, 0.1, 3600.0))
    t.finish()
    return box, link


def build_camera(cfg: dict[str, Any], opener: Callable[[int], Any] | None = None,
                 clock: Clock | None = None) -> CameraDriver:
    """The sCMOS through pylablib, from ``[hardware.camera]``."""
    from beamline_ls.hardware.pylablib_camera import SDKS, PylablibCamera

    t = Table(cfg, "hardware.camera")
    sdk = t.str("sdk", None, tuple(SDKS))
    # DCAM names its speeds (a model offers one to three of them); Andor's
    # PixelReadoutRate values ("280 MHz", ...) vary by model and are checked at open
    speeds = ("", "slow", "normal", "fast") if sdk == "dcam" else ()
    library_dir = t.str("library_dir", "")
    if library_dir and not Path(library_dir).is_dir():
        raise t.fail("library_dir", f"no such directory: {library_dir}")
    camera = PylablibCamera(
        sdk=sdk, index=t.int("index", 0, 0, 63),
        readout_speed=t.str("readout_speed", "", speeds),
        buffer_frames=t.int("buffer_frames", 200, 2, 100_000), clock=clock, opener=opener,
        library_dir=library_dir)
    t.finish()
    return camera


def build_brightfield(cfg: dict[str, Any], clock: Clock) -> FrameSource:
    """A real brightfield source (``pylon`` or ``tiff``) from its table."""
    t = Table(cfg, "hardware.brightfield")
    backend = t.str("backend", "sim", BACKENDS["brightfield"])
    if backend == "tiff":
        source: FrameSource = TiffReplaySource(
            t.str("path"), t.float("fps", None, 1.0, 1000.0), clock)
    else:
        from beamline_ls.hardware.pylon_camera import (
            PIXEL_FORMATS,
            STAMPS,
            PylonSource,
            played_image_shape,
        )

        image_filename = t.str("image_filename", "")
        if image_filename:  # images the emulator cannot play are said at start-up
            played_image_shape(image_filename)
        roi = t._raw("roi", None)
        if roi is not None and (not isinstance(roi, list) or len(roi) != 4 or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in roi)):
            raise t.fail("roi", f"must be [x, y, width, height] in pixels, got {roi!r}")
        source = PylonSource(
            serial=t.str("serial", ""),
            exposure_us=t.float("exposure_us", 1000.0, 1.0, 1e6),
            roi=tuple(roi) if roi is not None else None,
            pixel_format=t.str("pixel_format", "Mono8", tuple(PIXEL_FORMATS)),
            image_filename=image_filename,
            latency_s=t.float("latency_s", 0.0, 0.0, 1.0),
            stamp=t.str("stamp", "auto", STAMPS),
            clock=clock)
    t.finish()
    return source


def nidaq_trigger_config(cfg: dict[str, Any]) -> NidaqTriggerConfig:
    t = Table(cfg, "hardware.trigger_box")
    d = NidaqTriggerConfig()
    c = NidaqTriggerConfig(
        device=t.str("device", d.device),
        output=t.str("output", d.output, ("counter", "do")),
        counter=t.str("counter", d.counter),
        do_line=t.str("do_line", d.do_line),
        pulse_width_s=t.float("pulse_width_s", d.pulse_width_s, 1e-6, 0.1))
    t.finish()
    return c


def build_drivers(
    hardware: dict[str, dict[str, Any]] | None = None,
    microscope: SimMicroscope | None = None,
    *,
    task_factory: TaskFactory | None = None,
    serial_factory: SerialFactory | None = None,
    camera_opener: Callable[[int], Any] | None = None,
) -> Drivers:
    """Drivers for every device; ``hardware`` names a backend per device (default sim).

    ``task_factory`` (``name -> nidaqmx.Task``), ``serial_factory`` (pyserial's
    ``serial_for_url`` signature) and ``camera_opener`` (``index -> pylablib camera``)
    are seams for tests and unusual installations.
    """
    hardware = dict(hardware or {})
    backends = check_devices(hardware)
    # the simulated world exists only when something is simulated
    m = microscope
    if m is None and any(b == "sim" for b in backends.values()):
        m = SimMicroscope()
    clock: Clock = m.clock if m is not None else RealTimeClock()  # one clock for all
    links: list[SerialLink] = []

    if backends["scanboard"] == "nidaqmx":
        ni = NidaqScanBoard(nidaq_config(hardware["scanboard"]), task_factory)
        board: ScanBoardDriver = ni
        piezo: PositionerDriver = NidaqAxis(ni, ni.config.piezo_channel, "piezo")
        galvos: list[PositionerDriver] = [NidaqAxis(ni, ch, "galvo")
                                          for ch in ni.config.galvo_channels]
        if backends["camera"] == "sim":
            log.warning("the scan board is real but the camera is simulated: the simulated "
                        "camera never sees the board's trigger pulses (External mode)")
    else:
        Table(hardware.get("scanboard", {}), "hardware.scanboard").finish()
        sim_board = SimScanBoard(m)
        board = sim_board

        def busy() -> bool:
            return sim_board.running

        piezo = SimActuatorPositioner(m.piezo, m.clock, "um", tolerance=0.05, busy=busy)
        galvos = [SimActuatorPositioner(g, m.clock, "V", tolerance=1e-4, busy=busy,
                                        precision=4) for g in m.galvos]

    if backends["stage"] == "asi":
        asi, link = build_stage(hardware["stage"], serial_factory)
        links.append(link)
        stage: dict[str, PositionerDriver] = {a: asi.axis(a) for a in asi.axes}
    else:
        Table(hardware.get("stage", {}), "hardware.stage").finish()
        stage = {axis: SimStageAxis(a, m.clock) for axis, a in m.stage.items()}

    if backends["laser"] == "cobolt":
        laser: LaserDriver
        laser, link = build_laser(hardware["laser"], serial_factory)
        links.append(link)
    else:
        Table(hardware.get("laser", {}), "hardware.laser").finish()
        laser = SimLaser(m.laser)

    box = None
    if backends["trigger_box"] == "serial":
        box, link = build_trigger_box(hardware["trigger_box"], serial_factory, clock)
        links.append(link)
    elif backends["trigger_box"] == "sim":
        Table(hardware.get("trigger_box", {}), "hardware.trigger_box").finish()

    camera: CameraDriver
    if backends["camera"] == "pylablib":
        camera = build_camera(hardware["camera"], camera_opener, clock)
    else:
        Table(hardware.get("camera", {}), "hardware.camera").finish()
        assert m is not None
        camera = SimCamera(m)
    gating = build_gating(hardware, backends, m, box, clock, task_factory)
    real = {k: v for k, v in backends.items() if v != "sim"}
    if real:
        log.info("hardware backends: %s (everything else simulated)",
                 ", ".join(f"{k}={v}" for k, v in real.items()))
    return Drivers(camera, board, piezo, galvos, stage, laser, m, box, backends, links,
                   gating)


def build_gating(hardware: dict[str, Any], backends: dict[str, str],
                 m: SimMicroscope | None, box: TriggerBox | None, clock: Clock,
                 task_factory: TaskFactory | None = None) -> GatingSystem:
    """The gating system from its parts: brightfield source, trigger output, and the
    simulated camera's trigger input when the fluorescence camera is simulated."""
    if backends["brightfield"] == "sim":
        from beamline_ls.sim.gating import SimHeartSource

        Table(hardware.get("brightfield", {}), "hardware.brightfield").finish()
        assert m is not None
        if m.heart is None:
            m.heart = SimHeart(t0=m.clock.now() - 1.0, duration_s=HEART_HOURS * 3600,
                               dt_s=5e-3)
        source: FrameSource = SimHeartSource(m)
    else:
        source = build_brightfield(hardware["brightfield"], clock)
    output: TriggerOutput
    if backends["trigger_box"] == "serial":
        assert box is not None
        output = BoxOutput(box, clock)
    elif backends["trigger_box"] == "nidaq":
        output = NidaqOutput(nidaq_trigger_config(hardware["trigger_box"]), clock,
                             task_factory)
    else:
        output = ScheduledOutput(clock)
    camera_line = m.camera_trigger if backends["camera"] == "sim" and m is not None else None
    return GatingSystem(source, output, clock, camera_line=camera_line)

