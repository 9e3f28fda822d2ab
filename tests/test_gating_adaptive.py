"""Adaptive long-term reference updating keeps the locked TRUE heart phase."""

import functools
import math

import numpy as np
import pytest

from beamline_ls.gating.adaptive import AdaptiveReferenceUpdater, cyclic_shift, resample_period
from beamline_ls.gating.analyzer import GatingAnalyzer, GatingConfig
from beamline_ls.gating.evaluate import circular_mean, run_sim, wrap_pm_pi
from beamline_ls.gating.reference import Reference
from beamline_ls.sim.heart import SimHeart

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

TWO_PI = 2 * math.pi


def test_cyclic_shift_recovers_known_shift():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(80, 50))
    # smooth along phase so a sub-sample shift is meaningful
    f = np.fft.rfft(base, axis=0)
    f[8:] = 0
    base = np.fft.irfft(f, n=80, axis=0)
    shifted = np.roll(base, -13, axis=0)  # shifted_i = base_(i+13)
    s, w = cyclic_shift(shifted, base)
    assert s == pytest.approx(13, abs=0.05)
    assert w > 0.9


def _reference(heart, t_start, fps=40.0, shape=(64, 64), pad=2):
    """A reference built directly from the simulator (for exact ground truth)."""
    period_s = heart.mean_period(t_start, t_start + 1 / 2.33)
    p = period_s * fps
    m = int(p) + 1 + 2 * pad
    times = t_start + (np.arange(m) - pad) / fps
    frames = heart.render_video(times, shape, 0.0)
    return Reference(frames, p, pad, 1 / fps, 0, float(times[-1])), times


def test_alignment_of_two_references_matches_truth():
    heart = SimHeart(seed=31, duration_s=20, wander_frac=0.0, modulation_frac=0.0)
    ra, ta = _reference(heart, 1.0)
    rb, tb = _reference(heart, 7.37)
    up = AdaptiveReferenceUpdater()
    target = 2.0  # rad in reference a
    up.start(ra, target)
    res = up.align(rb)
    # true heart phase of the target in a, and where reference b puts its target
    true_a = heart.true_phase(ta[ra.pad]) + target
    true_b = heart.true_phase(tb[rb.pad]) + res.target_phase
    assert abs(wrap_pm_pi(true_b - true_a)) < 0.05 * 2  # within 1.6 % of a cycle
    assert resample_period(ra).shape[0] == 80


@functools.cache  # deterministic: the 90 s run with alignment serves two tests
def _run(adaptive: bool, seed: int = 32):
    heart = SimHeart(seed=seed, duration_s=95, growth_frac_per_s=0.0015,
                     drift_px_per_s=(0.04, -0.03))
    cfg = GatingConfig(refresh_every_triggers=25, target_phase=1.0)
    an = GatingAnalyzer(cfg, AdaptiveReferenceUpdater() if adaptive else None)
    return run_sim(heart, 30.0, 90.0, (64, 64), analyzer=an)


def test_adaptive_keeps_true_phase_over_long_run():
    r = _run(adaptive=True)
    an = r.analyzer
    assert len(an.references) >= 6
    tp = r.true_phase_at_fire
    n = len(tp)
    assert n > 150 and r.beats_fraction() > 0.85
    first = circular_mean(tp[: n // 5])
    # every reference epoch stays on the heart phase chosen at the start
    ref_of_fire = [d.reference_id for d in r.decisions if d.fire_time is not None]
    for rid in sorted(set(ref_of_fire)):
        sel = np.array(ref_of_fire) == rid
        assert abs(wrap_pm_pi(circular_mean(tp[sel]) - first)) < 0.1 * 2, rid
    assert abs(wrap_pm_pi(circular_mean(tp[-n // 5:]) - first)) < 0.1 * 2


def _epoch_deviation(r) -> float:
    """Largest offset (rad) of any reference epoch's locked true phase from the first."""
    tp = r.true_phase_at_fire
    ref_of_fire = np.array([d.reference_id for d in r.decisions if d.fire_time is not None])
    means = [circular_mean(tp[ref_of_fire == rid]) for rid in sorted(set(ref_of_fire))]
    return max(abs(float(wrap_pm_pi(m - means[0]))) for m in means)


def test_plain_refreshes_carry_the_target_by_image_but_alignment_holds_tighter():
    """Without the adaptive alignment each new reference finds the previous target's
    image in itself, so the heart phase holds across refreshes (re-applying a number
    or a rule jumped by more than 0.5 rad here); errors add up link by link, which
    the alignment's joint solve over all references avoids."""
    plain = _epoch_deviation(_run(adaptive=False))
    aligned = _epoch_deviation(_run(adaptive=True))
    assert plain < 0.5
    assert aligned <= plain + 0.02
