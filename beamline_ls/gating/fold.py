"""A reference heartbeat averaged over many beats, sampled finer than the camera.

What: the first reference is one beat of camera frames: as noisy as one frame, and at
20 frames/s only 8-9 samples per beat. The frames seen under the lock (the analyzer
keeps up to `GatingConfig.fold_max_frames` of them) are phase-stamped against the
reference in use, the stamps smoothed along time (a local line over one period: the
heart's rate changes slowly), and every frame is then placed on a fine cyclic phase
grid by kernel averaging. Beats land at different phase offsets relative to the frame
clock, so together they sample the cycle more densely than any one beat (at 20
frames/s, five beats give ~40 distinct phases), and averaging lowers the noise by the
number of frames per grid sample. Two passes: the second stamps the frames against the
first pass's finer reference. The fold also yields a weight per pixel: the share of
its variance that repeats with the beat (`beat_locked_weight`).

Why this is sound: the phase stamps come from matching images, not from assuming a
constant rate, so a slowly changing rate does not smear the average. The phase origin
stays that of the reference stamped against, so targets carry over; measured on a
recorded heartbeat at 20 frames/s, a fold over 8 s moved the origin by 0.003 rad and
cut the per-frame phase error from 0.12 to 0.02 rad against a fold over 4 beats.

A fold is repeated every few beats, each stamped against the one before, so those
small moves add up: on a recorded heartbeat at 80 frames/s the origin walked 0.04 rad
in 40 s, and the triggers walked with it (true-phase SD 0.023 rad, against 0.017 with
one fold). Every later fold is therefore put back on the origin of an *anchor*, the
first fold (`origin_offset`): two whole cycles are compared, so the sample's
movement (the same at every phase) and a phase offset (a rotation of the cycle) are
told apart, and a whole cycle of every pixel makes the comparison far more precise
than any one stamp.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

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


def _stamp(est: PhaseEstimator, frames: np.ndarray, times: np.ndarray, period_s: float
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unwrapped phase of each frame (time order) against ``est``'s reference, its
    information (relative inverse variance), and the drift (dy, dx) it was matched at.

    Each phase is unwrapped to the cycle nearest to the previous one advanced at the
    heart's rate, not by the smallest step: on a faint or noisy heart a stamp may be a
    radian or two off, and a smallest-step unwrap would count such a backward jump
    as a beat (or lose one), which wrecks every later stamp's cycle.
    """
    res = [est.estimate(f) for f in frames]
    wrapped = np.array([r.phase for r in res])
    u = np.empty_like(wrapped)
    u[0] = wrapped[0]
    step = TWO_PI / period_s
    for i in range(1, u.size):
        expected = u[i - 1] + step * (times[i] - times[i - 1])
        u[i] = wrapped[i] + TWO_PI * round((expected - wrapped[i]) / TWO_PI)
    return (u, np.array([r.information for r in res]),
            np.array([r.drift for r in res], dtype=int).reshape(-1, 2))


