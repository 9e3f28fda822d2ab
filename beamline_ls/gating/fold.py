"""A reference heartbeat averaged over several beats, sampled finer than the camera.

What: the first reference is one beat of camera frames: as noisy as one frame, and at
20 frames/s only 8-9 samples per beat. The frames of the last few beats (already in
the period finder's buffer) are phase-stamped against that first reference, the
stamps smoothed along time (a local line over one period: the heart's rate changes
slowly), and every frame is then placed on a fine cyclic phase grid by kernel
averaging. Beats land at different phase offsets relative to the frame clock, so
together they sample the cycle more densely than any one beat (at 20 frames/s, five
beats give ~40 distinct phases), and averaging lowers the noise by the number of
frames per grid sample. Two passes: the second stamps the frames against the first
pass's finer reference.

Why this is sound: the phase stamps come from matching images, not from assuming a
constant rate, so a slowly changing rate does not smear the average. The phase origin
stays that of the first reference, so targets carry over.
"""

from __future__ import annotations

import math

import numpy as np

from .phase import PhaseEstimator
from .predict import weighted_line
from .reference import Reference

TWO_PI = 2.0 * math.pi


def _smooth_phases(t: np.ndarray, u: np.ndarray, w: np.ndarray, period_s: float
                   ) -> np.ndarray:
    """Local weighted least-squares line (window one period) through unwrapped phases.

    The weights are the stamps' information: a frame in a quiet stretch of the beat
    (any phase fits it) barely pulls the line, so its smoothed phase comes from the
    moving frames around it.
    """
    n = t.size
    out = np.empty(n)
    half = 0.5 * period_s
    for i in range(n):
        sel = np.abs(t - t[i]) <= half
        if sel.sum() < 3 or not w[sel].sum() > 0:
            out[i] = u[i]
            continue
        _, out[i], _ = weighted_line(t[sel] - t[i], u[sel], w[sel])  # value at t[i]
    return out


def _stamp(est: PhaseEstimator, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unwrapped phase of each frame (time order) against ``est``'s reference, and its
    information (relative inverse variance)."""
    res = [est.estimate(f) for f in frames]
    u = np.unwrap(np.array([r.phase for r in res]))
    return u, np.array([r.information for r in res])


def _grid_average(frames: np.ndarray, phases: np.ndarray, n_grid: int) -> np.ndarray:
    """Cyclic kernel average of frames onto ``n_grid`` phases (triangular kernel)."""
    grid = np.arange(n_grid) * TWO_PI / n_grid
    # bandwidth: one grid step, widened until every grid phase has >= ~2 frames' weight
    h = TWO_PI / n_grid
    wrapped = np.mod(phases, TWO_PI)
    for _ in range(8):
        d = np.abs(np.mod(grid[:, None] - wrapped[None, :] + math.pi, TWO_PI) - math.pi)
        w = np.clip(1.0 - d / h, 0.0, None)
        if w.sum(axis=1).min() >= 2.0:
            break
        h *= 1.3
    w /= w.sum(axis=1, keepdims=True)
    flat = frames.reshape(frames.shape[0], -1).astype(np.float64)
    return (w @ flat).reshape(n_grid, *frames.shape[1:])


def fold_reference(first: Reference, frames: np.ndarray, times: np.ndarray,
                   min_samples: int = 32, passes: int = 2) -> Reference | None:
    """A multi-beat, finely sampled reference in ``first``'s phase coordinates.

    ``frames`` (n, h, w) and ``times`` (n,) are recent frames in time order covering
    at least two beats, same shape and dtype as ``first.frames``. Returns None when
    they do not (the caller keeps ``first``).
    """
    period_s = first.period_s
    if frames.shape[1:] != first.frames.shape[1:] or times[-1] - times[0] < 2 * period_s:
        return None
    n_grid = max(int(math.ceil(first.period)), min_samples)
    ref = first
    for _ in range(passes):
        est = PhaseEstimator(ref, track_drift=False)
        u, info = _stamp(est, frames)
        rate = (u[-1] - u[0]) / (times[-1] - times[0])
        if not 0.7 * TWO_PI / period_s < rate < 1.3 * TWO_PI / period_s or not info.max() > 0:
            return None  # the stamps do not advance like this heart: keep the first
        smooth = _smooth_phases(times, u, info / info.max(), period_s)
        cycle = _grid_average(frames, smooth, n_grid)
        pad = first.pad
        idx = np.arange(-pad, n_grid + pad + 1) % n_grid
        padded = np.clip(np.rint(cycle[idx]), 0, np.iinfo(first.frames.dtype).max)
        ref = Reference(np.ascontiguousarray(padded.astype(first.frames.dtype)),
                        float(n_grid), pad, period_s / n_grid, first.ref_id,
                        first.t_created, first.frame_ids)
    return ref
