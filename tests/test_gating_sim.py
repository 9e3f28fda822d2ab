"""The simulated heart: ground-truth phase process and rendering."""

import math

import numpy as np
import pytest

from beamline_ls.sim.heart import SimHeart

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core


def test_phase_monotonic_and_mean_rate():
    h = SimHeart(seed=1, duration_s=60)
    t = np.linspace(0, 60, 20001)
    ph = h.true_phase(t)
    assert np.all(np.diff(ph) > 0)
    rate = (ph[-1] - ph[0]) / (2 * math.pi * 60)
    assert rate == pytest.approx(2.33, rel=0.03)
    r = h.rate(t)
    assert r.min() > 2.33 * 0.85 and r.max() < 2.33 * 1.15


def test_deterministic_for_seed_and_different_otherwise():
    a, b, c = SimHeart(seed=4, duration_s=5), SimHeart(seed=4, duration_s=5), SimHeart(
        seed=5, duration_s=5)
    t = np.array([0.5, 1.7, 3.3])
    assert np.array_equal(a.true_phase(t), b.true_phase(t))
    assert not np.allclose(a.true_phase(t), c.true_phase(t))
    fa, fb = a.render_brightfield(1.23, (32, 40)), b.render_brightfield(1.23, (32, 40))
    assert np.array_equal(fa, fb)


def test_irregular_beats_change_duration():
    h = SimHeart(seed=2, duration_s=60, irregular_prob=0.2, wander_frac=0.0,
                 modulation_frac=0.0)
    assert len(h.irregular_beats) > 10
    t = np.linspace(0, 59, 200001)
    cyc = np.floor(h.true_phase(t) / (2 * math.pi))
    starts = t[np.flatnonzero(np.diff(cyc)) + 1]
    durations = np.diff(starts)
    assert durations.max() > 1.2 / 2.33 and durations.min() < 0.9 / 2.33


def test_render_depends_on_phase_and_dtypes():
    h = SimHeart(seed=3, duration_s=5, noise_sd=0.0)
    f0 = h.render_brightfield(0.0, (64, 64)).astype(float)
    f_half = h.render_brightfield(0.5 / 2.33, (64, 64)).astype(float)
    f_one = h.render_brightfield(_time_of_next_cycle(h), (64, 64))
    assert np.abs(f0 - f_half).mean() > 3 * np.abs(f0 - f_one.astype(float)).mean()
    u16 = h.render_brightfield(0.1, (48, 64), dtype=np.uint16)
    assert u16.dtype == np.uint16 and u16.shape == (48, 64) and u16.max() > 255


def _time_of_next_cycle(h: SimHeart) -> float:
    t = np.linspace(0.01, 1.0, 100001)
    return float(t[np.argmin(np.abs(h.true_phase(t) - h.true_phase(0.0) - 2 * math.pi))])


def test_out_of_span_raises():
    h = SimHeart(seed=1, duration_s=2)
    with pytest.raises(ValueError):
        h.true_phase(5.0)


def test_fluorescence_contracts_with_phase():
    h = SimHeart(seed=1, duration_s=2)
    x = np.linspace(-120, 120, 61)[None, :]
    y = np.linspace(-120, 120, 61)[:, None]
    relaxed = h.fluorescence_intensity(x, y, 0.0, 1.5 + math.pi)
    contracted = h.fluorescence_intensity(x, y, 0.0, 2.6)
    assert relaxed.shape == (61, 61)
    assert 0 <= relaxed.min() and relaxed.max() <= 1
    assert np.abs(relaxed - contracted).mean() > 0.01
