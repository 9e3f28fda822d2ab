"""Beats of different strength: what each one does to the phase readings is learned
from the readings themselves and taken out, and nothing is taken out of a heart whose
readings show no such pattern (`beamline_ls.gating.strength`)."""

import math

import numpy as np
import pytest

from beamline_ls.gating.strength import BeatStrength

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

TWO_PI = 2 * math.pi
FPS = 80.0


def _heart(seed: int, beats: int = 40):
    """Times and true unwrapped phases of a heart at ~2.3 Hz whose rate wanders
    (slow modulation plus a random walk), seen at 80 frames/s; each beat's strength
    (0.85-1.15) from beat start to beat start."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / FPS
    n = int(beats / 2.3 * FPS)
    t = np.arange(n) * dt
    rate = 2.3 * (1 + 0.05 * np.sin(TWO_PI * t / 7.0)) * (1 + np.cumsum(
        rng.normal(0, 0.002, n)))
    phase = np.cumsum(TWO_PI * rate * dt)
    strength = rng.uniform(0.85, 1.15, 2 * beats)
    return t, phase, strength[np.floor(phase / TWO_PI).astype(int)]


def _bend(phase: np.ndarray) -> np.ndarray:
    """How far (rad) a beat 1.0 stronger than the reference is read from its true
    phase, over the beat: nothing at rest, ahead in the contraction, behind in the
    relaxation."""
    x = np.mod(phase, TWO_PI)
    return np.sin(x / 2) ** 2 * (2.0 * np.sin(x) - 0.8 * np.sin(2 * x))


def _feed(st: BeatStrength, t, readings, truth):
    """Feed the readings one by one; per reading, its error from the truth (less
    the mean error) as it stands, and after the strength's correction as the
    predictor would see it at that moment."""
    raw, fixed = [], []
    for i in range(t.size):
        st.add(float(t[i]), float(readings[i]))
        raw.append(readings[i] - truth[i])
        fixed.append(float(st.corrected(np.array([readings[i]]))[0]) - truth[i])
    raw, fixed = np.array(raw), np.array(fixed)
    return raw - raw.mean(), fixed - fixed.mean()


def test_the_readings_of_strong_and_weak_beats_are_moved_back_to_their_phase():
    t, truth, strength = _heart(seed=3)
    rng = np.random.default_rng(4)
    readings = truth + (strength - 1) * _bend(truth) + rng.normal(0, 0.03, t.size)
    st = BeatStrength()
    st.reset(boundary=0.0, frames_per_beat=FPS / 2.3)
    raw, fixed = _feed(st, t, readings, truth)
    assert st.useful, "the strength's pattern was not found"
    late = t > t[-1] / 2  # once the pattern is learned
    rms_raw = float(np.sqrt(np.mean(raw[late] ** 2)))
    rms_fixed = float(np.sqrt(np.mean(fixed[late] ** 2)))
    assert rms_fixed < 0.7 * rms_raw, (rms_raw, rms_fixed)


def test_readings_without_a_strength_pattern_are_left_as_they_are():
    t, truth, _ = _heart(seed=5)
    rng = np.random.default_rng(6)
    readings = truth + rng.normal(0, 0.03, t.size)  # every beat read alike
    st = BeatStrength()
    st.reset(boundary=0.0, frames_per_beat=FPS / 2.3)
    raw, fixed = _feed(st, t, readings, truth)
    assert not st.useful
    np.testing.assert_array_equal(raw, fixed)


def test_a_new_reference_forgets_what_was_learned():
    t, truth, strength = _heart(seed=3)
    readings = truth + (strength - 1) * _bend(truth)
    st = BeatStrength()
    st.reset(boundary=0.0, frames_per_beat=FPS / 2.3)
    for ti, ui in zip(t, readings, strict=True):
        st.add(float(ti), float(ui))
    assert st.useful
    st.reset(boundary=1.0, frames_per_beat=FPS / 2.3)
    assert not st.useful and st.pattern is None
    u = np.array([0.5, 1.0, 7.0])
    np.testing.assert_array_equal(st.corrected(u), u)
