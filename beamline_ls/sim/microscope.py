"""The simulated microscope: one physical world shared by every simulated device.

Camera, scan board, piezo, galvos, stages and laser drivers all act on this object, so
what the camera renders is where the piezo and the light sheets actually were during
its exposure, whoever moved them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from beamline_ls.clock import Clock, RealTimeClock
from beamline_ls.sim.actuator import FirstOrderActuator
from beamline_ls.sim.heart import SimHeart
from beamline_ls.sim.optics import Optics
from beamline_ls.sim.sensor import Sensor
from beamline_ls.sim.specimen import Specimen
from beamline_ls.sim.stage import LinearAxis
from beamline_ls.sim.trigger_line import TriggerLine
from beamline_ls.waveforms import GALVO_RANGE_V, PIEZO_TRAVEL_UM, GalvoCalibration


@dataclass
class LaserState:
    max_power_mw: float = 100.0
    wavelength_nm: float = 488.0
    power_mw: float = 20.0
    enabled: bool = True

    @property
    def power_fraction(self) -> float:
        return self.power_mw / self.max_power_mw if self.enabled else 0.0


@dataclass
class Roi:
    """Region of interest in unbinned sensor pixels."""

    x: int
    y: int
    width: int
    height: int


@dataclass
class SimMicroscope:
    """All simulated physics. ``galvo_truth`` is the real volts -> sheet z map of each
    beam; a scan's calibration may differ from it, which defocuses the image."""

    clock: Clock = field(default_factory=RealTimeClock)
    specimen: Specimen = field(default_factory=Specimen.beads)
    optics: Optics = field(default_factory=Optics)
    sensor: Sensor = field(default_factory=Sensor)
    galvo_truth: tuple[GalvoCalibration, ...] = (GalvoCalibration(), GalvoCalibration())
    piezo_tau_s: float = 0.008
    laser: LaserState = field(default_factory=LaserState)
    camera_trigger: TriggerLine = field(default_factory=TriggerLine)
    heart: SimHeart | None = None
    heart_centre_um: tuple[float, float, float] = (0.0, 0.0, 50.0)
    heart_photons_per_um2_s: float = 5.0e5

    def __post_init__(self) -> None:
        z0 = 50.0
        self.piezo = FirstOrderActuator(self.piezo_tau_s, PIEZO_TRAVEL_UM, z0)
        self.galvos = [
            FirstOrderActuator(2e-4, GALVO_RANGE_V, float(cal.volts(z0)))
            for cal in self.galvo_truth
        ]
        self.stage = {
            "x": LinearAxis((-10_000.0, 10_000.0), 2_000.0),
            "y": LinearAxis((-10_000.0, 10_000.0), 2_000.0),
            "z": LinearAxis((-5_000.0, 5_000.0), 1_000.0),
        }

    def sheet_z_um(self, t: np.ndarray) -> np.ndarray:
        """Where each beam's light sheet is at times ``t``: (n_beams, len(t))."""
        return np.stack(
            [
                (g.position(t) - truth.offset_v) / truth.slope_v_per_um
                for g, truth in zip(self.galvos, self.galvo_truth, strict=True)
            ]
        )

    def expose(
        self, t_start: float, exposure_s: float, roi: Roi, binning: int
    ) -> tuple[np.ndarray, float]:
        """Render one exposure: (uint16 image, mean focal-plane z in um)."""
        k = self.optics.samples_per_exposure
        t = t_start + (np.arange(k) + 0.5) / k * exposure_s
        focal = self.piezo.position(t)
        sheet = self.sheet_z_um(t)
        stage = np.array([self.stage[a].position(t_start) for a in ("x", "y", "z")])
        lab = self.specimen.positions_um + stage
        origin = (roi.x - self.sensor.width / 2, roi.y - self.sensor.height / 2)
        shape = (roi.height // binning, roi.width // binning)
        photons = self.optics.render(
            lab,
            self.specimen.brightness,
            focal,
            sheet,
            exposure_s,
            self.laser.power_fraction,
            self.specimen.autofluorescence,
            origin,
            shape,
            binning,
        )
        if self.heart is not None and self.laser.power_fraction > 0:
            self._add_heart(photons, t, sheet, stage, roi, binning, exposure_s)
        return self.sensor.digitize(photons), float(focal.mean())

    def _add_heart(self, photons: np.ndarray, t: np.ndarray, sheet: np.ndarray,
                   stage: np.ndarray, roi: Roi, binning: int, exposure_s: float) -> None:
        """Add the fluorescent heart wall lit by the sheet, at the heart's true phase.

        Thin-sheet approximation at mid-exposure (a 5 ms exposure spans ~1 % of a beat).
        The wall is ~5 um thick, so it is evaluated on a grid of at most ~1.3 um and
        upsampled, and only where the heart can be (its extent at any phase): a 512x512
        frame costs about a millisecond.
        """
        assert self.heart is not None
        shape = photons.shape
        px = self.optics.pixel_um * binning
        stride = max(1, int(1.3 // px))
        cx, cy, cz = self.heart_centre_um
        ny, nx = -(-shape[0] // stride), -(-shape[1] // stride)
        x = (roi.x - self.sensor.width / 2 + (np.arange(nx) * stride + stride / 2) * binning) \
            * self.optics.pixel_um + stage[0] - cx
        y = (roi.y - self.sensor.height / 2 + (np.arange(ny) * stride + stride / 2) * binning) \
            * self.optics.pixel_um + stage[1] - cy
        x_lo, x_hi, y_lo, y_hi = self.heart.fluorescence_extent_um()
        # a coarse cell is kept if any part of it can be lit (half a cell of margin)
        half = stride * px / 2
        cols = np.nonzero((x >= x_lo - half) & (x <= x_hi + half))[0]
        rows = np.nonzero((y >= y_lo - half) & (y <= y_hi + half))[0]
        if cols.size == 0 or rows.size == 0:
            return
        c0, c1 = int(cols[0]), int(cols[-1]) + 1
        r0, r1 = int(rows[0]), int(rows[-1]) + 1
        mid = len(t) // 2
        phase = float(self.heart.true_phase(t[mid]))
        z = float(sheet[:, mid].mean()) + stage[2] - cz
        coarse = self.heart.fluorescence_intensity(x[None, c0:c1], y[r0:r1, None], z, phase)
        if stride > 1:
            coarse = np.repeat(np.repeat(coarse, stride, axis=0), stride, axis=1)
        top, left = r0 * stride, c0 * stride
        bottom, right = min(r1 * stride, shape[0]), min(c1 * stride, shape[1])
        photons[top:bottom, left:right] += coarse[: bottom - top, : right - left] * (
            self.heart_photons_per_um2_s * self.laser.power_fraction * exposure_s * px * px)
