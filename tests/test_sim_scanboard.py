"""The simulated scan board prepares a scan ahead of its start without changing what the
camera sees, and the simulator's windowed bead rendering equals the full-frame one."""

import numpy as np
import pytest

from beamline_ls.clock import VirtualClock
from beamline_ls.hardware.scanboard import SimScanBoard
from beamline_ls.sim import optics
from beamline_ls.sim.heart import SimHeart
from beamline_ls.sim.microscope import Roi, SimMicroscope
from beamline_ls.waveforms import VolumeScan

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

SCAN = VolumeScan(5.0, 20, 10.0, 80.0, 0.006, 5, 1, piezo_lag_s=0.008)


def z0_of(scan: VolumeScan) -> float:
    return float(scan.desired_z_um(np.array([0.0]))[0])


def board(start_z: float = 89.0) -> tuple[SimMicroscope, SimScanBoard]:
    m = SimMicroscope(clock=VirtualClock(100.0))
    m.piezo.command_constant(0.0, start_z)  # settled there long before t = 100 s
    return m, SimScanBoard(m)


def test_prepare_settles_the_focal_plane_at_the_trajectory_start_quickly():
    m, b = board(start_z=89.0)
    t = m.clock.now()
    b.prepare_volumes(SCAN)
    elapsed = m.clock.now() - t
    z0 = z0_of(SCAN)
    assert abs(float(m.piezo.position(m.clock.now())[0]) - z0) <= b.PREPOSITION_TOLERANCE_UM
    assert m.piezo.command(m.clock.now()) == pytest.approx(z0)
    # a plain step needs ln(81 / 0.05) = 7.4 tau; the shaped one drives to the travel
    # limit until a first-order stage is there: tau * ln(89 / z0) = 2.4 tau
    tau = m.piezo_tau_s
    assert elapsed < 3.0 * tau
    samples = m.piezo.position(t + np.linspace(0, elapsed, 200))
    lo, hi = m.piezo.travel
    assert samples.min() >= z0 - b.PREPOSITION_TOLERANCE_UM and samples.max() <= 89.0 + 1e-9
    assert lo <= samples.min() and samples.max() <= hi


def test_a_prepared_start_plays_the_same_trajectory_as_an_unprepared_one():
    runs = []
    for prepare in (True, False):
        m, b = board()
        if prepare:
            b.prepare_volumes(SCAN)
        t_call = m.clock.now()
        t0 = b.start_volumes(SCAN, 1)
        b.stop()
        t = t0 + np.linspace(0.0, SCAN.period_s, 400, endpoint=False)
        runs.append((t0 - t_call, m.piezo.position(t), m.sheet_z_um(t)))
    (start_prepared, piezo_a, sheet_a), (start_plain, piezo_b, sheet_b) = runs
    assert start_prepared < start_plain  # preparing took the settling out of the start
    assert np.allclose(piezo_a, piezo_b, atol=0.05)
    assert np.allclose(sheet_a, sheet_b, atol=0.05)


def test_start_prepositions_again_when_the_piezo_moved_after_prepare():
    m, b = board()
    b.prepare_volumes(SCAN)
    m.piezo.command_constant(m.clock.now(), 50.0)
    m.clock.advance(0.2)
    t0 = b.start_volumes(SCAN, 1)
    b.stop()
    assert abs(float(m.piezo.position(t0)[0]) - z0_of(SCAN)) <= b.PREPOSITION_TOLERANCE_UM


def test_start_with_other_parameters_than_prepared_uses_its_own():
    m, b = board()
    b.prepare_volumes(SCAN)
    other = VolumeScan(5.0, 20, 30.0, 60.0, 0.006, 5, 1, piezo_lag_s=0.008)
    t0 = b.start_volumes(other, 1)
    b.stop()
    assert abs(float(m.piezo.position(t0)[0]) - z0_of(other)) <= b.PREPOSITION_TOLERANCE_UM


