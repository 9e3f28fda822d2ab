"""How much a beat's strength moves its phase readings, learned from the readings.

What: a beat that contracts further than the reference (or less far) passes through
the reference's images at other times: its frames are read ahead of the true phase
in one part of the beat and behind it in another, by an amount that grows with the
beat's strength. One frame cannot tell a stronger beat from another phase (the image
is the same), so no matching removes it; but every frame of a beat shares its one
strength, and from beat to beat the pattern over the phase is the same. So:

- each completed beat's readings, less a line through it and its neighbours, are
  averaged in phase bins and less their own line over the beat (a beat that runs a
  little long or short, the rate's wander); across the recent beats the bins are
  centred (what every beat shares, a fixed warp of the reference's phase axis, stays)
  and the first rank-one component of what is left, ``strength_k * pattern(phase)``,
  is the strength's effect, kept while it stands well above what noise alone gives a
  rank-one fit (`learn`, on the analyzer's worker: a few milliseconds per beat);
- the beat in progress gets its strength at every frame from its readings so far
  against the line of the two beats before: an offset, a change of rate and the
  strength times the pattern, each with a prior (`BeatStrength.add`);
- the predictor fits its line through the readings less ``strength * pattern``
  (`BeatStrength.corrected`), while that has brought the readings of most recent
  beats nearer their beat's line (``useful``), and the readings as they are otherwise
  (and wherever the corrected ones give no prediction: `GatingAnalyzer._decide`).

Why: on hearts whose beats vary 0.85-1.15 in depth (a contracting chamber), the
trigger's true-phase error followed the strength of the beat it fired in (75-80 % of
its variance on a small chamber at 80 frames/s and on a chamber that retraces its
beat at 40). With the pattern taken from the simulator's truth (each beat's
strength still read from its frames), the same correction took the latter's SD from
0.23 to 0.05 rad; learned from the readings, 0.16 -> 0.13 over the corpus
(RESULTS.md). A heart whose stronger beats only deepen its image's contrast has no
such pattern (the phase matching's free gain takes it): nothing is learned, or the
check finds nothing gained, and nothing is corrected.
"""

from __future__ import annotations

import math
from concurrent.futures import Future
from dataclasses import dataclass

import numba
import numpy as np

from .executors import Executor, ImmediateExecutor, finished_result
from .predict import weighted_line

TWO_PI = 2.0 * math.pi
#: a beat whose length differs from the median by more than this share is irregular:
#: it and its neighbours are not learned from (their line bends)
IRREGULAR = 0.1
#: phase bins per frame of a beat (frames fall at other phases in each beat, so over
#: the beats learned from, more bins than a beat has frames fill)
BINS_PER_FRAME = 1.5
#: the correction is used while it takes at least this share off the squared distance
#: of most recent beats' readings from the line through their beat and its neighbours
USEFUL_GAIN = 0.1
#: ... over at least this many beats checked (fewer said "better" by chance: a lock
#: taken again after a heart that had only swung half its beat)
MIN_CHECKS = 8
#: largest spread (RMS over the beat, rad) that the beats' strengths may move the
#: readings by: a 15 % deeper beat moves them by 0.03-0.08 rad on the corpus's
#: chambers; ten times that is beats that move differently (a heart that swung
#: through half its beat for a while, then beat in full), not a strength
MAX_EFFECT = 0.3
#: priors of the beat in progress: its offset from the line of the beats before (rad)
#: and its change of rate (share of the rate)
OFFSET_SD = 0.1
RATE_SD = 0.1


@dataclass(frozen=True, slots=True)
class Learned:
    """What `learn` found over the recent beats."""

    pattern: np.ndarray | None  # (bins,) rad per unit strength; None: no pattern
    centre: np.ndarray  # (bins,) the fixed warp every beat shares (rad)
    strengths: dict[int, float]  # beat -> strength, the beats learned from
    strength_var: float  # their spread squared (robust): the prior of a new beat's
    noise_var: float  # of one reading about the model (rad^2)
    checks: dict[int, tuple[float, float]]  # beat -> squared distance without / with
    useful: bool


