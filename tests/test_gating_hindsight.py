"""The analyzer's own error estimate: what a user is told about the triggers' spread.

Why it matters to a user: the estimate is shown per trigger (and in the replay CSV)
so an operator can judge a gated scan without ground truth. A trigger thrown by an
irregular beat is part of the spread they get, so the estimate must count it; a
hindsight line that failed to follow the heart is not, so it must not.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from beamline_ls.gating.hindsight import Hindsight
from beamline_ls.gating.predict import PhaseHistory

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

FPS = 20.0
PERIOD_S = 0.5
RATE = 2 * math.pi / PERIOD_S
TARGET = 2.0  # rad


def _heart(long_beats: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Beat boundaries (s) and their unwrapped phases for 90 beats; the beats in
    ``long_beats`` last 30 % longer, as the irregular beats of a recorded heart do."""
    durations = [PERIOD_S * (1.3 if c in long_beats else 1.0) for c in range(90)]
    edges = np.concatenate([[0.0], np.cumsum(durations)])
    return edges, 2 * math.pi * np.arange(edges.size)


def _run(long_beats: tuple[int, ...], errors: dict[int, float], seed: int = 0,
         garbage_beat: int | None = None) -> tuple[float, np.ndarray]:
    """Feed 40 s of frames and a trigger per beat (beat ``c`` aimed at ``TARGET`` in it,
    off by ``errors[c]`` or by noise) to a `Hindsight`; its last estimate and the true
    errors of the triggers (rad)."""
    rng = np.random.default_rng(seed)
    edges, cycle = _heart(long_beats)
    t = np.arange(int(40.0 * FPS)) / FPS
    phi = np.interp(t, edges, cycle)
    beats = np.arange(1, int(phi[-1] // (2 * math.pi)))
    goals = TARGET + 2 * math.pi * beats
    true_err = np.array([errors.get(int(c), rng.normal(0, 0.03)) for c in beats])
    fires = np.interp(goals + true_err, cycle, edges)  # where the heart was at goal + err
    hist, hs = PhaseHistory(), Hindsight()
    hist.clear(1)
    pending = 0
    for i, (ti, p) in enumerate(zip(t, phi, strict=True)):
        read = p + rng.normal(0, 0.05)
        if garbage_beat is not None and abs(ti - fires[garbage_beat - 1]) < PERIOD_S / 2:
            read = rng.uniform(0, 2 * math.pi)  # frames the analyzer could not phase
        hist.add(float(ti), read % (2 * math.pi), i)
        while pending < fires.size and fires[pending] <= ti:
            hs.add(float(fires[pending]), float(goals[pending]), 1)
            pending += 1
        hs.update(hist, PERIOD_S)
    return hs.estimate(math.nan), true_err


def test_triggers_thrown_by_irregular_beats_count_in_the_estimate() -> None:
    big = {55: 0.3, 62: -0.3, 70: 0.3}  # the triggers in three beats that ran long
    est, true_err = _run(long_beats=tuple(big), errors=big)
    # the estimate covers the newest 30 triggers: compare with their true spread
    recent = true_err[-30:]
    assert 1 / 1.5 <= est / float(recent.std()) <= 1.5


def test_a_hindsight_line_that_did_not_follow_the_heart_is_left_out() -> None:
    est, true_err = _run(long_beats=(), errors={}, garbage_beat=65)
    recent = true_err[-30:]
    assert 1 / 1.5 <= est / float(recent.std()) <= 1.5
