"""Scan board interface (AO waveforms for piezo and galvos, camera pulses) and the
simulated NI-style board that plays them on the simulated microscope."""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod

import numpy as np

from beamline_ls.sim.microscope import SimMicroscope
from beamline_ls.waveforms import GalvoCalibration, ScanWaveforms, VolumeScan

log = logging.getLogger(__name__)


class ScanBoardDriver(ABC):
    """What every scan-board backend provides."""

    #: Time for the piezo to settle within ~0.5 % after a flyback; plans skip enough
    #: plane slots at the start of each volume to cover it.
    flyback_settle_s: float = 0.04

    @abstractmethod
    def start_volumes(self, scan: VolumeScan, n_volumes: int | None) -> float:
        """Arm and start a volumetric scan; return its absolute start time."""

    def prepare_volumes(self, scan: VolumeScan) -> None:
        """Get ready for ``start_volumes(scan, ...)`` ahead of time, so that this work
        overlaps the rest of a run's set-up. This default only validates the waveforms
        (a board that does not override it does all the work in ``start_volumes``)."""
        scan.waveforms()

    @abstractmethod
    def park(self, z_um: float, galvos: tuple[GalvoCalibration, ...]) -> None:
        """Planar mode: hold the piezo at ``z_um``, galvos at their calibrated voltage."""

    @abstractmethod
    def is_parked(self, tolerance_um: float = 0.1) -> bool:
        """True once the focal plane has settled at the parked position."""

    @abstractmethod
    def stop(self) -> None: ...

    def stop_after_volume(self, timeout_s: float = 120.0) -> int:
        """Let the volume in progress finish, then stop: a pause at a volume boundary.
        Returns the volumes done. This default waits for ``volumes_done`` to step and
        stops at once, so the next volume's start slots (the flyback settle, which
        plans skip) pass unexposed; a board that can stop on the boundary itself
        overrides it."""
        start = self.volumes_done
        deadline = time.monotonic() + timeout_s
        while self.running and self.volumes_done == start:
            if time.monotonic() > deadline:
                break
            time.sleep(0.0005)
        self.stop()
        return self.volumes_done

    @property
    @abstractmethod
    def running(self) -> bool: ...

    @property
    @abstractmethod
    def volumes_done(self) -> int: ...


