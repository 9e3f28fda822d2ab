"""The simulator is physics: the camera renders where piezo and light sheets really are."""

import numpy as np
import pytest

from beamline_ls.clock import VirtualClock
from beamline_ls.sim.actuator import FirstOrderActuator
from beamline_ls.sim.microscope import Roi, SimMicroscope
from beamline_ls.sim.specimen import Specimen
from beamline_ls.waveforms import GalvoCalibration, VolumeScan

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

ROI = Roi(896, 896, 256, 256)


def play(m: SimMicroscope, scan: VolumeScan, n_volumes: int, t0: float = 10.0):
    """Drive piezo and galvos with the scan's waveforms from t0 (as the board does)."""
    w = scan.waveforms()
    z0 = float(scan.desired_z_um(np.array([0.0]))[0])
    m.piezo.command_constant(t0 - 1.0, z0)
    for g, cal in zip(m.galvos, scan.galvos, strict=True):
        g.command_constant(t0 - 1.0, float(cal.volts(z0)))
    m.piezo.command_waveform(t0, w.piezo_um, w.sample_rate_hz, n_volumes)
    for g, samples in zip(m.galvos, w.galvo_v, strict=True):
        g.command_waveform(t0, samples, w.sample_rate_hz, n_volumes)
    return [t0 + v * scan.period_s + scan.pulse_times_s() for v in range(n_volumes)]


def bead_peak(image: np.ndarray) -> float:
    """Background-subtracted signal summed over a 9x9 box at the bead (ROI centre)."""
    c = image.shape[0] // 2
    box = image[c - 4 : c + 5, c - 4 : c + 5].astype(float)
    return float((box - np.median(image)).sum())


def bead_max(image: np.ndarray) -> float:
    return float(image.astype(float).max() - np.median(image))


def bead_width(image: np.ndarray) -> float:
    """Intensity-weighted RMS radius (px) of the background-subtracted image."""
    img = np.clip(image.astype(float) - np.median(image), 0, None)
    img[img < 0.05 * img.max()] = 0
    y, x = np.indices(img.shape)
    w = img.sum()
    cy, cx = (img * y).sum() / w, (img * x).sum() / w
    return float(np.sqrt((img * ((y - cy) ** 2 + (x - cx) ** 2)).sum() / w))


@pytest.mark.parametrize("bead_z", [23.4, 51.0, 66.7])
def test_a_bead_at_known_z_is_brightest_in_its_plane(bead_z):
    m = SimMicroscope(clock=VirtualClock(), specimen=Specimen.single_bead(z_um=bead_z))
    m.laser.power_mw = m.laser.max_power_mw
    scan = VolumeScan(5.0, 20, 10.0, 80.0, 0.002, 6, 1, piezo_lag_s=m.piezo_tau_s)
    pulses = play(m, scan, 2)
    for volume in pulses:
        peaks, zs = [], []
        for t in volume:
            image, z = m.expose(t, scan.exposure_s, ROI, 1)
            peaks.append(bead_peak(image))
            zs.append(z)
        nearest = int(np.argmin(np.abs(scan.plane_z_um - bead_z)))
        assert int(np.argmax(peaks)) == nearest
        np.testing.assert_allclose(zs, scan.plane_z_um, atol=1.0)
        # planes more than 3 sheet thicknesses away see essentially nothing
        far = np.abs(scan.plane_z_um - bead_z) > 5
        assert max(np.array(peaks)[far]) < 0.05 * max(peaks)


def test_galvo_miscalibration_defocuses_the_image():
    """With the sheet 5 um below the focal plane, the bead that the sheet lights is
    5 um out of focus: wider and dimmer than when sheet and focus coincide."""
    bead_z = 55.0
    m = SimMicroscope(clock=VirtualClock(), specimen=Specimen.single_bead(z_um=bead_z))
    truth = m.galvo_truth[0]

    def image_with(cal: GalvoCalibration, focal_z: float) -> np.ndarray:
        t = m.clock.now()
        m.piezo.command_constant(t, focal_z)
        for g in m.galvos:
            g.command_constant(t, float(cal.volts(focal_z)))
        m.clock.advance(1.0)
        return m.expose(m.clock.now(), 0.005, ROI, 1)[0]

    in_focus = image_with(truth, bead_z)
    # calibration off by 5 um of sheet: focal plane at 50, sheet lands on the bead at 55
    wrong = GalvoCalibration(truth.offset_v + 5 * truth.slope_v_per_um, truth.slope_v_per_um)
    defocused = image_with(wrong, 50.0)
    assert bead_width(defocused) > 2 * bead_width(in_focus)
    assert bead_max(defocused) < 0.4 * bead_max(in_focus)


def test_z_motion_during_a_long_exposure_blurs_in_z():
    """A bead is lit only while the sheet passes it: a long exposure on a fast ramp
    collects less of it than a static exposure at the bead."""
    m = SimMicroscope(clock=VirtualClock(), specimen=Specimen.single_bead(z_um=45.0))
    m.laser.power_mw = m.laser.max_power_mw
    scan = VolumeScan(2.0, 10, 20.0, 70.0, 0.025, 6, 1, piezo_lag_s=m.piezo_tau_s)
    volume = play(m, scan, 1)[0]
    moving = max(bead_peak(m.expose(t, scan.exposure_s, ROI, 1)[0]) for t in volume)
    t = volume[-1] + 1.0
    m.piezo.command_constant(t, 45.0)
    for g, cal in zip(m.galvos, m.galvo_truth, strict=True):
        g.command_constant(t, float(cal.volts(45.0)))
    static = bead_peak(m.expose(t + 1.0, scan.exposure_s, ROI, 1)[0])
    assert moving < 0.6 * static


def test_piezo_is_a_first_order_lag_with_travel_limits():
    p = FirstOrderActuator(0.008, (0.0, 400.0), 0.0)
    p.command_constant(0.0, 100.0)
    assert p.position(0.008)[0] == pytest.approx(100 * (1 - np.exp(-1)), rel=1e-6)
    assert p.is_settled(0.1, 0.01)
    p.command_constant(1.0, 1000.0)  # beyond travel: clipped to the limit
    assert p.position(2.0)[0] == pytest.approx(400.0)


def test_dark_frames_have_offset_and_read_noise_only():
    m = SimMicroscope(clock=VirtualClock())
    m.laser.enabled = False
    image, _ = m.expose(0.0, 0.01, ROI, 1)
    assert image.dtype == np.uint16
    s = m.sensor
    assert image.mean() == pytest.approx(s.offset_adu, abs=0.05)
    assert image.std() == pytest.approx(s.read_noise_e / s.gain_e_per_adu, rel=0.05)


def test_binning_and_roi_set_the_frame_shape_and_readout():
    m = SimMicroscope(clock=VirtualClock())
    image, _ = m.expose(0.0, 0.005, Roi(0, 0, 512, 256), 2)
    assert image.shape == (128, 256)
    assert m.sensor.readout_time_s(256, 2) == pytest.approx(128 * m.sensor.line_time_s)
