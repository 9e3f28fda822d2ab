"""Unit tests of the building blocks: SAD kernel, V-fit, period search, unwrap, predict."""

import math

import numpy as np
import pytest

from beamline_ls.gating.predict import PhaseHistory, Predictor, unwrap_step
from beamline_ls.gating.reference import NoPeriod, PeriodEstimate, estimate_period, v_fit
from beamline_ls.gating.sad import bin_image, sad_indexed, sad_stack

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_sad_matches_numpy(dtype):
    rng = np.random.default_rng(0)
    hi = 255 if dtype == np.uint8 else 4095
    stack = rng.integers(0, hi, (5, 20, 24)).astype(dtype)
    img = rng.integers(0, hi, (20, 24)).astype(dtype)
    got = sad_indexed(stack, np.array([4, 1]), img, 1, -2, 2)
    ref = [np.abs(stack[k, 2:-2, 2:-2].astype(int) - img[3:-1, 0:-4].astype(int)).sum()
           for k in (4, 1)]
    assert list(got) == ref
    assert sad_stack(stack, img).shape == (5,)
    with pytest.raises(ValueError):
        sad_indexed(stack, np.array([0]), img, 3, 0, 2)


def test_bin_image_rounds_mean():
    a = np.arange(36, dtype=np.uint8).reshape(6, 6)
    b = bin_image(a, 2)
    assert b.shape == (3, 3) and b.dtype == np.uint8
    assert b[0, 0] == round((0 + 1 + 6 + 7) / 4)


def test_v_fit():
    assert v_fit(3.0, 1.0, 3.0) == pytest.approx(0.0)
    # apex at +0.25: y = |x - 0.25|
    assert v_fit(1.25, 0.25, 0.75) == pytest.approx(0.25)
    assert v_fit(2.0, 2.0, 2.0) is None  # flat: no V
    assert v_fit(1.0, 2.0, 3.0) is None  # not a minimum


def test_estimate_period_on_synthetic_curve():
    k = np.arange(0, 40)  # d[k] at lag k
    period = 17.3
    d = 100 + 1000 * np.abs(np.sin(np.pi * k / period))
    est = estimate_period(d, 5, 10.0, noise=5.0)
    assert isinstance(est, PeriodEstimate) and est.period == pytest.approx(period, abs=0.3)
    flat = 1000 + np.random.default_rng(1).normal(0, 5, 40)
    none = estimate_period(flat, 5, 10.0, noise=5.0)
    assert isinstance(none, NoPeriod) and none.reason.startswith("repeat too weak")
    rising = 100 + 20.0 * k + np.random.default_rng(2).normal(0, 5, 40)  # drift only
    assert isinstance(estimate_period(rising, 5, 10.0, noise=5.0), NoPeriod)


def test_estimate_period_prefers_the_beat_over_its_double_at_low_frame_rate():
    """A beat of 8.5 frames falls between integer lags and dips shallowly; its double
    (17) lands on one and dips to the floor. The period is the beat, not two."""
    d = np.array([0, 561, 595, 611, 620, 619, 611, 588, 509, 503, 584, 607, 616, 616, 608,
                  595, 563, 166, 560], float)  # measured on a recorded heartbeat at 20 fps
    est = estimate_period(d, 5, 10.0, noise=11.5)
    assert isinstance(est, PeriodEstimate) and est.period == pytest.approx(8.5, abs=0.6)


def test_unwrap_step():
    assert unwrap_step(0.5, 0.9) == pytest.approx(0.9)
    assert unwrap_step(2 * math.pi - 0.1, 0.2) == pytest.approx(2 * math.pi + 0.2)
    assert unwrap_step(4 * math.pi + 6.0, 0.1) == pytest.approx(6 * math.pi + 0.1)


def _history(times, rate=2 * math.pi * 2.0):
    h = PhaseHistory()
    h.clear(0)
    for i, t in enumerate(times):
        h.add(t, (rate * t) % (2 * math.pi), i)
    return h


def test_predictor_exact_line():
    times = np.arange(0, 0.6, 0.0125)
    h = _history(times)
    p = Predictor().predict(h, 0.5, times[-1], 1.0)
    assert p is not None
    # phase = 4*pi*t reaches 1.0 + 2*pi*k; next after t_last
    k = math.ceil((4 * math.pi * times[-1] - 1.0) / (2 * math.pi))
    assert p.t_target == pytest.approx((1.0 + 2 * math.pi * k) / (4 * math.pi), abs=1e-9)
    assert p.t_target >= times[-1]