class BeatStrength:
    """Per-beat reading correction, in one reference's phase coordinates.

    Call `reset` at each new reference, `add` with every reading; `corrected` gives
    the readings the predictor fits. Learning runs on ``executor`` (the analyzer's
    worker; default: at once).
    """

    def __init__(self, executor: Executor | None = None, n_bins: int = 24,
                 max_beats: int = 16, min_beats: int = 6, significance: float = 2.0) -> None:
        self.executor = executor or ImmediateExecutor()
        self.n_bins = n_bins
        self.max_beats = max_beats
        self.min_beats = min_beats
        self.significance = significance
        self.reset(0.0)

    def reset(self, boundary: float, frames_per_beat: float = 16.0) -> None:
        """Forget everything (a new reference: new phase coordinates). ``boundary``:
        the reading phase where one beat ends and the next begins (the end of the
        heart's quietest stretch: the strength changes at rest)."""
        self.boundary = float(boundary)
        self.bins = int(max(4, min(self.n_bins, math.floor(frames_per_beat * BINS_PER_FRAME))))
        self._r = _Readings()
        self._job: Future | None = None
        self._learned_upto = -(1 << 62)
        self.model = Learned(None, np.zeros(self.bins), {}, 0.0, 0.0, {}, False)
        self._current: tuple[int, float] = (-(1 << 62), 0.0)  # beat in progress
        self._fit: BeatFit | None = None
        self._ended: dict[int, float] = {}  # estimates of ended beats not yet learned

    @property
    def pattern(self) -> np.ndarray | None:
        return self.model.pattern

    @property
    def useful(self) -> bool:
        return self.model.useful and self.model.pattern is not None

    # ------------------------------------------------------------------ input
    def add(self, t: float, u: float) -> None:
        """One reading: mid-exposure time (s), unwrapped phase (rad)."""
        self._take_job()
        k = math.floor((u - self.boundary) / TWO_PI)
        r = self._r
        if len(r) and k > r.last_beat:
            if self._current[0] == r.last_beat:  # the beat that ended keeps its estimate
                self._ended[self._current[0]] = self._current[1]
            if k - 1 > self._learned_upto and self._job is None:
                self._learned_upto = k - 1
                t_all, u_all, k_all = r.views()
                self._job = self.executor.submit(  # copies: the worker reads them later
                    learn, t_all.copy(), u_all.copy(), k_all.copy(), self.boundary,
                    self.bins, k, self.model, self.max_beats, self.min_beats,
                    self.significance)
                self._take_job()
        r.append(t, u, k)
        first = k - self.max_beats - 4
        if r.first_beat < first:
            r.drop_beats_before(first)
            for b in [b for b in self._ended if b < first]:
                del self._ended[b]
        if self.useful:
            self._estimate_current()

    # --------------------------------------------------------------- output
    def corrected(self, u: np.ndarray) -> np.ndarray:
        """Unwrapped readings ``u`` less their beat's strength times the pattern at
        their phase; ``u`` itself while the correction is not `useful`. No reading
        moves by more than 3 SDs of what the learned beats were moved by (a bin that
        the few beats learned from filled with noise stands out)."""
        if not self.useful:
            return u
        m = self.model
        assert m.pattern is not None
        first = math.floor((float(u.min()) - self.boundary) / TWO_PI)
        last = math.floor((float(u.max()) - self.boundary) / TWO_PI)
        eps = np.array([self._strength_of(b) for b in range(first, last + 1)])
        cap = 3.0 * math.sqrt(m.strength_var * float(np.mean(m.pattern ** 2)))
        return _correct(np.ascontiguousarray(u, dtype=np.float64), self.boundary,
                        m.pattern, first, eps, cap)

    def _strength_of(self, k: int) -> float:
        if k == self._current[0]:
            return self._current[1]
        learned = self.model.strengths.get(k)
        return learned if learned is not None else self._ended.get(k, 0.0)

    # -------------------------------------------------------------- internals
    def _take_job(self) -> None:
        job = self._job
        if job is None or not job.done():
            return
        self._job = None
        got = finished_result(job, "learning the beats' strength failed; correcting nothing")
        if got is not None:
            self.model = got

    def _estimate_current(self) -> None:
        """Strength of the beat in progress from its readings so far (`BeatFit`:
        one reading added per frame; started afresh at a new beat or model)."""
        t_all, u_all, k_all = self._r.views()
        cur = int(k_all[-1])
        fit = self._fit
        if fit is not None and fit.beat == cur and fit.model is self.model:
            fit.add(float(t_all[-1]), float(u_all[-1]))
        else:
            lo, mid = np.searchsorted(k_all, (cur - 2, cur))
            fit = self._fit = BeatFit(cur, t_all[lo:mid], u_all[lo:mid], self.model,
                                      self.boundary)
            for ti, ui in zip(t_all[mid:].tolist(), u_all[mid:].tolist(), strict=True):
                fit.add(ti, ui)
        self._current = (cur, fit.strength())


