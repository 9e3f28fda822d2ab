"""NI multifunction board as the scan board (nidaqmx): piezo, vertical galvos, camera.

One volume of waveforms from :meth:`VolumeScan.waveforms` is computed once and played
cyclically by the board (regeneration), never streamed from Python:

- **AO master task**: piezo (um -> V through ``piezo_um_per_volt``) and one channel per
  vertical galvo, hardware-timed at the scan's sample rate; continuous, or finite
  with ``n_volumes x samples`` when the volume count is known (the board regenerates
  the one-volume buffer). Optionally waits for an external start edge
  (``start_trigger_source``) and exports its start trigger to a terminal
  (``export_start_trigger``) for other instruments.
- **Camera pulses**: either a counter output whose buffered pulse specs (in ticks of
  the AO sample clock) reproduce the waveform's pulse train exactly, or a DO line
  clocked by the AO sample clock that plays the camera waveform sample for sample.
- **AI** of the piezo position monitor, clocked by the AO sample clock; a reader
  thread keeps the last measured volume (``measured_piezo_um``) for diagnostics and
  for driving the galvos from the measured trajectory later.

All slave tasks (camera, AI) are configured to start on ``/<dev>/ao/StartTrigger``
and are started (armed) before the AO master, so the one AO start edge starts them
all on the same sample. ``stop()`` stops and releases every task; an error while
arming releases whatever was already created. Every NI error becomes a
:class:`NidaqError` naming the device, the channel and the setting involved.

Planar mode (:meth:`park`) and pre-positioning before a scan are static,
on-demand AO writes (a short-lived task): AO outputs keep their last value after a
task is released, and no channel stays reserved between scans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from beamline_ls.hardware.scanboard import ScanBoardDriver
from beamline_ls.waveforms import GalvoCalibration, ScanWaveforms, VolumeScan

log = logging.getLogger(__name__)

CAMERA_OUTPUTS = ("counter", "do")


class NidaqError(RuntimeError):
    """An NI-DAQmx call failed; the message names device, channel and setting."""


@dataclass(frozen=True)
class NidaqBoardConfig:
    """Wiring and calibration of the NI scan board (``[hardware.scanboard]``)."""

    device: str = "Dev1"
    piezo_channel: str = "ao0"
    galvo_channels: tuple[str, ...] = ("ao1", "ao2")
    piezo_um_per_volt: float = 40.0
    piezo_offset_v: float = 0.0
    piezo_range_v: tuple[float, float] = (0.0, 10.0)
    galvo_range_v: tuple[float, float] = (-10.0, 10.0)
    sample_rate_hz: float = 20_000.0
    max_sample_rate_hz: float = 100_000.0
    camera_output: str = "counter"
    camera_counter: str = "ctr0"
    camera_do_line: str = "port0/line0"
    camera_terminal: str = ""
    piezo_ai_channel: str = ""
    piezo_ai_um_per_volt: float = 40.0
    piezo_ai_offset_v: float = 0.0
    piezo_ai_range_v: tuple[float, float] = (-10.0, 10.0)
    start_trigger_source: str = ""
    export_start_trigger: str = ""
    flyback_settle_s: float = 0.04
    settle_s: float = 0.05
    position_tolerance_um: float = 0.5
    preposition_timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.camera_output not in CAMERA_OUTPUTS:
            raise ValueError(f"camera_output must be one of {CAMERA_OUTPUTS}, "
                             f"got {self.camera_output!r}")
        if self.piezo_um_per_volt == 0:
            raise ValueError("piezo_um_per_volt must not be 0")
        for name in ("piezo_range_v", "galvo_range_v", "piezo_ai_range_v"):
            lo, hi = getattr(self, name)
            if not lo < hi:
                raise ValueError(f"{name} must be [low, high] with low < high, got {[lo, hi]}")
        if not 0 < self.sample_rate_hz <= self.max_sample_rate_hz:
            raise ValueError(f"sample_rate_hz must be in (0, max_sample_rate_hz="
                             f"{self.max_sample_rate_hz:g}], got {self.sample_rate_hz:g}")

    def phys(self, channel: str) -> str:
        """``Dev1/ao0`` from ``ao0``."""
        return f"{self.device}/{channel}"

    def terminal(self, name: str) -> str:
        """``/Dev1/ao/StartTrigger`` from ``ao/StartTrigger``."""
        return f"/{self.device}/{name}"

    @property
    def ao_channels(self) -> tuple[str, ...]:
        return (self.piezo_channel, *self.galvo_channels)

    def piezo_volts(self, um: np.ndarray | float) -> np.ndarray:
        return self.piezo_offset_v + np.asarray(um, dtype=float) / self.piezo_um_per_volt

    def piezo_um(self, volts: np.ndarray | float) -> np.ndarray:
        return (np.asarray(volts, dtype=float) - self.piezo_offset_v) * self.piezo_um_per_volt

    @property
    def piezo_travel_um(self) -> tuple[float, float]:
        a, b = (float(x) for x in self.piezo_um(np.array(self.piezo_range_v)))
        return (min(a, b), max(a, b))


def default_task_factory(name: str) -> Any:
    """A real ``nidaqmx.Task`` (raises DaqNotFoundError without NI's driver)."""
    import nidaqmx

    return nidaqmx.Task(name)


TaskFactory = Callable[[str], Any]


def ao_samples(config: NidaqBoardConfig, w: ScanWaveforms) -> np.ndarray:
    """(channels, samples) volts for the AO task: piezo first, then each galvo."""
    if w.galvo_v.shape[0] != len(config.galvo_channels):
        raise ValueError(f"the scan has {w.galvo_v.shape[0]} galvo waveform(s) but "
                         f"galvo_channels names {len(config.galvo_channels)}")
    data = np.vstack([config.piezo_volts(w.piezo_um)[None, :], w.galvo_v]).astype(np.float64)
    ranges = [config.piezo_range_v] + [config.galvo_range_v] * len(config.galvo_channels)
    for row, ch, (lo, hi) in zip(data, config.ao_channels, ranges, strict=True):
        if row.min() < lo - 1e-9 or row.max() > hi + 1e-9:
            setting = "piezo_range_v / piezo_um_per_volt" if ch == config.piezo_channel \
                else "galvo_range_v (or the galvo calibration)"
            raise ValueError(f"NI board {config.device}: waveform on {config.phys(ch)} spans "
                             f"{row.min():.4f}..{row.max():.4f} V, outside [{lo}, {hi}] V; "
                             f"check {setting}")
    return np.ascontiguousarray(data)


def counter_ticks(w: ScanWaveforms) -> tuple[int, list[tuple[int, int]]]:
    """Counter pulse specs reproducing the camera waveform, in sample-clock ticks.

    Returns the initial delay (ticks before the first rising edge) and one
    (high_ticks, low_ticks) per pulse; high + low is the distance to the next rising
    edge (wrapping into the next volume), so the pattern repeats every volume.
    """
    n = w.n_samples
    cam = w.camera.astype(np.int8)
    rises = np.flatnonzero(np.diff(np.concatenate(([cam[-1]], cam))) == 1)
    falls = np.flatnonzero(np.diff(np.concatenate(([cam[-1]], cam))) == -1)
    if rises.size == 0:
        raise ValueError("the camera waveform has no pulse")
    specs = []
    for i, r in enumerate(rises):
        nxt = rises[i + 1] if i + 1 < rises.size else rises[0] + n
        after = falls[falls > r]
        fall = after[0] if after.size else falls[0] + n
        high = int(fall - r)
        specs.append((high, int(nxt - r - high)))
    return int(rises[0]), specs


class NidaqScanBoard(ScanBoardDriver):
    """:class:`ScanBoardDriver` on an NI board; see the module docstring."""

    def __init__(self, config: NidaqBoardConfig, task_factory: TaskFactory | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.flyback_settle_s = config.flyback_settle_s
        self._new_task = task_factory or default_task_factory
        self._clock = clock
        self._tasks: dict[str, Any] = {}
        self._n_samples = 0
        self._rate = config.sample_rate_hz
        self._n_volumes: int | None = None
        self._continuous = False
        self._parked_at: float | None = None
        self._park_z: float | None = None
        self._last_static: dict[str, float] = {}
        self._lock = threading.RLock()
        self._reader: threading.Thread | None = None
        self._reader_stop = threading.Event()
        self._volumes_done = 0
        self.measured_piezo_um: np.ndarray | None = None
        self.last_error = ""
        self._repeating = ""  # the failure logged last, until an NI call succeeds

    # ------------------------------------------------------------------ errors
    @contextmanager
    def _ni(self, what: str, channel: str = "", setting: str = "") -> Iterator[None]:
        """Turn any nidaqmx error inside into a NidaqError naming what was done.

        Logged once while it repeats: the piezo's position is polled several times a
        second, and a board that is absent (no NI-DAQmx, unplugged) filled the IOC's
        log with the same line 4-5 times a second. Each call still raises it; a
        success in between makes the next failure news again."""
        import nidaqmx.errors

        try:
            yield
        except nidaqmx.errors.Error as exc:
            code = getattr(exc, "error_code", None)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            where = f" on channel {channel}" if channel else ""
            why = f" (setting {setting})" if setting else ""
            msg = (f"NI board {self.config.device}: {what}{where}{why} failed"
                   f"{f' [NI error {code}]' if code is not None else ''}: {first}")
            if msg != self._repeating:
                log.error("%s (said once while it repeats)", msg)
            self.last_error = self._repeating = msg
            raise NidaqError(msg) from exc
        else:
            self._repeating = ""

    def _task(self, name: str) -> Any:
        with self._ni(f"creating task {name!r}", setting="NI-DAQmx driver installed?"):
            return self._new_task(name)

    # ------------------------------------------------------------------ static writes
    def write_static(self, volts: dict[str, float]) -> None:
        """Set AO channels (by short name, e.g. ``ao0``) to constant voltages now."""
        cfg = self.config
        with self._lock:
            if self.running:
                raise RuntimeError("the scan board is playing waveforms; stop it first")
            self._release()
            task = self._task("bls-static-ao")
            try:
                for ch, v in volts.items():
                    lo, hi = cfg.piezo_range_v if ch == cfg.piezo_channel else cfg.galvo_range_v
                    if not lo <= v <= hi:
                        raise ValueError(f"NI board {cfg.device}: {v:.4f} V on {cfg.phys(ch)} "
                                         f"is outside [{lo}, {hi}] V")
                    with self._ni("adding AO channel", cfg.phys(ch), f"range [{lo}, {hi}] V"):
                        task.ao_channels.add_ao_voltage_chan(cfg.phys(ch), min_val=lo,
                                                             max_val=hi)
                data = [float(v) for v in volts.values()]
                with self._ni("static write", ",".join(cfg.phys(c) for c in volts)):
                    task.write(data if len(data) > 1 else data[0], auto_start=True)
                    task.stop()
            finally:
                with self._ni("releasing the static task"):
                    task.close()
            self._last_static.update(volts)

    def static_volts(self, channel: str) -> float | None:
        """The last static voltage written to ``channel`` (None if never written)."""
        return self._last_static.get(channel)

    def read_piezo_um(self) -> float | None:
        """One on-demand reading of the piezo monitor (None without an AI channel)."""
        cfg = self.config
        if not cfg.piezo_ai_channel:
            return None
        with self._lock:
            if self._tasks:
                m = self.measured_piezo_um
                return None if m is None or not m.size else float(m[-1])
            task = self._task("bls-static-ai")
            try:
                ch = cfg.phys(cfg.piezo_ai_channel)
                with self._ni("adding AI channel", ch, f"range {list(cfg.piezo_ai_range_v)} V"):
                    task.ai_channels.add_ai_voltage_chan(ch, min_val=cfg.piezo_ai_range_v[0],
                                                         max_val=cfg.piezo_ai_range_v[1])
                with self._ni("reading the piezo monitor", ch):
                    v = float(task.read())
            finally:
                with self._ni("releasing the AI task"):
                    task.close()
        return float((v - cfg.piezo_ai_offset_v) * cfg.piezo_ai_um_per_volt)

    def _settled(self, z_um: float, since: float, tolerance_um: float) -> bool:
        measured = self.read_piezo_um()
        if measured is None:
            return self._clock() - since >= self.config.settle_s
        return abs(measured - z_um) <= max(tolerance_um, self.config.position_tolerance_um)

    # ------------------------------------------------------------------ planar
    def park(self, z_um: float, galvos: tuple[GalvoCalibration, ...]) -> None:
        cfg = self.config
        if len(galvos) != len(cfg.galvo_channels):
            raise ValueError(f"{len(galvos)} galvo calibration(s) for "
                             f"{len(cfg.galvo_channels)} galvo channel(s)")
        volts = {cfg.piezo_channel: float(cfg.piezo_volts(z_um))}
        for ch, cal in zip(cfg.galvo_channels, galvos, strict=True):
            volts[ch] = float(cal.volts(z_um))
        self.write_static(volts)
        self._park_z, self._parked_at = z_um, self._clock()

    def is_parked(self, tolerance_um: float = 0.1) -> bool:
        if self._park_z is None or self._parked_at is None or self.running:
            return False
        return self._settled(self._park_z, self._parked_at, tolerance_um)

    # ------------------------------------------------------------------ volumetric
    def start_volumes(self, scan: VolumeScan, n_volumes: int | None) -> float:
        cfg = self.config
        if n_volumes is not None and n_volumes < 1:
            raise ValueError("n_volumes must be >= 1 (or None for continuous)")
        if scan.sample_rate_hz > cfg.max_sample_rate_hz:
            raise ValueError(f"sample_rate_hz {scan.sample_rate_hz:g} exceeds the board's "
                             f"max_sample_rate_hz {cfg.max_sample_rate_hz:g} "
                             f"(NI board {cfg.device})")
        with self._lock:
            if self.running:
                raise RuntimeError("scan board is already running; stop it first")
            w = scan.waveforms()
            ao = ao_samples(cfg, w)
            self._preposition(ao[:, 0], float(w.piezo_um[0]))
            self._release()
            self._park_z = None
            try:
                self._arm(w, ao, n_volumes)
                t0 = self._start_all()
            except BaseException:
                self._release()
                raise
            log.info("NI board %s: %s volumes of %d samples at %g Hz started",
                     cfg.device, n_volumes or "continuous", w.n_samples, w.sample_rate_hz)
            return t0

    def _preposition(self, first: np.ndarray, z0: float) -> None:
        """Move piezo and galvos to the first sample and wait until the piezo is there,
        so the first volume starts without a transient."""
        cfg = self.config
        self.write_static({ch: float(v) for ch, v in zip(cfg.ao_channels, first, strict=True)})
        since = self._clock()
        deadline = time.monotonic() + cfg.preposition_timeout_s
        while not self._settled(z0, since, cfg.position_tolerance_um):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"NI board {cfg.device}: piezo did not reach {z0:.2f} um within "
                    f"{cfg.preposition_timeout_s:g} s before the scan (monitor on "
                    f"{cfg.phys(cfg.piezo_ai_channel)}; check piezo_ai_um_per_volt)")
            time.sleep(0.002)

    def _timing(self, task: Any, what: str, rate: float, samps: int, source: str = "") -> None:
        import nidaqmx.constants as c

        mode = c.AcquisitionType.CONTINUOUS if self._continuous else c.AcquisitionType.FINITE
        with self._ni(f"{what} sample clock", setting=f"sample_rate_hz={rate:g}"
                      + (f", source {source}" if source else "")):
            task.timing.cfg_samp_clk_timing(rate, source=source, sample_mode=mode,
                                            samps_per_chan=samps)

    def _regenerate(self, task: Any, what: str, buffer: int) -> None:
        import nidaqmx.constants as c

        with self._ni(f"{what} regeneration", setting=f"output buffer {buffer} samples"):
            task.out_stream.regen_mode = c.RegenerationMode.ALLOW_REGENERATION
            task.out_stream.output_buf_size = buffer

    def _slave_trigger(self, task: Any, what: str) -> None:
        src = self.config.terminal("ao/StartTrigger")
        with self._ni(f"{what} start trigger", setting=f"trigger source {src}"):
            task.triggers.start_trigger.cfg_dig_edge_start_trig(src)

    def _arm(self, w: ScanWaveforms, ao_data: np.ndarray, n_volumes: int | None) -> None:
        import nidaqmx.constants as c

        cfg = self.config
        n = w.n_samples
        rate = w.sample_rate_hz
        self._continuous = n_volumes is None
        self._n_samples, self._n_volumes, self._volumes_done = n, n_volumes, 0
        self._rate = rate
        total = n if n_volumes is None else n * n_volumes
        sample_clock = cfg.terminal("ao/SampleClock")

        # master: AO piezo + galvos
        ao = self._tasks["ao"] = self._task("bls-scan-ao")
        ranges = [cfg.piezo_range_v] + [cfg.galvo_range_v] * len(cfg.galvo_channels)
        for ch, (lo, hi) in zip(cfg.ao_channels, ranges, strict=True):
            with self._ni("adding AO channel", cfg.phys(ch), f"range [{lo}, {hi}] V"):
                ao.ao_channels.add_ao_voltage_chan(cfg.phys(ch), min_val=lo, max_val=hi)
        self._timing(ao, "AO", rate, total)
        self._regenerate(ao, "AO", n)
        if cfg.start_trigger_source:
            with self._ni("AO start trigger", setting=f"start_trigger_source="
                                                      f"{cfg.start_trigger_source}"):
                ao.triggers.start_trigger.cfg_dig_edge_start_trig(cfg.start_trigger_source)
        if cfg.export_start_trigger:
            with self._ni("exporting the AO start trigger",
                          setting=f"export_start_trigger={cfg.export_start_trigger}"):
                ao.export_signals.export_signal(c.Signal.START_TRIGGER, cfg.export_start_trigger)
        with self._ni("writing the AO waveforms", ",".join(cfg.phys(x) for x in cfg.ao_channels),
                      f"{n} samples per channel"):
            ao.write(ao_data, auto_start=False)

        # camera pulses
        if cfg.camera_output == "counter":
            delay, specs = counter_ticks(w)
            if delay < 2 or min(min(s) for s in specs) < 2:
                raise ValueError(
                    f"NI board {cfg.device}: camera pulses closer than 2 sample-clock ticks "
                    f"(counter {cfg.phys(cfg.camera_counter)}); raise skip_start or the "
                    "sample rate, or set camera_output = \"do\"")
            co = self._tasks["camera"] = self._task("bls-scan-camera")
            ch = cfg.phys(cfg.camera_counter)
            with self._ni("adding the camera counter", ch, f"source {sample_clock}"):
                co_chan = co.co_channels.add_co_pulse_chan_ticks(
                    ch, sample_clock, idle_state=c.Level.LOW, initial_delay=delay,
                    low_ticks=specs[0][1], high_ticks=specs[0][0])
            if cfg.camera_terminal:
                with self._ni("routing the camera counter", ch,
                              f"camera_terminal={cfg.camera_terminal}"):
                    co_chan.co_pulse_term = cfg.camera_terminal
            mode = c.AcquisitionType.CONTINUOUS if self._continuous else c.AcquisitionType.FINITE
            with self._ni("camera counter timing", ch, f"{len(specs)} pulses per volume"):
                co.timing.cfg_implicit_timing(
                    sample_mode=mode,
                    samps_per_chan=len(specs) * (1 if n_volumes is None else n_volumes))
            self._slave_trigger(co, "camera counter")
            from nidaqmx.types import CtrTick

            with self._ni("writing the camera pulse train", ch):
                co.write([CtrTick(high_tick=h, low_tick=lo) for h, lo in specs],
                         auto_start=False)
        else:
            do = self._tasks["camera"] = self._task("bls-scan-camera")
            line = cfg.phys(cfg.camera_do_line)
            with self._ni("adding the camera DO line", line):
                do.do_channels.add_do_chan(line)
            self._timing(do, "camera DO", rate, total, source=sample_clock)
            self._regenerate(do, "camera DO", n)
            self._slave_trigger(do, "camera DO")
            with self._ni("writing the camera waveform", line, f"{n} samples"):
                do.write(w.camera.astype(bool).tolist(), auto_start=False)

        # piezo monitor
        if cfg.piezo_ai_channel:
            ai = self._tasks["ai"] = self._task("bls-scan-ai")
            ch = cfg.phys(cfg.piezo_ai_channel)
            with self._ni("adding AI channel", ch, f"range {list(cfg.piezo_ai_range_v)} V"):
                ai.ai_channels.add_ai_voltage_chan(ch, min_val=cfg.piezo_ai_range_v[0],
                                                   max_val=cfg.piezo_ai_range_v[1])
            self._timing(ai, "AI", rate, total if n_volumes else 4 * n, source=sample_clock)
            self._slave_trigger(ai, "AI")

    def _start_all(self) -> float:
        """Arm the slaves, then start the master: one start edge starts them all."""
        for key in ("ai", "camera"):
            if key in self._tasks:
                with self._ni(f"arming the {key} task"):
                    self._tasks[key].start()
        with self._ni("starting the AO master task",
                      setting=self.config.start_trigger_source or "software start"):
            self._tasks["ao"].start()
        t0 = self._clock()
        if "ai" in self._tasks:
            self._reader_stop = threading.Event()
            self._reader = threading.Thread(target=self._read_ai, args=(self._tasks["ai"],),
                                            name="nidaq-piezo-ai", daemon=True)
            self._reader.start()
        return t0

    def _read_ai(self, task: Any) -> None:
        """Keep the last measured volume of the piezo monitor (um)."""
        import nidaqmx.errors

        cfg = self.config
        n, rate, reads = self._n_samples, self._rate, 0
        while not self._reader_stop.is_set() and (self._n_volumes is None
                                                  or reads < self._n_volumes):
            try:
                data = task.read(number_of_samples_per_channel=n, timeout=2 * n / rate + 1.0)
            except nidaqmx.errors.Error as exc:
                if not self._reader_stop.is_set():
                    log.warning("NI board %s: reading %s stopped: %s", cfg.device,
                                cfg.phys(cfg.piezo_ai_channel), str(exc).splitlines()[0])
                return
            reads += 1
            self.measured_piezo_um = (np.asarray(data, dtype=float)
                                      - cfg.piezo_ai_offset_v) * cfg.piezo_ai_um_per_volt

    # ------------------------------------------------------------------ state
    @property
    def running(self) -> bool:
        ao = self._tasks.get("ao")
        if ao is None:
            return False
        if self._continuous:
            return True
        try:
            with self._ni("polling the AO task"):
                return not bool(ao.is_task_done())
        except NidaqError:
            return False

    @property
    def volumes_done(self) -> int:
        ao = self._tasks.get("ao")
        if ao is not None and self._n_samples:
            try:
                with self._ni("reading samples generated"):
                    done = int(ao.out_stream.total_samp_per_chan_generated) // self._n_samples
                self._volumes_done = done
            except (NidaqError, TypeError, ValueError):
                pass
        if self._n_volumes is not None:
            return min(self._volumes_done, self._n_volumes)
        return self._volumes_done

    def stop(self) -> None:
        """Stop every task and release it (outputs hold their last value)."""
        with self._lock:
            if self._tasks:
                _ = self.volumes_done  # keep the final count before the tasks go
            self._release()

    def _release(self) -> None:
        self._reader_stop.set()
        tasks, self._tasks = self._tasks, {}
        for key in ("ao", "camera", "ai"):  # master first: slaves stop getting clocks
            task = tasks.get(key)
            if task is None:
                continue
            for what, call in (("stopping", task.stop), ("releasing", task.close)):
                try:
                    with self._ni(f"{what} the {key} task"):
                        call()
                except NidaqError:
                    pass  # logged; keep releasing the others
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None