def test_park_reaches_the_plane_and_reports_settled():
    m, b = board(start_z=20.0)
    b.park(60.0, SCAN.galvos)
    assert not b.is_parked(0.05)
    m.clock.advance(m.piezo_tau_s)  # tau * ln 2 for a step within travel
    assert b.is_parked(0.05)
    assert float(m.piezo.position(m.clock.now())[0]) == pytest.approx(60.0, abs=1e-6)


def _dense(image, cx, cy, sigma, photons):
    gx = optics._pixel_profiles(cx, sigma, image.shape[1])
    gy = optics._pixel_profiles(cy, sigma, image.shape[0])
    image += gy.T @ (photons[:, None] * gx)


@pytest.mark.parametrize("sigma_range", [(0.5, 3.0), (20.0, 40.0)])
def test_windowed_bead_rendering_equals_the_full_frame_product(sigma_range):
    rng = np.random.default_rng(3)
    n, shape = 60, (96, 128)
    cx = rng.uniform(-5, shape[1] + 5, n)  # some beads straddle or sit past the edges
    cy = rng.uniform(-5, shape[0] + 5, n)
    sigma = rng.uniform(*sigma_range, n)
    photons = rng.uniform(100, 5000, n)
    fast = np.zeros(shape)
    optics._add_emitters(fast, cx, cy, sigma, photons)
    ref = np.zeros(shape)
    _dense(ref, cx, cy, sigma, photons)
    assert np.allclose(fast, ref, rtol=0, atol=1e-7 * ref.max())
    assert fast.sum() == pytest.approx(ref.sum(), rel=1e-9)


def _heart_full_frame(m: SimMicroscope, t: np.ndarray, sheet: np.ndarray, roi: Roi,
                      binning: int, exposure_s: float, shape: tuple[int, int]) -> np.ndarray:
    """The heart evaluated on every coarse cell of the frame (the reference)."""
    px = m.optics.pixel_um * binning
    stride = max(1, int(1.3 // px))
    cx, cy, cz = m.heart_centre_um
    ny, nx = -(-shape[0] // stride), -(-shape[1] // stride)
    x = (roi.x - m.sensor.width / 2 + (np.arange(nx) * stride + stride / 2) * binning) \
        * m.optics.pixel_um - cx
    y = (roi.y - m.sensor.height / 2 + (np.arange(ny) * stride + stride / 2) * binning) \
        * m.optics.pixel_um - cy
    mid = len(t) // 2
    phase = float(m.heart.true_phase(t[mid]))
    z = float(sheet[:, mid].mean()) - cz
    coarse = m.heart.fluorescence_intensity(x[None, :], y[:, None], z, phase)
    coarse = np.repeat(np.repeat(coarse, stride, axis=0), stride, axis=1)
    return coarse[: shape[0], : shape[1]] * (
        m.heart_photons_per_um2_s * m.laser.power_fraction * exposure_s * px * px)


@pytest.mark.parametrize("roi, binning, sheet_z", [
    (Roi(768, 768, 512, 512), 1, 50.0),
    (Roi(0, 0, 2048, 2048), 2, 20.0),
    (Roi(1000, 700, 300, 200), 1, 75.0),
    (Roi(1800, 0, 248, 248), 1, 50.0),  # past the heart's edge: nothing to add
])
def test_heart_rendered_only_where_it_can_be_equals_the_full_frame(roi, binning, sheet_z):
    m = SimMicroscope(clock=VirtualClock(100.0))
    m.heart = SimHeart(t0=90.0, duration_s=60.0, dt_s=5e-3)
    shape = (roi.height // binning, roi.width // binning)
    t = 100.0 + (np.arange(8) + 0.5) / 8 * 0.005
    sheet = np.full((2, 8), sheet_z)
    fast = np.zeros(shape)
    m._add_heart(fast, t, sheet, np.zeros(3), roi, binning, 0.005)
    ref = _heart_full_frame(m, t, sheet, roi, binning, 0.005, shape)
    assert np.abs(fast - ref).max() <= 1e-6
    assert fast.sum() == pytest.approx(ref.sum(), rel=1e-9, abs=1e-6)