class _Readings:
    """The recent readings (time, unwrapped phase, beat number) in arrays that grow at
    the end and are cut at the front. Why not lists: handing the last ~20 beats to
    the learning job at every beat boundary converted three lists of up to ~1600
    readings to arrays on the frame path (~0.1 ms on those frames, the per-frame p99);
    here it is one memory copy, and an append is amortised O(1)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._t = np.empty(capacity)
        self._u = np.empty(capacity)
        self._k = np.empty(capacity, dtype=np.int64)
        self._lo = self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def last_beat(self) -> int:
        return int(self._k[self._hi - 1])

    @property
    def first_beat(self) -> int:
        return int(self._k[self._lo])

    def views(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(t, u, k) of the readings held, oldest first (views: valid until the next
        `append`)."""
        lo, hi = self._lo, self._hi
        return self._t[lo:hi], self._u[lo:hi], self._k[lo:hi]

    def append(self, t: float, u: float, k: int) -> None:
        if self._hi == self._t.size:
            self._make_room()
        i = self._hi
        self._t[i], self._u[i], self._k[i] = t, u, k
        self._hi = i + 1

    def drop_beats_before(self, beat: int) -> None:
        self._lo += int(np.searchsorted(self._k[self._lo:self._hi], beat))

    def _make_room(self) -> None:
        """Move the readings held to the front; twice the room when they fill half."""
        n = len(self)
        size = self._t.size * 2 if 2 * n > self._t.size else self._t.size
        for name in ("_t", "_u", "_k"):
            old = getattr(self, name)
            new = np.empty(size, dtype=old.dtype) if size != old.size else old
            new[:n] = old[self._lo:self._hi]
            setattr(self, name, new)
        self._lo, self._hi = 0, n