def test_predictor_needs_one_period_and_rejects_gaps_of_half_a_beat():
    pr = Predictor()
    assert pr.predict(_history(np.arange(0, 0.3, 0.0125)), 0.5, 0.3, 1.0) is None
    assert "period" in pr.last_reject
    # two frames after 0.3 s without any (0.6 of a 0.5 s beat): every window (>= min_fit
    # frames) reaches back across it
    times = np.concatenate([np.arange(0, 0.5, 0.0125), 0.5 + 0.3 + np.arange(0, 0.025, 0.0125)])
    assert pr.predict(_history(times), 0.5, times[-1], 1.0) is None
    assert pr.last_reject == "timestamp gap"
    # later, a window that starts after the gap predicts again (none spans the gap)
    times = np.concatenate([np.arange(0, 0.5, 0.0125), 0.5 + 0.3 + np.arange(0, 0.1, 0.0125)])
    p = pr.predict(_history(times), 0.5, times[-1], 1.0)
    assert p is not None and p.n_fit <= 8


def test_predictor_fits_across_dropped_frames():
    """Three frames missing (0.05 s, a tenth of the beat), then two more: the line
    through the phases on both sides predicts the crossing as if none were missing."""
    times = np.concatenate([np.arange(0, 0.5, 0.0125), 0.5 + 0.05 + np.arange(0, 0.025, 0.0125)])
    p = Predictor().predict(_history(times), 0.5, times[-1], 1.0)
    assert p is not None, "no prediction across three missing frames"
    k = math.ceil((4 * math.pi * times[-1] - 1.0) / (2 * math.pi))
    assert p.t_target == pytest.approx((1.0 + 2 * math.pi * k) / (4 * math.pi), abs=1e-9)


def test_predictor_rejects_implausible_rate():
    pr = Predictor()
    assert pr.predict(_history(np.arange(0, 1.0, 0.0125), rate=1.0), 0.5, 1.0, 1.0) is None


def test_predictor_ignores_a_phase_far_off_the_line_but_keeps_ordinary_scatter():
    """One frame the reference could not place (1 rad off) must not tilt the line: the
    prediction is the one without it. Ordinary scatter is all kept."""
    rng = np.random.default_rng(3)
    times = np.arange(0, 0.6, 0.0125)
    rate = 2 * math.pi * 2.0
    noisy = PhaseHistory()
    noisy.clear(0)
    clean = PhaseHistory()
    clean.clear(0)
    scatter = rng.normal(0.0, 0.01, times.size)
    for i, t in enumerate(times):
        clean.add(t, (rate * t + scatter[i]) % (2 * math.pi), i)
        off = 1.0 if i == times.size - 3 else 0.0
        noisy.add(t, (rate * t + scatter[i] + off) % (2 * math.pi), i)
    pr = Predictor(fit_periods=(0.5,))
    kept = pr.predict(clean, 0.5, times[-1], 1.0)
    robust = pr.predict(noisy, 0.5, times[-1], 1.0)
    assert kept is not None and robust is not None
    assert kept.n_fit == robust.n_fit + 1  # only the far phase dropped
    assert robust.t_target == pytest.approx(kept.t_target, abs=2e-3)
    assert robust.residual_rms < 0.03


def test_predictor_on_noisy_phases_is_as_good_as_its_longest_window():
    """A steady beat whose phases scatter 0.15 rad (a faint heart): the window the
    predictor chooses must predict the crossing about as well as its longest window,
    which is the best one for a steady rate. Choosing by each window's own scatter, a
    short window's few residuals were small by chance and it was taken, and its line
    carried its frames' noise to the target: RMS 0.31 rad against the longest
    window's 0.18 (0.20 with the noise floor)."""
    rng = np.random.default_rng(11)
    rate = 2 * math.pi / 0.4  # a 0.4 s beat at 40 frames/s: 16 frames a beat
    times = np.arange(0, 1.0, 0.025)
    errors: dict[str, list[float]] = {"chosen": [], "longest": []}
    for _ in range(300):
        h = PhaseHistory()
        h.clear(0)
        offset = rng.uniform(0, 2 * math.pi)
        for i, t in enumerate(times):
            h.add(t, (offset + rate * t + rng.normal(0.0, 0.15)) % (2 * math.pi), i)
        for key, pr in (("chosen", Predictor()), ("longest", Predictor(fit_periods=(0.75,)))):
            p = pr.predict(h, 0.4, times[-1], 1.0)
            if p is None:  # a line too far off the heart's rate: no trigger
                continue
            true = (1.0 + 2 * math.pi * p.cycle - offset) / rate
            errors[key].append(math.remainder(rate * (p.t_target - true), 2 * math.pi))
    assert min(len(v) for v in errors.values()) >= 280
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()}
    assert rms["chosen"] <= 1.3 * rms["longest"], rms
