"""Scan waveform math: what every scan board (sim or NI) is told to play."""

import numpy as np
import pytest

from beamline_ls.sim.actuator import FirstOrderActuator
from beamline_ls.waveforms import GalvoCalibration, VolumeScan

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core


def make(**kw):
    args = dict(volume_rate_hz=5.0, n_planes=20, z_start_um=10.0, z_stop_um=80.0,
                exposure_s=0.002, skip_start=6, skip_end=1, piezo_lag_s=0.008)
    args.update(kw)
    return VolumeScan(**args)


def test_one_camera_pulse_per_stored_plane_centred_on_the_plane():
    scan = make()
    w = scan.waveforms()
    edges = w.rising_edges_s()
    assert len(edges) == scan.n_planes
    centres = edges + scan.exposure_s / 2
    np.testing.assert_allclose(scan.desired_z_um(centres), scan.plane_z_um, atol=0.05)


def test_galvos_follow_the_desired_trajectory_through_their_calibration():
    cal = (GalvoCalibration(0.1, 0.02), GalvoCalibration(-0.2, 0.021))
    scan = make(galvos=cal)
    w = scan.waveforms()
    t = np.arange(w.n_samples) / w.sample_rate_hz
    for i, c in enumerate(cal):
        np.testing.assert_allclose(w.galvo_v[i], c.volts(scan.desired_z_um(t)))


def test_feed_forward_makes_a_first_order_piezo_hit_every_plane():
    scan = make()
    w = scan.waveforms()
    z0 = float(scan.desired_z_um(np.array([0.0]))[0])
    piezo = FirstOrderActuator(0.008, (0, 400), z0)
    piezo.command_waveform(0.0, w.piezo_um, w.sample_rate_hz, 3)
    for v in range(3):
        starts = v * scan.period_s + scan.pulse_times_s()
        z = [piezo.position(t + np.linspace(0, scan.exposure_s, 8)).mean() for t in starts]
        assert np.abs(np.array(z) - scan.plane_z_um).max() < 0.5


def test_without_feed_forward_the_piezo_lags_behind_its_planes():
    scan = make(piezo_lag_s=0.0)
    w = scan.waveforms()
    piezo = FirstOrderActuator(0.008, (0, 400), float(scan.desired_z_um(np.array([0.0]))[0]))
    piezo.command_waveform(0.0, w.piezo_um, w.sample_rate_hz, 2)
    starts = scan.period_s + scan.pulse_times_s()
    z = np.array([piezo.position(t + scan.exposure_s / 2)[0] for t in starts])
    lag = scan.plane_z_um - z
    assert np.median(lag) == pytest.approx(0.008 * scan.ramp_slope_um_per_s, rel=0.1)


@pytest.mark.parametrize("kw, word", [
    (dict(n_planes=1), "n_planes"),
    (dict(volume_rate_hz=0), "volume_rate_hz"),
    (dict(exposure_s=0.05), "exposure_s"),
    (dict(z_start_um=0.5), "piezo travel"),
    (dict(z_stop_um=399.9), "piezo travel"),
    (dict(galvos=(GalvoCalibration(9.9, 0.02), GalvoCalibration())), "galvo"),
])
def test_bad_settings_are_refused_with_the_reason(kw, word):
    with pytest.raises(ValueError, match=word):
        make(**kw).waveforms()


def test_calibration_fit_recovers_a_line_from_three_points():
    z = np.array([10.0, 50.0, 90.0])
    cal = GalvoCalibration.fit(z, 0.3 + 0.021 * z)
    assert cal.offset_v == pytest.approx(0.3)
    assert cal.slope_v_per_um == pytest.approx(0.021)
    with pytest.raises(ValueError):
        GalvoCalibration.fit(z[:2], z[:2])