class BeatFit:
    """Strength of one beat from its readings so far against the line through the
    two beats before: their distance from it, as an offset, a change of rate (a beat
    that runs long bends away by a ramp) and the strength times the pattern, each
    with a prior; held within 3 SDs of the past beats'. 0 with fewer than 5 readings
    before. Each reading adds its share of the normal equations (O(1) a frame)."""

    def __init__(self, beat: int, tp: np.ndarray, up: np.ndarray, model: Learned,
                 boundary: float) -> None:
        self.beat = beat
        self.model = model
        self.boundary = boundary
        self.ok = model.pattern is not None and tp.size >= 5
        if self.ok:
            self.tm = float(tp.mean())
            self.slope, self.icpt, _ = weighted_line(tp - self.tm, up, np.ones_like(tp))
        self.var = max(model.noise_var, 1e-9)
        # the normal equations of (offset, rate change, strength), priors on the
        # diagonal; held as scalars (a 3 x 3 in numpy cost ~10x more per frame)
        self.a00, self.a11 = 1.0 / OFFSET_SD ** 2, 1.0 / RATE_SD ** 2
        self.a22 = 1.0 / max(model.strength_var, 1e-9)
        self.a01 = self.a02 = self.a12 = 0.0
        self.r0 = self.r1 = self.r2 = 0.0
        self.t0: float | None = None

    def add(self, t: float, u: float) -> None:
        if not self.ok:
            return
        m = self.model
        assert m.pattern is not None
        if self.t0 is None:
            self.t0 = t
        ph = (u - self.boundary) % TWO_PI
        e = (u - (self.icpt + self.slope * (t - self.tm)) - _interp1(m.centre, ph)) / self.var
        x1, x2 = (t - self.t0) * self.slope, _interp1(m.pattern, ph)  # x0 = 1
        iv = 1.0 / self.var
        self.a00 += iv
        self.a01 += x1 * iv
        self.a02 += x2 * iv
        self.a11 += x1 * x1 * iv
        self.a12 += x1 * x2 * iv
        self.a22 += x2 * x2 * iv
        self.r0 += e
        self.r1 += x1 * e
        self.r2 += x2 * e

    def strength(self) -> float:
        """The strength term of the solved normal equations (Cramer's rule), held
        within 3 SDs of the learned beats'."""
        if not self.ok or self.t0 is None:
            return 0.0
        a00, a01, a02, a11, a12, a22 = (self.a00, self.a01, self.a02, self.a11, self.a12,
                                        self.a22)
        r0, r1, r2 = self.r0, self.r1, self.r2
        det = (a00 * (a11 * a22 - a12 * a12) - a01 * (a01 * a22 - a12 * a02)
               + a02 * (a01 * a12 - a11 * a02))
        num = (a00 * (a11 * r2 - r1 * a12) - a01 * (a01 * r2 - r1 * a02)
               + r0 * (a01 * a12 - a11 * a02))
        eps = num / det
        lim = 3.0 * math.sqrt(self.model.strength_var)
        return min(max(eps, -lim), lim)