class SimScanBoard(ScanBoardDriver):
    """Plays waveforms onto the simulated piezo and galvos; camera pulses go to the
    simulated trigger line. Pulses are scheduled one volume ahead by a feeder thread,
    which is how a regenerating AO task with a counter output behaves."""

    ARM_DELAY_S = 0.01
    PREPOSITION_TOLERANCE_UM = 0.05

    def __init__(self, microscope: SimMicroscope):
        self.m = microscope
        self.flyback_settle_s = 5 * microscope.piezo_tau_s
        self._scan: VolumeScan | None = None
        self._t0 = 0.0
        self._n_volumes: int | None = None
        self._stopped_at: float | None = None
        self._volumes_at_stop: int | None = None  # set by stop_after_volume
        self._stop = threading.Event()
        self._feeder: threading.Thread | None = None
        self._park_z: float | None = None
        self._prepared: tuple[VolumeScan, ScanWaveforms] | None = None

    def prepare_volumes(self, scan: VolumeScan) -> None:
        """Compute the waveforms and put the focal plane where the trajectory starts
        (returns once it has settled there); a following ``start_volumes`` with the same
        scan then only has to start the outputs."""
        if self.running:
            raise RuntimeError("scan board is already running; stop it first")
        self.stop()
        w = scan.waveforms()
        self._park_z = None
        self._preposition(scan)
        self._prepared = (scan, w)

    def _still_prepared(self, scan: VolumeScan) -> ScanWaveforms | None:
        """The prepared waveforms if ``scan`` is the prepared one and nothing has moved
        the focal plane away from the trajectory start since."""
        if self._prepared is None or self._prepared[0] != scan:
            return None
        z0 = float(scan.desired_z_um(np.array([0.0]))[0])
        t = self.m.clock.now()
        if abs(self.m.piezo.command(t) - z0) > 1e-9 or not self.m.piezo.is_settled(
                t, self.PREPOSITION_TOLERANCE_UM):
            return None
        for g, cal in zip(self.m.galvos, scan.galvos, strict=True):
            if abs(g.command(t) - float(cal.volts(z0))) > 1e-9:
                return None
        return self._prepared[1]

    def start_volumes(self, scan: VolumeScan, n_volumes: int | None) -> float:
        if n_volumes is not None and n_volumes < 1:
            raise ValueError("n_volumes must be >= 1 (or None for continuous)")
        if self.running:
            raise RuntimeError("scan board is already running; stop it first")
        w = self._still_prepared(scan)
        if w is None:
            self.prepare_volumes(scan)
            w = self._prepared[1]
        self._prepared = None
        t0 = self.m.clock.now() + self.ARM_DELAY_S
        self.m.piezo.command_waveform(t0, w.piezo_um, w.sample_rate_hz, n_volumes)
        for g, samples in zip(self.m.galvos, w.galvo_v, strict=True):
            g.command_waveform(t0, samples, w.sample_rate_hz, n_volumes)
        self._scan, self._t0, self._n_volumes = scan, t0, n_volumes
        self._stopped_at = None
        self._volumes_at_stop = None
        self._park_z = None
        self._stop.clear()
        edges = w.rising_edges_s()
        self._feeder = threading.Thread(
            target=self._feed, args=(edges,), name="sim-scanboard", daemon=True
        )
        self._feeder.start()
        log.debug("volumetric scan armed at %.6f: %s", t0, scan.as_dict())
        return t0

    def _preposition(self, scan: VolumeScan) -> None:
        """Put the focal plane where the trajectory starts and wait until it is there,
        so the first volume is as good as the later ones (no start-up transient)."""
        z0 = float(scan.desired_z_um(np.array([0.0]))[0])
        t = self.m.clock.now()
        self._step_piezo(t, z0)
        for g, cal in zip(self.m.galvos, scan.galvos, strict=True):
            g.command_constant(t, float(cal.volts(z0)))
        deadline = t + 20 * self.m.piezo_tau_s + 0.05
        while not self.m.piezo.is_settled(self.m.clock.now(), self.PREPOSITION_TOLERANCE_UM):
            if self.m.clock.now() > deadline:
                raise RuntimeError(f"piezo did not settle at {z0:.2f} um before the scan")
            self.m.clock.sleep_until(self.m.clock.now() + 0.002)

    def _step_piezo(self, t: float, z: float) -> None:
        """Move the piezo to ``z`` from absolute time ``t`` with a shaped command: twice
        the step (within travel) until a first-order stage is exactly at ``z``, then
        ``z``. A plain step takes ~7 tau to settle within tolerance (~58 ms for a
        flyback-sized 80 um move); the shaped one takes tau * ln 2 (~6 ms) -- the same
        feed-forward idea as the scan waveforms' piezo lead, applied to a step."""
        piezo = self.m.piezo
        y0 = float(piezo.position(t)[0])
        lo, hi = piezo.travel
        drive = float(np.clip(2 * z - y0, lo, hi))
        if piezo.tau_s <= 0 or abs(drive - z) < 1e-9 or abs(y0 - z) < 1e-9:
            piezo.command_constant(t, z)
            return
        # first order towards `drive`: y(t1) = z  <=>  t1 = tau * ln((drive - y0) / (drive - z))
        t1 = piezo.tau_s * float(np.log((drive - y0) / (drive - z)))
        piezo.command_constant(t, drive)
        piezo.command_constant(t + t1, z)

    def _feed(self, edges: np.ndarray) -> None:
        assert self._scan is not None
        period = self._scan.period_s
        v = 0
        while not self._stop.is_set() and (self._n_volumes is None or v < self._n_volumes):
            t_volume = self._t0 + v * period
            # keep one volume of pulses ahead of time
            if not self.m.clock.sleep_until(t_volume - period, self._stop):
                break
            self.m.camera_trigger.schedule(t_volume + edges)
            v += 1

    #: a pause ends at the first volume boundary at least this far ahead, so that the
    #: next volume's pulses are withdrawn before the first of them could fire
    PAUSE_MARGIN_S = 0.05

    def stop_after_volume(self, timeout_s: float = 120.0) -> int:
        """End with the volume in progress: nothing of the next one is output (its
        camera pulses are withdrawn, piezo and galvos hold from the boundary on)."""
        if not self.running:
            self.stop()
            return self.volumes_done
        assert self._scan is not None
        self._stop.set()  # the feeder schedules no further volume (it is one ahead)
        if self._feeder is not None:
            self._feeder.join(timeout=5)
            self._feeder = None
        period = self._scan.period_s
        now = self.m.clock.now()
        end = int((now - self._t0) // period) + 1
        if self._t0 + end * period - now < self.PAUSE_MARGIN_S:
            end += 1  # too close to withdraw the next volume's pulses in time
        if self._n_volumes is not None:
            end = min(end, self._n_volumes)
        boundary = self._t0 + end * period
        self.m.camera_trigger.cancel_after(boundary - 1e-9)
        if self.m.clock.now() >= boundary:
            log.warning("scan board pause came %.1f ms late: part of volume %d may have "
                        "been exposed", 1e3 * (self.m.clock.now() - boundary), end + 1)
        for actuator in (self.m.piezo, *self.m.galvos):
            actuator.hold(boundary)
        self._n_volumes = end
        self.m.clock.sleep_until(boundary)
        self._stopped_at = boundary
        self._volumes_at_stop = end  # exact: times near 1.7e9 s round at ~1e-7 s
        return end

    def park(self, z_um: float, galvos: tuple[GalvoCalibration, ...]) -> None:
        if self.running:
            raise RuntimeError("scan board is running a volumetric scan; stop it first")
        self._prepared = None
        t = self.m.clock.now()
        self._step_piezo(t, z_um)
        for g, cal in zip(self.m.galvos, galvos, strict=True):
            g.command_constant(t, float(cal.volts(z_um)))
        self._park_z = z_um

    def is_parked(self, tolerance_um: float = 0.1) -> bool:
        return self._park_z is not None and self.m.piezo.is_settled(self.m.clock.now(),
                                                                     tolerance_um)

    def stop(self) -> None:
        self._stop.set()
        if self._feeder is not None:
            self._feeder.join(timeout=5)
            self._feeder = None
        if self._scan is not None and self._stopped_at is None:
            t = self.m.clock.now()
            if self.running_at(t):
                self.m.piezo.hold(t)
                for g in self.m.galvos:
                    g.hold(t)
                self.m.camera_trigger.cancel_after(t)
            self._stopped_at = t

    def running_at(self, t: float) -> bool:
        if self._scan is None or self._stopped_at is not None:
            return False
        if self._n_volumes is None:
            return True
        return t < self._t0 + self._n_volumes * self._scan.period_s

    @property
    def running(self) -> bool:
        return self.running_at(self.m.clock.now())

    @property
    def volumes_done(self) -> int:
        if self._scan is None:
            return 0
        if self._stopped_at is not None and self._volumes_at_stop is not None:
            return self._volumes_at_stop
        end = self._stopped_at if self._stopped_at is not None else self.m.clock.now()
        done = int(max(0.0, end - self._t0) // self._scan.period_s)
        return done if self._n_volumes is None else min(done, self._n_volumes)
