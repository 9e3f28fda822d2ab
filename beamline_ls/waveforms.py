"""Scan waveforms for volumetric and planar light-sheet acquisition.

Pure functions of the scan settings, shared by every scan-board backend (simulated or
NI) so that what the simulator plays is exactly what real hardware would be sent.

Timing of one volume (period ``T = 1/volume_rate``) is split into
``n_slots = skip_start + n_planes + skip_end`` equal slots. The desired focal-plane
trajectory flies back at the start of the period and holds half a plane before the
first plane during the ``skip_start`` slots (the piezo settles there), then ramps
linearly through the plane positions to the end of the period (overshooting the z
range by the ``skip_end`` slots). The piezo gets the inverse of its first-order model
as feed-forward, ``u = d + tau * dd/dt``, so once the flyback has settled the focal
plane follows the ramp exactly; vertical galvos follow the desired trajectory through
each beam's linear calibration ``V = offset + slope * z``; the camera gets one pulse
per stored plane, placed so the exposure is centred on the plane.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PIEZO_TRAVEL_UM = (0.0, 400.0)
GALVO_RANGE_V = (-10.0, 10.0)


def check_focus_limits(lo: float, hi: float, limits: tuple[float, float], what: str) -> None:
    """Raise ValueError when the focal plane would go from ``lo`` to ``hi`` um outside
    ``limits``, the piezo's dial limits (its motor record's ``DLLM``/``DHLM``). Used by
    the scan board, which moves the piezo itself, and by plans, to refuse before
    anything moves."""
    z_lo, z_hi = limits
    if lo < z_lo - 1e-9 or hi > z_hi + 1e-9:
        where = f"at {lo:.3f} um" if lo == hi else f"from {lo:.3f} to {hi:.3f} um"
        raise ValueError(f"{what} {where}, outside the piezo's limits [{z_lo:g}, {z_hi:g}] "
                         "um (its DLLM/DHLM)")


#: what the scan board's focal-plane range covers, for messages
SCAN_RANGE_WHAT = ("the scan (z range, half a plane before it and the skipped plane(s) "
                   "after it) takes the focal plane")


@dataclass(frozen=True)
class GalvoCalibration:
    """Linear map from focal-plane position (um) to a vertical galvo voltage (V)."""

    offset_v: float = 0.0
    slope_v_per_um: float = 0.02

    def volts(self, z_um: np.ndarray | float) -> np.ndarray | float:
        return self.offset_v + self.slope_v_per_um * np.asarray(z_um)

    @classmethod
    def fit(cls, z_um: np.ndarray, volts: np.ndarray) -> GalvoCalibration:
        """Least-squares calibration from >= 3 manually focused (z, V) points."""
        z = np.asarray(z_um, dtype=float)
        v = np.asarray(volts, dtype=float)
        if z.size < 3 or z.size != v.size:
            raise ValueError("a galvo calibration needs at least 3 (z, volts) pairs")
        slope, offset = np.polyfit(z, v, 1)
        return cls(offset_v=float(offset), slope_v_per_um=float(slope))


@dataclass(frozen=True)
class VolumeScan:
    """Settings of a volumetric scan, validated on construction.

    Parameters
    ----------
    volume_rate_hz: volumes per second.
    n_planes: stored planes per volume (>= 2).
    z_start_um, z_stop_um: focal-plane positions of the first and last stored plane.
    exposure_s: camera exposure, used to centre each exposure on its plane.
    skip_start, skip_end: plane slots without a camera pulse at each end of the volume.
    sample_rate_hz: analog-output sample rate.
    piezo_lag_s: time constant of the piezo's first-order response, used for the
        feed-forward (0 disables it).
    camera_pulse_s: width of each camera trigger pulse.
    galvos: calibration of each vertical galvo (one per illumination beam).
    """

    volume_rate_hz: float
    n_planes: int
    z_start_um: float
    z_stop_um: float
    exposure_s: float
    skip_start: int = 2
    skip_end: int = 1
    sample_rate_hz: float = 20_000.0
    piezo_lag_s: float = 0.0
    camera_pulse_s: float = 1e-4
    galvos: tuple[GalvoCalibration, ...] = field(
        default_factory=lambda: (GalvoCalibration(), GalvoCalibration())
    )

    def __post_init__(self) -> None:
        if not 0.01 <= self.volume_rate_hz <= 100:
            raise ValueError(f"volume_rate_hz must be in [0.01, 100], got {self.volume_rate_hz}")
        if not 2 <= self.n_planes <= 1000:
            raise ValueError(f"n_planes must be in [2, 1000], got {self.n_planes}")
        if self.skip_start < 0 or self.skip_end < 0:
            raise ValueError("skip_start and skip_end must be >= 0")
        if not 1_000 <= self.sample_rate_hz <= 2_000_000:
            raise ValueError(f"sample_rate_hz must be in [1e3, 2e6], got {self.sample_rate_hz}")
        if self.exposure_s <= 0 or self.exposure_s >= self.plane_interval_s:
            raise ValueError(
                f"exposure_s must be in (0, {self.plane_interval_s:.6g}) s "
                f"(the plane interval), got {self.exposure_s}"
            )
        if self.samples_per_volume < 4 * self.n_slots:
            raise ValueError(
                f"sample_rate_hz {self.sample_rate_hz} gives fewer than 4 samples per plane"
            )
        lo, hi = self.desired_range_um
        if lo < PIEZO_TRAVEL_UM[0] or hi > PIEZO_TRAVEL_UM[1]:
            raise ValueError(
                f"scan from {lo:.2f} to {hi:.2f} um (z range plus half a plane before and "
                f"{self.skip_end} skipped plane(s) after) leaves the piezo travel "
                f"{PIEZO_TRAVEL_UM} um"
            )

    @property
    def n_slots(self) -> int:
        return self.skip_start + self.n_planes + self.skip_end

    @property
    def samples_per_volume(self) -> int:
        return int(round(self.sample_rate_hz / self.volume_rate_hz))

    @property
    def period_s(self) -> float:
        """Actual volume period, an integer number of samples."""
        return self.samples_per_volume / self.sample_rate_hz

    @property
    def plane_interval_s(self) -> float:
        return 1.0 / (self.volume_rate_hz * self.n_slots)

    @property
    def plane_step_um(self) -> float:
        return (self.z_stop_um - self.z_start_um) / (self.n_planes - 1)

    @property
    def plane_z_um(self) -> np.ndarray:
        """Focal-plane position of each stored plane."""
        return self.z_start_um + self.plane_step_um * np.arange(self.n_planes)

    @property
    def desired_range_um(self) -> tuple[float, float]:
        n = self.samples_per_volume
        z = self.desired_z_um(np.arange(n) / self.sample_rate_hz)
        return float(z.min()), float(z.max())

    @property
    def ramp_start_s(self) -> float:
        """Time within the period at which the ramp through the planes begins."""
        return self.skip_start * self.period_s / self.n_slots

    @property
    def ramp_slope_um_per_s(self) -> float:
        return self.plane_step_um / (self.period_s / self.n_slots)

    def desired_z_um(self, t: np.ndarray) -> np.ndarray:
        """Desired focal-plane position at time ``t`` (s) since the volume start."""
        slot = self.period_s / self.n_slots
        t_in = np.mod(np.asarray(t, dtype=float), self.period_s)
        centre0 = (self.skip_start + 0.5) * slot
        ramp = self.z_start_um + (t_in - centre0) / slot * self.plane_step_um
        hold = self.z_start_um - 0.5 * self.plane_step_um
        return np.where(t_in < self.ramp_start_s, hold, ramp)

    def piezo_command_um(self, t: np.ndarray) -> np.ndarray:
        """Feed-forward piezo command: desired position plus tau times its slope."""
        t_in = np.mod(np.asarray(t, dtype=float), self.period_s)
        ramping = t_in >= self.ramp_start_s
        return self.desired_z_um(t_in) + self.piezo_lag_s * self.ramp_slope_um_per_s * ramping

    def pulse_times_s(self) -> np.ndarray:
        """Camera pulse times within one volume, on the sample grid."""
        slot = self.period_s / self.n_slots
        centres = (self.skip_start + 0.5 + np.arange(self.n_planes)) * slot
        starts = centres - self.exposure_s / 2
        return np.round(starts * self.sample_rate_hz) / self.sample_rate_hz

    def waveforms(self) -> ScanWaveforms:
        """Sample-accurate waveforms of one volume, played cyclically by the board."""
        n = self.samples_per_volume
        t = np.arange(n) / self.sample_rate_hz
        piezo = np.clip(self.piezo_command_um(t), *PIEZO_TRAVEL_UM)
        desired = self.desired_z_um(t)
        galvo = np.stack([cal.volts(desired) for cal in self.galvos]).astype(float)
        if galvo.min() < GALVO_RANGE_V[0] or galvo.max() > GALVO_RANGE_V[1]:
            raise ValueError(
                f"galvo waveform spans {galvo.min():.3f}..{galvo.max():.3f} V, outside "
                f"{GALVO_RANGE_V} V: check the calibration"
            )
        camera = np.zeros(n, dtype=bool)
        width = max(1, int(round(self.camera_pulse_s * self.sample_rate_hz)))
        for i in np.round(self.pulse_times_s() * self.sample_rate_hz).astype(int):
            camera[i : i + width] = True
        return ScanWaveforms(self.sample_rate_hz, piezo, galvo, camera)

    def as_dict(self) -> dict[str, object]:
        """Flat description for run metadata."""
        return {
            "volume_rate_hz": self.volume_rate_hz,
            "n_planes": self.n_planes,
            "z_start_um": self.z_start_um,
            "z_stop_um": self.z_stop_um,
            "exposure_s": self.exposure_s,
            "skip_start": self.skip_start,
            "skip_end": self.skip_end,
            "sample_rate_hz": self.sample_rate_hz,
            "piezo_lag_s": self.piezo_lag_s,
            "period_s": self.period_s,
            "plane_interval_s": self.plane_interval_s,
            "galvo_offsets_v": [g.offset_v for g in self.galvos],
            "galvo_slopes_v_per_um": [g.slope_v_per_um for g in self.galvos],
        }


@dataclass(frozen=True)
class ScanWaveforms:
    """One period of the output waveforms, sampled at ``sample_rate_hz``.

    piezo: focal-plane command in um; galvo: (n_beams, n) volts; camera: trigger line.
    """

    sample_rate_hz: float
    piezo_um: np.ndarray
    galvo_v: np.ndarray
    camera: np.ndarray

    @property
    def n_samples(self) -> int:
        return int(self.piezo_um.size)

    def rising_edges_s(self) -> np.ndarray:
        """Times (s from the period start) of camera pulse rising edges."""
        c = self.camera.astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], c))) == 1)
        return edges / self.sample_rate_hz
