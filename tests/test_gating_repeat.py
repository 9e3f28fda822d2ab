"""The first reference's pixel weights: the heart, not what merely changes near it.

Why it matters to a user: at the lock the reference is one beat of frames, and until
a fold over several beats replaces it, every phase (and so every early trigger) is
read with its weights. Blood texture flowing past a faint heart and tissue drifting
under it change as much within one beat as the heart wall; only the wall comes back
one period later.
"""

from __future__ import annotations

import numpy as np
import pytest

from beamline_ls.frame import Frame
from beamline_ls.gating.analyzer import GatingAnalyzer
from beamline_ls.gating.phase import heartbeat_weight
from beamline_ls.gating.reference import PeriodFinder
from beamline_ls.gating.repeat import repeat_weight

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

H, W = 48, 96
PERIOD = 10.4  # frames: 20 fps at 1.92 Hz, not a whole number of frames


def _scene(n: int, seed: int = 0) -> np.ndarray:
    """Frames of three strips side by side, each changing about as much per frame:
    a heart wall beating (left), texture flowing past at random (middle), tissue
    drifting slowly (right); sensor noise everywhere."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)[:, None, None]
    yy, xx = np.mgrid[0:H, 0:W // 3].astype(float)
    beat = 2 * np.pi * t / PERIOD
    wall = 30.0 * np.sin(beat + xx / 6.0) + 12.0 * np.sin(2 * beat + yy / 5.0)
    flow = np.empty((n, H, W // 3))  # a new texture each frame, smooth in time (AR(1))
    flow[0] = rng.normal(0, 30.0, (H, W // 3))
    for i in range(1, n):
        flow[i] = 0.6 * flow[i - 1] + 0.8 * rng.normal(0, 30.0, (H, W // 3))
    texture = rng.normal(0, 40.0, (H, W // 3 + n))
    drift = np.stack([texture[:, int(i // 3): int(i // 3) + W // 3] for i in range(n)])
    scene = 1000.0 + np.concatenate([wall, flow, drift], axis=2)
    scene += rng.normal(0, 5.0, scene.shape)
    return np.clip(np.rint(scene), 0, 65535).astype(np.uint16)


def _strips(w: np.ndarray) -> tuple[float, float, float]:
    third = w.shape[1] // 3
    return tuple(float(w[:, k * third:(k + 1) * third].mean()) for k in range(3))


def test_only_the_change_that_comes_back_a_period_later_is_weighted() -> None:
    frames = _scene(60)  # 3 s at 20 fps: what the period search holds at a lock
    heart, flow, drift = _strips(repeat_weight(frames, PERIOD))
    assert heart > 0.6
    assert flow < 0.15 and drift < 0.15
    # a weight from the variance over one beat ranks the heart below what flows and
    # drifts past it: here nothing is still, so its noise floor is the heart itself
    one_beat = frames[:11].astype(np.float32)
    heart_1, flow_1, drift_1 = _strips(heartbeat_weight(one_beat - one_beat.mean(axis=0)))
    assert heart_1 < min(flow_1, drift_1)


def test_too_few_beats_give_no_weight_rather_than_a_guess() -> None:
    assert repeat_weight(_scene(18), PERIOD) is None


def test_the_reference_at_the_lock_carries_the_weight() -> None:
    frames = _scene(200, seed=1)
    finder = PeriodFinder()
    ref = None
    for i, f in enumerate(frames):
        ref = finder.push(f, i / 20.0, i, search=True)
        if ref is not None:
            break
    assert ref is not None, finder.reason
    assert abs(ref.period - PERIOD) < 0.3
    assert ref.weight is not None and ref.weight.shape == (H, W)
    heart, flow, drift = _strips(ref.weight)
    assert heart > 0.6 and flow < 0.15 and drift < 0.15


def test_a_large_camera_matched_binned_locks_and_fires_on_the_beat() -> None:
    """At 512 x 512 frames are matched binned 2 x 2; the weight must be binned with
    them as the share it is (an integer block mean turned it into zeros, and the
    lock frame raised on a NaN phase)."""
    size, fps = 512, 20.0
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    blob = np.exp(-((yy - 256) ** 2 + (xx - 256) ** 2) / (2 * 60.0 ** 2))
    analyzer = GatingAnalyzer()
    decisions = []
    for i in range(200):
        beat = 2 * np.pi * i / PERIOD
        img = 1000 + 200 * blob * np.sin(beat + xx / 40) + rng.normal(0, 5, (size, size))
        decisions.append(analyzer.process(
            Frame(np.clip(img, 0, 65535).astype(np.uint16), i, i / fps, 0.001)))
    locked = [d for d in decisions if d.state == "locked" and np.isfinite(d.phase)]
    assert len(locked) > 100
    fires = np.array([d.fire_time for d in decisions if d.fire_time is not None])
    assert fires.size >= 10
    # every trigger at the same phase of the beat (the true phase is 2 pi t fps / PERIOD)
    true = 2 * np.pi * fires * fps / PERIOD
    assert float(np.abs(np.mean(np.exp(1j * true)))) > 0.95


def test_a_camera_that_drops_frames_still_gets_the_weight() -> None:
    """One frame in seven lost (a busy USB bus): the missing frames keep their places
    in the period search and are left out of the weight, which still finds the heart."""
    frames = _scene(200, seed=1)
    finder = PeriodFinder()
    ref = None
    for i, f in enumerate(frames):
        if i % 7 == 3:
            continue  # never arrives
        ref = finder.push(f, i / 20.0, i, search=True)
        if ref is not None:
            break
    assert ref is not None, finder.reason
    assert ref.weight is not None
    heart, flow, drift = _strips(ref.weight)
    assert heart > 0.6 and flow < 0.15 and drift < 0.15