def learn(t: np.ndarray, u: np.ndarray, k: np.ndarray, boundary: float, bins: int,
          new_beat: int, previous: Learned, max_beats: int, min_beats: int,
          significance: float) -> Learned:
    """Pattern, centre and strengths from the beats before ``new_beat - 1`` (whose
    neighbours are both complete); see the module docstring. Pure: runs on a worker."""
    checks = dict(previous.checks)
    beats = np.arange(max(int(k[0]) + 1, new_beat - 1 - max_beats), new_beat - 1)
    none = Learned(None, previous.centre, {}, 0.0, 0.0, checks, False)
    if beats.size < min_beats:
        return none
    phase = np.mod(u - boundary, TWO_PI)
    index = np.minimum((phase / TWO_PI * bins).astype(np.int64), bins - 1)
    centre_then = _interp_bins(previous.centre, phase)
    M = np.full((beats.size, bins), np.nan)
    frames = 0
    # a beat that ran long or short (start to the next one's start, against the
    # median) bends the line through it and its neighbours: those are left out
    starts = np.array([t[k >= b][0] if (k >= b).any() else np.nan
                       for b in range(beats[0] - 1, beats[-1] + 3)])
    length = np.diff(starts)
    odd = np.abs(length / np.nanmedian(length) - 1.0) > IRREGULAR
    for r, b in enumerate(beats):
        near = (k >= b - 1) & (k <= b + 1)
        own = k == b
        i = b - beats[0]  # length[i] is beat b - 1's
        if own.sum() < 3 or near.sum() < 5 or odd[i:i + 3].any():
            continue
        tn = float(t[near].mean())
        slope, icpt, _ = weighted_line(t[near] - tn, u[near], np.ones(int(near.sum())))
        d = u[own] - (icpt + slope * (t[own] - tn))
        if int(b) not in checks and previous.pattern is not None:
            # what the model then in force would have taken off each reading as it
            # came (the beat's strength from its readings up to that one)
            before = (k >= b - 2) & (k < b)
            tp, up, tc, uc = t[before], u[before], t[own], u[own]
            fit = BeatFit(int(b), tp, up, previous, boundary)
            applied = np.empty(tc.size)
            for i in range(tc.size):
                fit.add(float(tc[i]), float(uc[i]))
                applied[i] = fit.strength()
            applied *= _interp_bins(previous.pattern, phase[own])
            base = d - centre_then[own]
            checks[int(b)] = (float(base @ base),
                              float((base - applied) @ (base - applied)))
        # a frame read on the wrong side of the beat is no part of its strength
        dev = np.abs(d - np.median(d))
        keep = dev <= max(4.0 * 1.4826 * float(np.median(dev)), 0.05)
        j = index[own]
        n = np.bincount(j, keep, bins)
        with np.errstate(invalid="ignore", divide="ignore"):
            M[r] = np.where(n > 0, np.bincount(j, keep * d, bins) / n, np.nan)
        frames += int(keep.sum())
    for b in sorted(checks)[:-max_beats]:
        del checks[b]
    # most beats, not a few large ones (a beat that ran long dwarfs the rest)
    ratios = [c / r if r > 0 else 1.0 for r, c in checks.values()]
    useful = len(ratios) >= MIN_CHECKS and float(np.median(ratios)) < 1.0 - USEFUL_GAIN
    none = Learned(None, previous.centre, {}, 0.0, 0.0, checks, False)
    obs = np.isfinite(M)
    rows = obs.sum(axis=1) >= 3
    if rows.sum() < min_beats:
        return none
    M, obs, beats = M[rows], obs[rows], beats[rows]
    # each beat's own offset and ramp are the line's business (the rate wanders from
    # beat to beat); what bends away from a line over the beat is the strength's
    row_mean = np.nanmean(M, axis=1)
    x = (np.arange(bins) + 0.5) / bins - 0.5
    for r in range(M.shape[0]):
        o = obs[r]
        M[r, o] -= np.polyval(np.polyfit(x[o], M[r, o], 1), x[o])
    count = obs.sum(axis=0)
    centre = np.where(count > 0, np.nansum(M, axis=0) / np.maximum(count, 1), 0.0)
    D = np.where(obs, M - centre, 0.0)
    start = D[int(np.argmax((D * D).sum(axis=1)))]
    if not start.any():
        return none
    eps, pattern = _rank_one(D, obs, start)
    # beats the pattern does not describe (a blood cell, a misread stretch) left out
    rms = np.sqrt(((D - np.outer(eps, pattern)) ** 2 * obs).sum(axis=1)
                  / np.maximum(obs.sum(axis=1), 1))
    # ... and beats whose strength stands far out (one beat read wrong throughout
    # would set the spread that every later beat's strength is allowed)
    spread = 1.4826 * float(np.median(np.abs(eps)))
    good = (rms <= 2.5 * np.median(rms)) & (np.abs(eps) <= 4.0 * spread)
    if good.sum() < min_beats:
        return none
    D, obs, beats, row_mean = D[good], obs[good], beats[good], row_mean[good]
    eps, pattern = _rank_one(D, obs, pattern)
    fit = np.outer(eps, pattern) * obs
    n_obs = int(obs.sum())
    dof = n_obs - beats.size - 2 * bins
    if dof < 4:
        return none
    res_var = float(((D - fit) ** 2 * obs).sum()) / dof
    if float((fit ** 2).sum()) < significance * res_var * (
            math.sqrt(beats.size) + math.sqrt(bins)) ** 2:
        return none  # no more than noise gives a rank-one fit
    # the pattern's mean over the beat (a stronger beat also read late or early as a
    # whole): the line through each beat and its neighbours took a third of each
    # one's, so what is left of it is (2 eps_k - eps_k-1 - eps_k+1) / 3 times it
    of = dict(zip(beats.tolist(), eps.tolist(), strict=True))
    z = np.array([(2 * e - of.get(b - 1, 0.0) - of.get(b + 1, 0.0)) / 3.0
                  for b, e in of.items()])
    full = pattern + _shrunk_slope(z, row_mean)
    if previous.pattern is not None and previous.pattern.size == full.size \
            and float(full @ previous.pattern) < 0:
        full, eps = -full, -eps  # one sign from one learning to the next
    # one reading's noise: the bins' residual times the readings per bin
    spread = 1.4826 * float(np.median(np.abs(eps)))
    if spread * math.sqrt(float(np.mean(full ** 2))) > MAX_EFFECT:
        return none  # not a strength: the beats differ in how they move
    return Learned(full, centre, {int(b): float(e) for b, e in zip(beats, eps, strict=True)},
                   spread ** 2, res_var * max(frames / max(n_obs, 1), 1.0), checks, useful)


