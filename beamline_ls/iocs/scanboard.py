"""Scan board PVs: waveform parameters, calibration, start/stop, progress.

A put to ``Start`` validates the parameters, computes the waveforms and arms the
board; in planar mode it completes only when the focal plane has settled, so a
client waiting on put completion knows the hardware is ready.

A put of a request id (any nonzero integer) to ``Prepare`` (volumetric mode) does the
slow part of that ahead of time -- waveforms, and moving the focal plane to where the
trajectory starts -- in the background: the put completes at once, and when the board
is ready (or has refused) ``PrepareState_RBV`` says so and ``PreparedId_RBV`` echoes the
id. Why not put completion: while a put is in progress caproto delays every read on
that client's circuit by up to 1 ms, and a client overlapping the ~60 ms preparation
with its other set-up reads dozens of PVs. A later ``Start`` waits for a preparation in
progress and, with the same parameters, only starts the outputs.

``Pause`` (put 1) lets the volume in progress finish and stops there; its put completes
once the board has stopped, and ``Paused_RBV`` is 1. ``Resume`` (put 1) starts the
volumes still to do with the same waveforms; ``VolumesDone_RBV`` keeps counting across
the pause. This is what a RunEngine pause (one Ctrl-C) does to a volumetric scan.

The board moves the focal plane itself (its piezo output), not through the piezo's motor
record, so it keeps to that record's limits on its own: ``ZLowLimit_RBV`` and
``ZHighLimit_RBV`` follow the piezo's dial limits (``DLLM``/``DHLM``, the same
coordinates as ``ZStart``/``ZStop``/``PlaneZ``), and a scan or plane that would take the
focal plane outside them is refused by ``Prepare``, ``Start`` and ``Resume`` with the
reason. Without this, a limit set to protect the sample held for moves of the piezo
and not for the scans.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from caproto import ChannelType
from caproto.server import pvproperty

from beamline_ls.hardware.scanboard import ScanBoardDriver
from beamline_ls.iocs.alarms import RecordAlarms
from beamline_ls.iocs.autosave import read_saved, restore_pvs, write_json_atomic
from beamline_ls.iocs.blocking import DeviceWorker
from beamline_ls.waveforms import (
    PIEZO_TRAVEL_UM,
    SCAN_RANGE_WHAT,
    GalvoCalibration,
    VolumeScan,
    check_focus_limits,
)

log = logging.getLogger(__name__)

Z_LIMITS = dict(lower_ctrl_limit=PIEZO_TRAVEL_UM[0], upper_ctrl_limit=PIEZO_TRAVEL_UM[1])


def _float(name, value, units, lo, hi, precision=3, doc="", put=None):
    return pvproperty(name=name, value=value, units=units, precision=precision,
                      lower_ctrl_limit=lo, upper_ctrl_limit=hi, doc=doc, put=put)


async def _remember(group: ScanBoardGroup, instance, value):
    """Putter of the calibration PVs: accept the value, then save every one of them."""
    await group.remember(instance.pvname[len(group.prefix):], value)
    return value


#: calibration PVs the IOC keeps across restarts (``autosave_dir/scanboard.json``)
AUTOSAVED = ("Galvo1Offset", "Galvo1Slope", "Galvo2Offset", "Galvo2Slope", "PiezoLag")


class ScanBoardGroup(RecordAlarms):
    mode = pvproperty(name="Mode", value="Volumetric", dtype=ChannelType.ENUM,
                      enum_strings=["Volumetric", "Planar"])
    volume_rate = _float("VolumeRate", 5.0, "Hz", 0.01, 100.0, doc="volumes per second")
    num_planes = pvproperty(name="NumPlanes", value=20, lower_ctrl_limit=2, upper_ctrl_limit=1000)
    z_start = _float("ZStart", 10.0, "um", *PIEZO_TRAVEL_UM)
    z_stop = _float("ZStop", 80.0, "um", *PIEZO_TRAVEL_UM)
    plane_z = _float("PlaneZ", 50.0, "um", *PIEZO_TRAVEL_UM, doc="planar-mode focal plane")
    skip_start = pvproperty(name="SkipStart", value=2, lower_ctrl_limit=0, upper_ctrl_limit=50)
    skip_end = pvproperty(name="SkipEnd", value=1, lower_ctrl_limit=0, upper_ctrl_limit=50)
    exposure = _float("ExposureTime", 0.004, "s", 1e-5, 10.0, precision=6)
    sample_rate = _float("SampleRate", 20_000.0, "Hz", 1_000.0, 2_000_000.0, precision=0)
    piezo_lag = _float("PiezoLag", 0.008, "s", 0.0, 0.1, precision=5,
                       doc="feed-forward lead of the piezo command", put=_remember)
    galvo1_offset = _float("Galvo1Offset", 0.0, "V", -10.0, 10.0, precision=5, put=_remember)
    galvo1_slope = _float("Galvo1Slope", 0.02, "V/um", -1.0, 1.0, precision=6, put=_remember)
    galvo2_offset = _float("Galvo2Offset", 0.0, "V", -10.0, 10.0, precision=5, put=_remember)
    galvo2_slope = _float("Galvo2Slope", 0.02, "V/um", -1.0, 1.0, precision=6, put=_remember)
    num_volumes = pvproperty(name="NumVolumes", value=1, lower_ctrl_limit=0,
                             upper_ctrl_limit=10_000_000, doc="0 = until stopped")
    prepare = pvproperty(name="Prepare", value=0,
                         doc="put a request id: compute waveforms and pre-position")
    prepare_state = pvproperty(name="PrepareState_RBV", value="Idle", dtype=ChannelType.ENUM,
                               enum_strings=["Idle", "Preparing", "Ready", "Failed"],
                               read_only=True)
    prepared_id = pvproperty(name="PreparedId_RBV", value=0, read_only=True,
                             doc="request id of the last finished Prepare")
    start = pvproperty(name="Start", value=0, doc="put 1 to arm and start")
    stop = pvproperty(name="Stop", value=0, doc="put 1 to stop")
    pause = pvproperty(name="Pause", value=0,
                       doc="put 1: stop at the end of the volume in progress")
    resume = pvproperty(name="Resume", value=0, doc="put 1: go on with the volumes left")
    paused = pvproperty(name="Paused_RBV", value=0, read_only=True)
    running = pvproperty(name="Running_RBV", value=0, read_only=True)
    volumes_done = pvproperty(name="VolumesDone_RBV", value=0, read_only=True)
    period = pvproperty(name="Period_RBV", value=0.0, units="s", precision=6, read_only=True)
    plane_interval = pvproperty(name="PlaneInterval_RBV", value=0.0, units="s", precision=6,
                                read_only=True)
    start_time = pvproperty(name="StartTime_RBV", value=0.0, units="s", precision=6,
                            read_only=True, doc="absolute start time of the last scan")
    flyback_settle = pvproperty(name="FlybackSettle_RBV", value=0.0, units="s", precision=4,
                                read_only=True, doc="piezo settle time after a flyback")
    message = pvproperty(name="Message_RBV", value="", dtype=ChannelType.CHAR, max_length=256,
                         string_encoding="utf-8", read_only=True)
    z_low_limit = pvproperty(name="ZLowLimit_RBV", value=PIEZO_TRAVEL_UM[0], units="um",
                             precision=3, read_only=True,
                             doc="the piezo's low dial limit: scans stay above it")
    z_high_limit = pvproperty(name="ZHighLimit_RBV", value=PIEZO_TRAVEL_UM[1], units="um",
                              precision=3, read_only=True,
                              doc="the piezo's high dial limit: scans stay below it")

    POLL_RUNNING_S = 0.005
    POLL_IDLE_S = 0.02

    def __init__(self, *args, driver: ScanBoardDriver, autosave: Path | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.driver = driver
        self.autosave = autosave
        # the piezo motor record's dial limits: set by the IOC that serves both (the
        # piezo's group is built after this one, from its calibrations)
        self.z_limits: Callable[[], tuple[float, float]] = lambda: PIEZO_TRAVEL_UM
        self._restoring = False
        self._worker = DeviceWorker("scanboard")
        self._preparing: asyncio.Task | None = None
        self._volume_base = 0  # volumes done before the latest resume

    def calibrations(self) -> tuple[GalvoCalibration, GalvoCalibration]:
        return (
            GalvoCalibration(self.galvo1_offset.value, self.galvo1_slope.value),
            GalvoCalibration(self.galvo2_offset.value, self.galvo2_slope.value),
        )

    def checked_volume_scan(self) -> VolumeScan:
        """The scan the PVs describe, refused if it leaves the piezo's limits."""
        scan = self.volume_scan()
        check_focus_limits(*scan.desired_range_um, self.z_limits(), SCAN_RANGE_WHAT)
        return scan

    def volume_scan(self) -> VolumeScan:
        return VolumeScan(
            volume_rate_hz=self.volume_rate.value,
            n_planes=int(self.num_planes.value),
            z_start_um=self.z_start.value,
            z_stop_um=self.z_stop.value,
            exposure_s=self.exposure.value,
            skip_start=int(self.skip_start.value),
            skip_end=int(self.skip_end.value),
            sample_rate_hz=self.sample_rate.value,
            piezo_lag_s=self.piezo_lag.value,
            galvos=self.calibrations(),
        )

    @prepare.putter
    async def prepare(self, instance, value):
        request = int(value)
        if not request:
            return 0
        if self._preparing is not None and not self._preparing.done():
            await self._preparing  # one preparation at a time, in request order
        await self.prepare_state.write("Preparing")
        self._preparing = asyncio.create_task(self._prepare(request))
        return request

    async def _prepare(self, request: int) -> None:
        """Prepare the board in its worker thread; publish the outcome, then the id."""
        try:
            if self.mode.value != "Volumetric":
                raise ValueError("Prepare is for volumetric scans (Mode is "
                                 f"{self.mode.value!r})")
            scan = self.checked_volume_scan()
            await self._worker.call(self.driver.prepare_volumes, scan)
            await self.message.write(f"prepared: focal plane at the start of "
                                     f"{scan.n_planes} planes at {scan.volume_rate_hz} Hz")
            await self.prepare_state.write("Ready")
        except Exception as exc:  # a background task: its outcome must reach the client
            await self.message.write(f"prepare refused: {exc}"[:255])
            if isinstance(exc, (ValueError, RuntimeError)):
                log.error("scan board prepare refused: %s", exc)
            else:
                log.exception("scan board prepare failed")
            await self.prepare_state.write("Failed")
        await self.prepared_id.write(request)

    @start.putter
    async def start(self, instance, value):
        if not value:
            return 0
        if self._preparing is not None and not self._preparing.done():
            await self._preparing
        try:
            if self.mode.value == "Planar":
                z = self.plane_z.value
                check_focus_limits(z, z, self.z_limits(), "the focal plane")
                await self._worker.call(self.driver.park, z, self.calibrations())
                await self.message.write(f"planar at {z:.3f} um")
                for _ in range(500):
                    if await self._worker.call(self.driver.is_parked):
                        break
                    await asyncio.sleep(0.005)
                else:
                    raise RuntimeError(
                        f"focal plane did not settle at {self.plane_z.value:.3f} um in 2.5 s")
            else:
                scan = self.checked_volume_scan()
                n = int(self.num_volumes.value) or None
                t0 = await self._worker.call(self.driver.start_volumes, scan, n)
                self._volume_base = 0
                await self.volumes_done.write(0)  # this scan's count, from Running on
                await self.paused.write(0)
                await self.period.write(scan.period_s)
                await self.plane_interval.write(scan.plane_interval_s)
                await self.start_time.write(t0)
                await self.running.write(1)
                await self.message.write(
                    f"scanning {n or 'continuous'} volumes of {scan.n_planes} planes "
                    f"at {scan.volume_rate_hz} Hz"
                )
        except (ValueError, RuntimeError) as exc:
            await self.message.write(f"start refused: {exc}"[:255])
            log.error("scan board start refused: %s", exc)
            raise
        return 0

    @stop.putter
    async def stop(self, instance, value):
        if value:
            await self._worker.call(self.driver.stop)
            await self.running.write(0)
            await self.paused.write(0)
            await self.message.write("stopped")
        return 0

    def _volumes_done(self) -> int:
        return self._volume_base + self.driver.volumes_done

    @pause.putter
    async def pause(self, instance, value):
        if not value or self.paused.value or not self.driver.running \
                or self.mode.value != "Volumetric":
            return 0
        await self._worker.call(self.driver.stop_after_volume)
        done = self._volumes_done()
        await self.volumes_done.write(done)
        await self.running.write(0)
        await self.paused.write(1)
        total = int(self.num_volumes.value)
        await self.message.write(f"paused after volume {done} of {total or 'continuous'}")
        log.info("scan board paused after volume %d", done)
        return 0

    @resume.putter
    async def resume(self, instance, value):
        if not value or not self.paused.value:
            return 0
        done = self._volumes_done()
        total = int(self.num_volumes.value)
        left = None if total == 0 else total - done
        if left == 0:
            await self.paused.write(0)
            await self.message.write(f"all {total} volumes done; nothing to resume")
            return 0
        try:
            t0 = await self._worker.call(self.driver.start_volumes,
                                         self.checked_volume_scan(), left)
        except (ValueError, RuntimeError) as exc:
            await self.message.write(f"resume refused: {exc}"[:255])
            log.error("scan board resume refused: %s", exc)
            raise
        self._volume_base = done
        await self.start_time.write(t0)
        await self.paused.write(0)
        await self.running.write(1)
        await self.message.write(f"resumed at volume {done + 1} of {total or 'continuous'}")
        return 0

    async def remember(self, name: str, value: float) -> None:
        """Save the calibration PVs with ``name`` at its new ``value`` (a failure to
        save is logged; the value is in use either way)."""
        if self.autosave is None or self._restoring:
            return
        values = {n: float(self.pvdb[self.prefix + n].value) for n in AUTOSAVED}
        values[name] = float(value)
        try:
            await asyncio.to_thread(write_json_atomic, self.autosave, values)
        except OSError as exc:
            log.error("scan board: could not save the calibration to %s: %s",
                      self.autosave, exc)

    async def _restore(self) -> None:
        """The calibration saved before the last restart, value by value (one the
        limits now refuse is skipped, with a warning)."""
        saved = read_saved(self.autosave, "scan board calibration")
        if not saved:
            return
        self._restoring = True
        try:
            await restore_pvs(self.pvdb, self.prefix, AUTOSAVED, saved, "scan board")
        finally:
            self._restoring = False
        log.info("scan board calibration restored from %s", self.autosave)

    @running.startup
    async def running(self, instance, async_lib):
        await self._restore()
        await self.flyback_settle.write(self.driver.flyback_settle_s)
        config = getattr(self.driver, "config", None)  # a real board's own sample rates
        if config is not None and getattr(config, "sample_rate_hz", None):
            hi = float(getattr(config, "max_sample_rate_hz", 2_000_000.0))
            await self.sample_rate.write_metadata(upper_ctrl_limit=hi)
            await self.sample_rate.write(float(config.sample_rate_hz), verify_value=False)
        while True:
            running = int(self.driver.running)
            if running != instance.value:
                await instance.write(running)
            done = self._volumes_done()
            if done != self.volumes_done.value:
                await self.volumes_done.write(done)
            z_lo, z_hi = self.z_limits()
            if z_lo != self.z_low_limit.value:
                await self.z_low_limit.write(z_lo)
            if z_hi != self.z_high_limit.value:
                await self.z_high_limit.write(z_hi)
            # clients detect the end of a scan from these PVs: look often while running
            await asyncio.sleep(self.POLL_RUNNING_S if running else self.POLL_IDLE_S)