def _shifted(image: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """``image`` with its content moved by (sy, sx) whole pixels, edges repeated."""
    h, w = image.shape
    p = max(abs(sy), abs(sx))
    padded = np.pad(image, p, mode="edge")
    return padded[p - sy:p - sy + h, p - sx:p - sx + w]


#: frames matched at drifts this many pixels or more from the newest frame's are moved
#: to it before folding; a pixel less is the tracker's own flicker (a sample half-way
#: between two whole pixels flips between them from frame to frame)
ALIGN_MIN_PX = 2
#: frames over which the matched drift is smoothed (running median) before comparing
ALIGN_SMOOTH = 9


def _aligned(frames: np.ndarray, drifts: np.ndarray) -> np.ndarray:
    """The frames moved to where the newest one is (by the newest's drift minus their
    own, each smoothed over neighbouring frames) where that is ``ALIGN_MIN_PX`` or more.
    Why: averaged where each was taken, a fold of a sample that was knocked (or drifted
    far) while the frames were buffered is a blur of its positions (a ghost of the
    heart before the jolt beside the heart after it), matched worse than either: an
    8 px jolt kept the lock at the drift search's limit and its triggers at 0.45 rad."""
    n = len(drifts)
    half = ALIGN_SMOOTH // 2
    smooth = np.array([np.median(drifts[max(0, i - half):i + half + 1], axis=0)
                       for i in range(n)])
    shift = np.rint(smooth[-1] - smooth).astype(int)
    moved = np.flatnonzero(np.abs(shift).max(axis=1) >= ALIGN_MIN_PX)
    if not moved.size:
        return frames
    out = frames.copy()
    for i in moved:
        out[i] = _shifted(frames[i], int(shift[i, 0]), int(shift[i, 1]))
    return out


def _grid_average(frames: np.ndarray, phases: np.ndarray, n_grid: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Cyclic kernel average of frames onto ``n_grid`` phases (triangular kernel), and
    the kernel weights (n_grid, n_frames), each row summing to 1."""
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
    return (w @ flat).reshape(n_grid, *frames.shape[1:]), w


def fold_residual(frames: np.ndarray, phases: np.ndarray, cycle: np.ndarray,
                  kernel: np.ndarray) -> np.ndarray:
    """Per pixel, the variance of the frames about the heart's cycle: what does not
    repeat with the beat (sensor noise, flicker, tissue drifting or wobbling on its
    own, blood cells, a beat stronger or weaker than the others).

    The cycle is an average of these same frames (``kernel``: weights of the frames
    in each grid sample), so each frame is partly fitted by itself and its residual
    understates the variance: with few frames per sample (a fold over two or three
    beats), by a third or more. The sum of squared residuals is divided by its
    expected share of the variance, ``n - 2 tr(H) + |H|^2`` for the linear map ``H``
    from the frames to the model at their phases, not by ``n``.
    """
    n_grid = cycle.shape[0]
    n = frames.shape[0]
    flat = frames.reshape(n, -1).astype(np.float64)
    pos = np.mod(phases, TWO_PI) / TWO_PI * n_grid
    i0 = np.floor(pos).astype(int) % n_grid
    a = pos - np.floor(pos)
    interp = np.zeros((n, n_grid))
    rows = np.arange(n)
    interp[rows, i0] = 1.0 - a
    interp[rows, (i0 + 1) % n_grid] += a
    model = interp @ cycle.reshape(n_grid, -1)
    hat = interp @ kernel  # (n, n): frames -> model at each frame's phase
    dof = n - 2.0 * float(np.trace(hat)) + float((hat * hat).sum())
    return (((flat - model) ** 2).sum(axis=0) / max(dof, 1.0)).reshape(frames.shape[1:])


def beat_locked_weight(resid: np.ndarray, cycle: np.ndarray, kernel: np.ndarray
                       ) -> np.ndarray:
    """Per pixel, the share of its variance that repeats with the beat, in [0, 1].

    What: ``R`` is the variance of the frames about the folded cycle at their phases
    (`fold_residual`); ``S`` is the variance of the folded cycle along the phase, less
    the part of it that is ``R`` averaged into each grid sample. The weight is
    ``S / (S + R)``.

    Why: only beat-locked change says where in the beat a frame is. A pixel of
    tissue that drifts, or of a faint heart under noise, changes as much from one
    frame to the next as a pixel of the heart, so a weight from the variance of one
    beat (`phase.heartbeat_weight`) cannot tell them apart; over several beats the
    periodic and the non-periodic parts separate.
    """
    share = float((kernel ** 2).sum(axis=1).mean())  # noise variance kept per grid sample
    signal = np.maximum(cycle.var(axis=0) - share * resid, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(signal + resid > 0, signal / (signal + resid), 0.0)
    return w.astype(np.float32)


def cycle_of(ref: Reference) -> np.ndarray:
    """The ``n`` samples of one whole cycle of a folded reference (float64), or an
    empty array when its period is not a whole number of samples (an unfolded one)."""
    n = int(round(ref.period))
    if abs(ref.period - n) > 1e-9 or ref.frames.shape[0] < ref.pad + n:
        return np.empty((0, *ref.frames.shape[1:]))
    return ref.frames[ref.pad:ref.pad + n].astype(np.float64)


def register_shift(fixed: np.ndarray, moving: np.ndarray, weight: np.ndarray | None = None,
                   iterations: int = 5) -> tuple[float, float]:
    """Sub-pixel (dy, dx) with ``moving(x) ~ fixed(x - d)``: the whole-pixel peak of
    the cross-correlation, refined by Gauss-Newton on the interpolated image.
    ``weight`` (per pixel of ``fixed``): which pixels count, e.g. the beating heart
    only, where tissue around it moves on its own."""
    wt = np.ones(fixed.shape) if weight is None else weight.astype(np.float64)
    a = fixed - (wt * fixed).sum() / wt.sum()
    b = moving - (wt * moving).sum() / wt.sum()
    xc = np.fft.irfft2(np.conj(np.fft.rfft2(a * wt)) * np.fft.rfft2(b * wt), s=a.shape)
    iy, ix = np.unravel_index(int(np.argmax(xc)), xc.shape)
    h, w = a.shape
    d = np.array([iy - h if iy > h // 2 else iy, ix - w if ix > w // 2 else ix], float)
    for _ in range(iterations):
        g = int(math.ceil(np.abs(d).max())) + 2
        if 2 * g >= min(h, w) - 4:
            break
        shifted = ndimage.shift(a, d, order=3, mode="nearest")
        gy, gx = np.gradient(shifted)
        inner = (slice(g, h - g), slice(g, w - g))
        sw = np.sqrt(wt[inner]).ravel()
        jac = np.stack([gy[inner].ravel() * sw, gx[inner].ravel() * sw], axis=1)
        resid = (b - shifted)[inner].ravel() * sw
        step, *_ = np.linalg.lstsq(jac, -resid, rcond=None)
        d += step
        if np.abs(step).max() < 1e-3:
            break
    return float(d[0]), float(d[1])


def origin_offset(anchor: np.ndarray, cycle: np.ndarray, weight: np.ndarray | None,
                  max_offset: float = 0.5, min_match: float = 0.5) -> float | None:
    """Phase offset (rad) of ``cycle`` against ``anchor`` (two folds' whole cycles,
    ``(n, h, w)``, same ``n``): ``cycle``'s phase of a heart state is the anchor's plus
    this. None when the two do not match well (normalised correlation of the beating
    part below ``min_match``) or the offset exceeds ``max_offset``: then the fold keeps
    the origin it was stamped to.

    The sample, or the heart within it, may have moved between the two: the shift is
    measured on the cycles' SD images (the beat's own pattern: a still field around
    the heart has none), and the anchor moved onto the new position before the
    cycles, each minus its mean over the cycle, are compared, weighted by ``weight``
    (the beat-locked share at ``cycle``'s position). The offset is the maximum of the
    cyclic cross-correlation along the phase, evaluated between samples through the
    cycles' Fourier series (they are band-limited: folds are kernel averages).
    """
    n = anchor.shape[0]
    if cycle.shape != anchor.shape or n < 4:
        return None
    d = register_shift(anchor.std(axis=0), cycle.std(axis=0))
    g = int(math.ceil(max(abs(d[0]), abs(d[1])))) + 2
    h, w = anchor.shape[1:]
    if 2 * g >= min(h, w) - 4:
        return None
    moved = np.stack([ndimage.shift(f, d, order=3, mode="nearest") for f in anchor])
    inner = (slice(None), slice(g, h - g), slice(g, w - g))
    a = moved[inner] - moved[inner].mean(axis=0)
    b = cycle[inner] - cycle[inner].mean(axis=0)
    wt = np.ones(a.shape[1:]) if weight is None else weight[inner[1:]].astype(np.float64)
    fa = np.fft.rfft(a * wt, axis=0).reshape(a.shape[0] // 2 + 1, -1)
    fb = np.fft.rfft(b, axis=0).reshape(fa.shape)
    cross = (np.conj(fa) * fb).sum(axis=1)  # per harmonic, summed over pixels
    mult = np.full(cross.size, 2.0)
    mult[0] = 1.0
    if n % 2 == 0:
        mult[-1] = 1.0
    f = np.arange(cross.size)

    def corr(s: np.ndarray) -> np.ndarray:
        return (mult * cross * np.exp(2j * math.pi * np.outer(s, f) / n)).real.sum(axis=1)

    grid = np.arange(0.0, n, 0.05)
    s = float(grid[int(np.argmax(corr(grid)))])
    fine = s + np.linspace(-0.05, 0.05, 101)
    s = float(fine[int(np.argmax(corr(fine)))])
    norm = math.sqrt(float((wt * a * a).sum()) * float((wt * b * b).sum()))
    match = float(corr(np.array([s]))[0]) / n / norm if norm > 0 else 0.0
    offset = (s + n / 2) % n - n / 2
    phi = TWO_PI * offset / n
    if match < min_match or abs(phi) > max_offset:
        return None
    return phi


def fold_reference(first: Reference, frames: np.ndarray, times: np.ndarray,
                   min_samples: int = 32, passes: int = 2, drift: tuple[int, int] = (0, 0),
                   anchor: Reference | None = None, max_drift: int = 4,
                   lock_weight: bool = False) -> Reference | None:
    """A multi-beat, finely sampled reference in ``first``'s phase coordinates.

    ``frames`` (n, h, w) and ``times`` (n,) are recent frames in time order covering
    at least two beats, same shape and dtype as ``first.frames``. Returns None when
    they do not (the caller keeps ``first``). ``anchor``: an earlier fold of the same
    reference whose phase origin this one is put back on (`origin_offset`).
    ``max_drift``: the live estimator's drift search, which ``drift`` lies within.

    ``lock_weight``: the fold at the lock. It averages the 2-3 beats of the period
    search's buffer, whose repeat weight (`repeat`: each pixel's covariance with
    itself a period later) the reference carries; the fold's own beat-locked weight
    reads the same share from those few beats, sharper (at the matching's binning,
    not the search's) but noisier. A pixel then counts by the geometric mean of the
    two, so as much as both readings agree it repeats. Measured on the faint tube
    heart (80 fps, seed 0): with the beat-locked weight alone, frames read against
    the fold at the lock were off by a wave of +-0.2 rad over the cycle from where
    later folds read them and its first four triggers 0.11-0.37 rad early (true-phase
    SD 0.072 rad); with the repeat weight alone 0.057, but a crisp tube heart went
    from 0.013 to 0.044 (seed 0); with both 0.060 and 0.010.
    """
    period_s = first.period_s
    if frames.shape[1:] != first.frames.shape[1:] or times[-1] - times[0] < 2 * period_s:
        return None
    n_grid = max(int(math.ceil(first.period)), min_samples)
    ref = first
    for k in range(passes):
        # the first pass matches against ``first`` where the frames are now (``drift``:
        # the live estimator's offset); later passes against a fold of these frames
        est = PhaseEstimator(ref, max_drift, track_drift=k == 0)
        if k == 0:
            est.dy, est.dx = drift
        u, info, drifts = _stamp(est, frames, times, period_s)
        if k == 0:
            frames = _aligned(frames, drifts)  # later passes match these, drift 0
        rate = (u[-1] - u[0]) / (times[-1] - times[0])
        if not 0.7 * TWO_PI / period_s < rate < 1.3 * TWO_PI / period_s or not info.max() > 0:
            return None  # the stamps do not advance like this heart: keep the first
        smooth = _smooth_phases(times, u, info / info.max(), period_s)
        cycle, kernel = _grid_average(frames, smooth, n_grid)
        resid = fold_residual(frames, smooth, cycle, kernel)
        weight = beat_locked_weight(resid, cycle, kernel)
        if lock_weight and first.weight is not None:
            weight = np.sqrt(weight * first.weight)
        if k == passes - 1 and anchor is not None:
            phi = origin_offset(cycle_of(anchor), cycle, anchor.weight)
            if phi is not None and phi != 0.0:
                smooth = smooth - phi
                cycle, kernel = _grid_average(frames, smooth, n_grid)
        if not weight.max() > 0:
            weight = None
        pad = first.pad
        idx = np.arange(-pad, n_grid + pad + 1) % n_grid
        padded = np.clip(np.rint(cycle[idx]), 0, np.iinfo(first.frames.dtype).max)
        rows = kernel[idx]  # the frames averaged into each padded sample
        ref = Reference(np.ascontiguousarray(padded.astype(first.frames.dtype)),
                        float(n_grid), pad, period_s / n_grid, first.ref_id,
                        first.t_created, first.frame_ids, weight,
                        (resid.astype(np.float32), rows @ rows.T))
    return ref