def _interp_bins(values: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Per-bin ``values`` at ``phase`` (rad from the boundary), linear between the
    bins' centres, cyclic."""
    n = values.size
    x = np.asarray(phase) / TWO_PI * n - 0.5
    i = np.floor(x).astype(np.int64)
    f = x - i
    return (1 - f) * values[i % n] + f * values[(i + 1) % n]


@numba.njit(cache=True, nogil=True)
def _correct(u, boundary, pattern, first, eps, cap):  # pragma: no cover - compiled
    """u - clip(eps[beat - first] * pattern(phase), -cap, cap), the pattern linear
    between the bins' centres (a kernel: the predictor asks for it every frame)."""
    n = pattern.size
    out = np.empty_like(u)
    for i in range(u.size):
        x = u[i] - boundary
        k = math.floor(x / TWO_PI)
        ph = x - k * TWO_PI
        y = ph / TWO_PI * n - 0.5
        j = math.floor(y)
        f = y - j
        a = j % n
        c = eps[k - first] * ((1.0 - f) * pattern[a] + f * pattern[(a + 1) % n])
        out[i] = u[i] - min(max(c, -cap), cap)
    return out


def warm_up() -> None:
    """Compile `_correct` before frames stream (`gating.warmup`)."""
    _correct(np.zeros(2), 0.0, np.zeros(4), 0, np.zeros(1), 1.0)


def _interp1(values: np.ndarray, phase: float) -> float:
    """`_interp_bins` at one phase."""
    n = values.size
    x = phase / TWO_PI * n - 0.5
    i = math.floor(x)
    f = x - i
    return float((1 - f) * values[i % n] + f * values[(i + 1) % n])


def _shrunk_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Slope of ``y`` on ``x`` with a prior N(0, 1) on it, the noise variance read
    off the residuals: where ``x`` barely varies (beats of one strength) the noise
    alone would make the slope anything."""
    xc, yc = x - x.mean(), y - y.mean()
    xx = float(xc @ xc)
    if xx <= 0:
        return 0.0
    raw = float(xc @ yc) / xx
    noise = float(((yc - raw * xc) ** 2).sum()) / max(yc.size - 2, 1)
    return float(xc @ yc) / (xx + noise)


def _rank_one(D: np.ndarray, obs: np.ndarray, pattern: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """``D ~ outer(eps, pattern)`` over the observed entries (alternating least
    squares from ``pattern``), the pattern scaled to unit RMS."""
    eps = np.zeros(D.shape[0])
    for _ in range(30):
        eps = (D * pattern).sum(axis=1) / np.maximum((obs * pattern ** 2).sum(axis=1), 1e-12)
        pattern = (D * eps[:, None]).sum(axis=0) / np.maximum(
            (obs * eps[:, None] ** 2).sum(axis=0), 1e-12)
        scale = math.sqrt(float(np.mean(pattern ** 2))) or 1.0
        pattern = pattern / scale
        eps = eps * scale
    return eps, pattern
