"""Reference heartbeat: find one period on a rolling buffer and keep it with padding.

What: every new frame is compared (SAD, on a binned copy) with the frames of the last
``max_period_s`` seconds; the SAD-versus-lag curve dips where the heart returns to the
same state, i.e. at one period. A V-fit through the three points around the dip gives
a sub-frame period. A period is only accepted once ``n_stable`` consecutive estimates
agree (stability gate); the reference is cut around the frame ``lag`` frames back so
that ``pad`` frames after it already exist, and the period used is the median of the
stable run (measured: single estimates at 20 fps were off by up to 4 %, the median
stays within 1 %). The reference is then one period plus ``pad``
frames on each side, so the phase V-fit always has neighbours.

Why re-try every frame: a single attempt on a big block fails whenever that block
contains an irregular beat or motion; a rolling search recovers as soon as the heart
behaves, and it costs one binned SAD row per frame.
"""

from __future__ import annotations

import itertools
import logging
import math
import statistics
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .repeat import repeat_weight, to_frame
from .sad import bin_image, sad_indexed

logger = logging.getLogger(__name__)

TWO_PI = 2.0 * math.pi


def v_fit(ym: float, y0: float, yp: float) -> float | None:
    """Sub-sample offset in [-0.5, 0.5] of the apex of a symmetric V through 3 points.

    ``y0`` must be the smallest; returns None when no V exists (flat or not a minimum),
    so the caller falls back to the integer position.
    """
    if y0 > ym or y0 > yp:
        return None
    s = max(ym, yp) - y0
    if s <= 0:
        return None
    return float(np.clip((ym - yp) / (2.0 * s), -0.5, 0.5))


@dataclass(frozen=True, slots=True)
class Reference:
    """One heartbeat of frames plus padding; the coordinate system for phase.

    ``frames[pad]`` is phase 0 and ``frames[pad + period]`` (fractional index) would be
    phase 2*pi. ``frame_interval`` is the median frame interval (s) when it was taken.
    """

    frames: np.ndarray  # (m, h, w) uint8/uint16, C-contiguous
    period: float  # frames
    pad: int
    frame_interval: float  # s
    ref_id: int
    t_created: float  # absolute time (s) of the newest frame used
    frame_ids: tuple[int, ...] = field(default=())
    #: per-pixel share of the variance that repeats with the beat (frame shape): from
    #: the period search's buffer at the lock (`repeat`), then from every fold (`fold`);
    #: None when neither had enough beats
    weight: np.ndarray | None = None
    #: a folded reference's sampling noise (`fold.fold_reference`): ``(resid, share)``,
    #: the per-pixel variance of the folded frames about the fold (frame shape) and the
    #: (m, m) overlap of the frames averaged into each pair of samples, so sample ``k``
    #: carries ``share[k, k] * resid`` of noise and samples ``k``, ``l`` share
    #: ``share[k, l] * resid``; None for a reference of single frames (equal noise)
    noise: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def period_s(self) -> float:
        return self.period * self.frame_interval

    def index_to_phase(self, pos: float) -> float:
        """Fractional reference index -> phase in [0, 2*pi)."""
        return float(np.mod(TWO_PI * (pos - self.pad) / self.period, TWO_PI))

    def phase_to_index(self, phase: float) -> float:
        return self.pad + float(np.mod(phase, TWO_PI)) / TWO_PI * self.period

    def image_at(self, phase: float) -> np.ndarray:
        """The heart's image at ``phase``: cross-fade of the two frames around it."""
        x = self.phase_to_index(phase)
        i = min(int(math.floor(x)), self.frames.shape[0] - 2)
        a = x - i
        img = (1 - a) * self.frames[i].astype(float) + a * self.frames[i + 1]
        return np.rint(img).astype(self.frames.dtype)

    def frame_changes(self) -> np.ndarray:
        """SAD between consecutive reference frames over one cycle (len floor(period))."""
        n = int(math.floor(self.period))
        idx = np.arange(self.pad, self.pad + n)
        out = np.empty(n)
        for i, j in enumerate(idx):
            out[i] = float(sad_indexed(self.frames, np.array([j + 1]), self.frames[j])[0])
        return out

    def default_target_phase(self, step_information: np.ndarray | None = None) -> float:
        """The end of the half beat in which the heart's image changes the most.

        Why there: a phase is known to the analyzer only through how the image changes
        with it, and a trigger is predicted from the frames just before it. Summing
        the squared frame-to-frame change (the information each step carries about
        the phase) over the half beat before each candidate, and taking the largest,
        puts the frames a prediction is made from in the part of the beat that moves
        most, whatever the heart looks like. (The published rule, fastest change +
        P/3, lands in a long quiet diastole on some hearts, where every frame looks
        alike and the target can only be timed blindly from the last beat.)

        ``step_information``: the squared change per step as the phase estimator
        measures it (its pixel weights: the share of each pixel that repeats with the
        beat, so drifting tissue and noise do not count as change); default, the
        squared SAD of the raw frames.
        """
        if step_information is None:
            c = self.frame_changes()
            steps = c ** 2
        else:  # the estimator's own measure: weighted squared change per step
            n_steps = int(math.floor(self.period))
            steps = np.asarray(step_information, dtype=float)[self.pad:self.pad + n_steps]
        n = steps.size
        info = np.concatenate([steps, steps])
        half = max(1, n // 2)
        window = np.convolve(info, np.ones(half), "valid")[:n]  # steps k .. k+half-1
        k = int(np.argmax(window))
        return self.index_to_phase(self.pad + k + half)

    def barrier_phase(self) -> float:
        """Phase where frame-to-frame change first rises after the quietest stretch.

        The quiet stretch (smallest smoothed change) gives unreliable phases; a
        prediction fit should not reach back past the rise that ends it.
        """
        c = self.frame_changes()
        n = c.size
        sm = (np.roll(c, 1) + c + np.roll(c, -1)) / 3.0
        q = int(np.argmin(sm))
        thr = sm.min() + 0.5 * (sm.max() - sm.min())
        for k in range(1, n + 1):
            if sm[(q + k) % n] > thr:
                return self.index_to_phase(self.pad + (q + k) % n)
        return self.index_to_phase(self.pad + q)


@dataclass(frozen=True, slots=True)
class PeriodEstimate:
    period: float  # frames (sub-frame)
    contrast: float  # (max - dip) / max of the averaged difference curve
    significance: float  # (max - dip) / noise of the curve


@dataclass(frozen=True, slots=True)
class NoPeriod:
    """Why no period was found in a difference curve (one line for the user)."""

    reason: str
    contrast: float = math.nan
    significance: float = math.nan
    best_lag: float = math.nan  # frames: the strongest repeat, too weak to count


def _apex(d: np.ndarray, i: int) -> tuple[float, float]:
    """Sub-sample position and value of the V through d[i-1], d[i], d[i+1]."""
    off = v_fit(float(d[i - 1]), float(d[i]), float(d[i + 1]))
    if off is None:
        return float(i), float(d[i])
    slope = max(float(d[i - 1]), float(d[i + 1])) - float(d[i])
    return i + off, float(d[i]) - slope * abs(off)


def estimate_period(d: np.ndarray, min_period: int, min_significance: float = 10.0,
                    noise: float = 0.0, depth: float = 0.35
                    ) -> PeriodEstimate | NoPeriod:
    """Period (frames) from a difference-vs-lag curve ``d`` (``d[k]`` at lag k; d[0] unused).

    The curve is the mean absolute difference of frame pairs ``k`` apart; it dips to
    the noise floor at every multiple of the period. Candidates are its local minima
    at lags >= ``min_period``; each is placed and valued by a V-fit (the curve is a V
    near a dip, and at low frame rates the sampled value at the nearest integer lag
    sits well above the true dip). The period is the SHORTEST lag whose dip comes
    within ``depth`` of the deepest one: multiples of the period dip as deep, and
    picking the deepest would lock on two beats at 20 frames/s.

    At low frame rates a beat of, say, 8.5 frames falls between integer lags, where
    the curve stays high, while its double (17) lands on one and dips to the floor
    (a beat of 5.6 frames: its triple). So a dip near a half, third or quarter of a
    deep one is the beat when it is clearly a dip: as low as 60 % of the way down, or
    at least half the required significance deep (on the corpus' hearts, wiggles at
    half a beat are 0-1.5x the noise; a beat between integer lags, 8-40x). A beat
    shorter than ``min_period`` frames found that way means the heart is too fast for
    the frame rate; its repeats are not taken for the beat.

    A dip counts by its depth below the highest point of the curve before it (a
    heart's curve climbs to half a beat and falls back; a drifting scene's only
    climbs, and a wiggle on the climb is no dip), and that depth must stand out of
    the curve's own noise (``noise``: SD of the curve from independent halves of the
    data) by ``min_significance``.
    """
    n = d.size
    if n < min_period + 2:
        return NoPeriod("not enough frames yet")
    seg = d[1:]
    hi = float(seg.max())
    if hi <= 0:
        return NoPeriod("frames do not change at all", 0.0, 0.0)
    dips = []  # (position, apex value, depth below the highest point before it)
    for i in range(2, n - 1):
        if d[i] <= d[i - 1] and d[i] < d[i + 1]:
            pos, val = _apex(d, i)
            dips.append((pos, val, float(d[1:i].max()) - val))
    cands = [c for c in dips if c[0] >= min_period]
    short = [c for c in dips if c[0] < min_period]  # a beat this short is too fast
    if not cands:
        if short and short[0][1] < float(seg.min()) + 0.2 * (hi - float(seg.min())):
            return _too_fast(short[0][0], min_period)
        return NoPeriod("no repeating change: the differences only grow with time "
                        "(drift or a non-periodic scene)")
    noise = noise if noise > 0 else 1e-300
    best = max(cands, key=lambda c: c[2])
    significance = best[2] / noise
    contrast = best[2] / (best[1] + best[2]) if best[1] + best[2] > 0 else 0.0
    if significance < min_significance:
        return NoPeriod(f"repeat too weak: the best is {significance:.1f}x the noise, "
                        f"{min_significance:g}x needed; contrast {contrast:.3f}",
                        contrast, significance, best[0])
    real = [c for c in cands if c[2] / noise >= min_significance]
    lo = min(v for _, v, _ in real)
    top = max(v + dp for _, v, dp in real)
    deep = [p for p, v, _ in real if v <= lo + depth * (top - lo)]

    def clear(v: float, dp: float) -> bool:  # a dip, not a wiggle on the curve
        return v <= lo + 0.6 * (top - lo) or dp >= 0.5 * min_significance * noise

    pos = deep[0]
    # a clear dip at a half, a third or a quarter of a deep dip's lag is the beat and
    # the deep one its repeat: at 20 frames/s a beat of 5.6 or 8.5 frames falls
    # between integer lags and dips shallowly, while its double or triple lands on one
    for p, v, dp in cands:  # the beat need not stand out alone: its repeat does
        if p < pos and any(_is_repeat(q, p) for q in deep) and clear(v, dp):
            pos = p
            break
    # ... and if that beat is shorter than min_period frames, the heart is too fast
    # for the frame rate: its repeats must not be taken for the beat
    for p, v, dp in short:
        if any(_is_repeat(q, p) for q in (*deep, pos)) and clear(v, dp):
            return _too_fast(p, min_period)
    return PeriodEstimate(pos, contrast, significance)


def _too_fast(p: float, min_period: int) -> NoPeriod:
    return NoPeriod(f"frame rate too low for the period: it repeats every {p:.2f} "
                    f"frames, fewer than {min_period}")


def _is_repeat(q: float, p: float) -> bool:
    """Whether lag ``q`` is 2, 3 or 4 times lag ``p`` (to a frame, or 10 % of ``q``)."""
    k = round(q / p)
    return 2 <= k <= 4 and abs(q - k * p) <= max(1.0, 0.1 * q)


class PeriodFinder:
    """Rolling buffer + averaged difference curve + stability gate -> `Reference`.

    Every frame (while ``search``) is compared (SAD of binned copies, per pixel) with
    every earlier frame in the buffer; the curve for lag k is the mean over ALL pairs
    k apart, not one frame's row. Why: one frame's row depends on where in the beat
    that frame is (a frame in a long quiet diastole matches a whole stretch of the
    previous diastole, and its dip wanders through the beat); the mean over a window
    of at least a period weighs every phase alike, so the dip sits at the period.
    Lags are used only where the window holds at least as many pairs as the lag, so
    each lag's mean spans a full cycle of the candidate period. The noise of the curve
    is the spread between the curves of the older and the newer half of the pairs.

    A period is accepted once ``n_stable`` consecutive estimates agree; the reference
    is cut so that ``pad`` frames after it already exist.
    """

    def __init__(self, max_period_s: float = 1.5, min_period_frames: int = 5,
                 min_accept_period: float = 5.0, pad: int = 2, n_stable: int = 9,
                 lag: int = 3, stable_rel: float = 0.05, stable_abs: float = 0.6,
                 min_significance: float = 10.0, search_size: int = 64,
                 min_period_s: float = 0.1) -> None:
        if lag < pad:
            raise ValueError("lag must be >= pad so the padding after the period exists")
        self.max_period_s = max_period_s
        self.min_period_s = min_period_s
        self.min_period_frames = min_period_frames
        self.min_accept_period = min_accept_period
        self.pad = pad
        self.n_stable = n_stable
        self.lag = lag
        self.stable_rel = stable_rel
        self.stable_abs = stable_abs
        self.min_significance = min_significance
        self.search_size = search_size
        self._frames: deque[np.ndarray | None] = deque()  # None: a missing frame
        self._binned: deque[int] = deque()  # slots of the binned frames in _ring; -1: hole
        self._ring = np.empty((0, 1, 1), np.uint16)
        self._next_slot = 0
        self._times: deque[float] = deque()
        self._ids: deque[int] = deque()
        self._rows: deque[np.ndarray | None] = deque()  # per frame: SAD vs lags 1..
        self._estimates: deque[float | None] = deque(maxlen=n_stable)
        self._bin = 0
        self.last_contrast = math.nan
        self.last_significance = math.nan
        self.last_period = math.nan  # frames, the latest single estimate
        # why there is no reference (yet): "<kind>: <details>", kind before the colon
        self.reason = "no frames yet"
        self._interval_key: tuple[int, float] = (0, math.nan)
        self._interval = math.nan
        self._still_until = -math.inf  # frames before this time showed a still scene

    def reset(self, keep_buffer: bool = False) -> None:
        """Forget estimates (and optionally the frame buffer)."""
        self._estimates.clear()
        if not keep_buffer:
            for q in (self._frames, self._binned, self._times, self._ids, self._rows):
                q.clear()
            self._still_until = -math.inf

    def frame_interval(self) -> float:
        """Median of the last 31 frame intervals (s), nan with fewer than 2 frames."""
        n = len(self._times)
        if n < 2:
            return math.nan
        key = (n, self._times[-1])  # asked several times per frame: computed once
        if key != self._interval_key:
            newest = list(itertools.islice(reversed(self._times), 32))
            self._interval = statistics.median(
                b - a for b, a in zip(newest, newest[1:], strict=False))
            self._interval_key = key
        return self._interval

    MISSING_RATIO = 1.5  # an interval this many times the usual one lost a frame

    def gap_before(self, t: float) -> float:
        """Seconds from the newest buffered frame to ``t`` when frames are missing in
        between (the interval exceeds `MISSING_RATIO` usual frame intervals), else 0."""
        dt = self.frame_interval()
        if not self._times or not dt > 0 or t - self._times[-1] <= self.MISSING_RATIO * dt:
            return 0.0
        return t - self._times[-1]

    def recent(self, n: int) -> tuple[list[np.ndarray], np.ndarray]:
        """The newest ``n`` frames of the buffer (time order) and their times; none of
        a still stretch before the heart beat (`_still_prefix`)."""
        k = min(n, len(self._frames) - self._n_still())
        keep = [i for i in range(len(self._frames) - k, len(self._frames))
                if self._frames[i] is not None]  # holes left by missing frames: none
        return [self._frames[i] for i in keep], np.array([self._times[i] for i in keep])

    def _span(self, start: int, m: int) -> np.ndarray | None:
        """Frames ``start .. start + m - 1`` of the buffer as one stack; a single
        missing frame is the mean of its two neighbours (at the frame rates gating
        runs at the heart moves little from one frame to the next, and the fold
        replaces the whole reference within beats), two in a row give None."""
        frames = [self._frames[i] for i in range(start, start + m)]
        for i, f in enumerate(frames):
            if f is None:
                if not 0 < i < m - 1 or frames[i - 1] is None or frames[i + 1] is None:
                    return None
                pair = frames[i - 1].astype(np.float32) + frames[i + 1]
                frames[i] = np.rint(0.5 * pair).astype(frames[i - 1].dtype)
        return np.stack(frames)

    def _holes(self, t: float, gap: float) -> None:
        """Keep the places of the frames missing before the one at ``t``: a hole has
        a time and no image, and no pair with it counts in the difference curve.

        Why not restart the search: a camera that drops one frame in fifty (a busy USB
        bus) restarted it every second, so a heart that a lock needs ~1 s of frames
        for locked after 6 s, and with one in ten dropped never. The lags of the
        curve count frame intervals, so the missing frames must keep their places.
        """
        dt = self.frame_interval()
        missing = max(1, int(round(gap / dt)) - 1)
        t0 = self._times[-1]
        for i in range(1, missing + 1):
            self._frames.append(None)
            self._binned.append(-1)
            self._times.append(t0 + gap * i / (missing + 1))
            self._ids.append(-1)
            self._rows.append(None)
        logger.debug("%d frame(s) missing before %.3f s: kept as holes", missing, t)

    def push(self, image: np.ndarray, t: float, frame_id: int, search: bool,
             ref_id: int = 0) -> Reference | None:
        """Add a frame; when ``search``, try to complete a reference and return it."""
        gap = self.gap_before(t)
        if self._frames and self._frames[-1].shape != image.shape:
            self.reset()
        elif gap > self.max_period_s:  # the heart may have moved on: start again
            self.reset()
            self.reason = "frames missing: period search restarted"
        elif gap:  # lags count frames: the missing ones keep their places, as holes
            self._holes(t, gap)
        if self._bin == 0 or not self._frames:
            self._bin = max(1, int(min(image.shape) // self.search_size))
        b = bin_image(image, self._bin)
        slot = self._store(b)  # before taking the deque: a ring that grows replaces it
        self._frames.append(image)
        self._binned.append(slot)
        self._times.append(t)
        self._ids.append(frame_id)
        self._rows.append(None)
        dt = self.frame_interval()
        # two slowest periods: lags up to one period, each averaged over a period
        horizon = 2.0 * self.max_period_s + (self.lag + self.pad + 3) * (
            dt if dt > 0 else 0.1)
        while len(self._times) > 2 and t - self._times[0] > horizon:
            for q in (self._frames, self._binned, self._times, self._ids, self._rows):
                q.popleft()
        if not search:
            return None
        return self._search(dt, ref_id)

    def _store(self, b: np.ndarray) -> int:
        """Put a binned frame into the ring (grown as the buffer needs); its slot."""
        cap = self._ring.shape[0]
        if self._ring.shape[1:] != b.shape or self._ring.dtype != b.dtype or \
                len(self._binned) >= cap:
            same = self._ring.shape[1:] == b.shape
            old = [self._ring[k] for k in self._binned if k >= 0] if same else []
            cap = max(64, 2 * (len(self._binned) + 1))
            self._ring = np.empty((cap, *b.shape), b.dtype)
            for i, f in enumerate(old):
                self._ring[i] = f
            new_slots = iter(range(len(old)))  # holes stay holes
            self._binned = deque((next(new_slots) if k >= 0 else -1 for k in self._binned)
                                 if same else ())
            self._next_slot = len(old)
        slot = self._next_slot % cap
        self._ring[slot] = b
        self._next_slot = slot + 1
        return slot

    def _fill_rows(self) -> None:
        """Each frame's SAD against every earlier frame of the buffer (per pixel).
        Rows of frames pushed while locked are computed here when a search resumes."""
        n = len(self._binned)
        ring = self._ring
        npx = ring.shape[1] * ring.shape[2]
        slots = np.fromiter(self._binned, np.int64, n)
        for j in range(1, n):
            if self._rows[j] is None:
                back = slots[j - 1::-1]
                seen = back >= 0  # pairs with a hole (or a hole itself) stay NaN
                row = np.full(j, np.nan)
                if slots[j] >= 0 and seen.any():
                    row[seen] = sad_indexed(ring, back[seen], ring[slots[j]]) / npx
                self._rows[j] = row

    #: a frame differs from the first frame of a still stretch by at most this many
    #: times the stretch's frame-to-frame difference (pure noise; the SAD of 64 x 64
    #: binned pixels scatters by ~2 % between pairs, so 1.3 is far beyond chance)
    STILL_RATIO = 1.3

    def _still_prefix(self) -> int:
        """How many frames at the start of the buffer to leave out of the search: a
        still scene that lasted longer than the slowest beat (no heart is still that
        long), up to its last frame; 0 when there is none.

        Why: the difference curve averages every pair of the window. When a heart
        starts beating (or beats again) after a still stretch, the still pairs flatten
        the older half of the window against the newer, and that difference is the
        curve's noise: the beat stays "too weak" until the still frames have left the
        window, 2-3 s later. Still means every frame of the stretch is as close to its
        first frame as neighbouring frames are to each other (sensor noise only). Once
        seen, the stretch stays out while its frames are in the buffer, also after its
        first frames have left and what remains of it is shorter than a beat.
        """
        n = len(self._binned)
        rows = self._rows
        times = self._times
        if n > 2 and all(rows[j] is not None for j in (1, n - 1)):
            lag1 = np.array([rows[j][0] for j in range(1, n)])
            to_first = np.array([rows[j][j - 1] for j in range(1, n)])
            p = self._still_run(to_first, lag1)  # the last still frame
            if p < n - 1 and times[p] - times[0] > self.max_period_s:
                self._still_until = max(self._still_until, times[p])
        return self._n_still()

    def still_for(self) -> float:
        """Seconds the newest frames have shown a still scene: each as close to the
        newest frame as neighbouring frames are to each other (sensor noise only);
        0 when the newest frames move. What a heart that stopped looks like."""
        slots = [k for k in self._binned if k >= 0]
        times = [t for t, k in zip(self._times, self._binned, strict=True) if k >= 0]
        if len(slots) < 3:
            return 0.0
        ring = self._ring
        idx = np.array(slots[::-1], np.int64)  # newest first
        npx = ring.shape[1] * ring.shape[2]
        to_newest = sad_indexed(ring, idx[1:], ring[idx[0]]) / npx
        lag1 = np.array([sad_indexed(ring, idx[i + 1:i + 2], ring[idx[i]])[0]
                         for i in range(idx.size - 1)]) / npx
        return float(times[-1] - times[-1 - self._still_run(to_newest, lag1)])

    def _still_run(self, to_end: np.ndarray, lag1: np.ndarray) -> int:
        """How many frames, counted from one end of a run of frames, show a still scene:
        ``to_end[i]`` is frame ``i + 1``'s distance to the end frame, ``lag1[i]`` its
        distance to its neighbour towards the end. Still while each frame is within
        `STILL_RATIO` of the mean neighbour distance so far (a NaN, a hole, ends it)."""
        noise = np.cumsum(lag1) / np.arange(1, lag1.size + 1)
        moved = ~(to_end <= self.STILL_RATIO * noise)
        return int(np.argmax(moved)) if moved.any() else lag1.size

    def _n_still(self) -> int:
        """Frames at the start of the buffer that belong to a known still stretch."""
        k, n = 0, len(self._times)
        while k < n and self._times[k] < self._still_until:
            k += 1
        return k

    def _curve(self, start: int = 0) -> tuple[np.ndarray, float]:
        """Mean per-pixel SAD vs lag over all pairs of the buffer from frame ``start``
        on, and its noise."""
        n = len(self._binned) - start
        kmax = n // 2  # lag k needs >= k pairs
        mat = np.zeros((n, kmax))  # mat[j, k-1]: frame j against the frame k back
        for j in range(1, n):
            m = min(j, kmax)
            mat[j, :m] = self._rows[start + j][:m]
        jj = np.arange(n)[:, None]
        kk = np.arange(1, kmax + 1)[None, :]
        valid = (kk <= jj) & ~np.isnan(mat)  # the partner is in the buffer, no hole
        mat[~valid] = 0.0
        # older and newer halves of the pairs of each lag (split at their middle)
        newer = 2 * jj >= n - 1 + kk
        halves = np.stack([valid & ~newer, valid & newer])  # (2, n, kmax)
        sums = (halves * mat).sum(axis=1)
        counts = halves.sum(axis=1)
        d = np.concatenate([[0.0], sums.sum(axis=0) / np.maximum(counts.sum(axis=0), 1)])
        ok = (counts > 0).all(axis=0)
        if ok.sum() < 3:
            return d, math.inf
        diff = (sums[0] / np.maximum(counts[0], 1) - sums[1] / np.maximum(counts[1], 1))[ok]
        # SD of the curve (the mean of two halves), robust (MAD) to the odd lag
        noise = 1.4826 * float(np.median(np.abs(diff - np.median(diff)))) / 2.0
        return d, noise

    def _search(self, dt: float, ref_id: int) -> Reference | None:
        n = len(self._binned)
        if n < 2 * (self.min_period_frames + 2) or not dt > 0:
            self._estimates.append(None)
            self.reason = "collecting frames"
            return None
        self._fill_rows()
        start = self._still_prefix()
        if n - start < 2 * (self.min_period_frames + 2):
            self._estimates.append(None)
            self.reason = "no repeating change: the scene is still"
            return None
        d, noise = self._curve(start)
        est = estimate_period(d, self.min_period_frames, self.min_significance, noise)
        self.last_contrast = est.contrast
        self.last_significance = est.significance
        if isinstance(est, NoPeriod):
            self._estimates.append(None)
            self.reason = est.reason
            if est.best_lag * dt < self.min_period_s:
                # a weak repeat faster than any heart: most likely frame times that are
                # wrong (a --fps several times too high), as the user can check
                self.reason += (f"; the strongest repeat, every {est.best_lag * dt * 1e3:.0f}"
                                f" ms at {1.0 / dt:.4g} frames/s, is too fast for a heart: "
                                "is the frame rate right?")
            elif est.reason.startswith(("no repeating change", "repeat too weak")):
                # the scale it looked at: a heart slower than that shows no repeat
                self.reason += (f"; looked for a repeat within {self.max_period_s:g} s at "
                                f"{1.0 / dt:.4g} frames/s")
            return None
        self._estimates.append(est.period)
        self.last_period = est.period
        if len(self._estimates) < self.n_stable or any(e is None for e in self._estimates):
            self.reason = "period estimates not yet stable"
            return None
        vals = np.array(self._estimates, dtype=float)
        med = float(np.median(vals))
        spread = vals.max() - vals.min()
        if spread > max(self.stable_abs, self.stable_rel * med):
            self.reason = (f"period estimates disagree: spread {spread:.1f} frames around "
                           f"{med:.1f} (irregular or no heartbeat)")
            return None
        period = med  # median of the stable run: less noisy than any single estimate
        if period * dt < self.min_period_s:
            # no heart beats this fast: the frame times are wrong (a wrong --fps) or
            # something else flickers in the scene
            self.reason = (f"repeat too fast for a heart: every {period * dt * 1e3:.0f} ms "
                           f"({1.0 / (period * dt):.1f} Hz, at most "
                           f"{1.0 / self.min_period_s:g} Hz expected) at {1.0 / dt:.4g} "
                           "frames/s; is the frame rate right?")
            return None
        if period * dt > self.max_period_s:
            # the dips of a heart too fast for the frame rate can line up only at
            # several beats; no single beat lasts this long
            self.reason = (f"repeat too slow for a heart: every {period * dt:.2f} s, over "
                           f"the {self.max_period_s:g} s expected at most; a heart too "
                           f"fast for {1.0 / dt:.4g} frames/s repeats only every few "
                           "beats")
            return None
        if period <= self.min_accept_period:
            self.reason = (f"frame rate too low for the period: {period:.1f} frames per "
                           f"beat, needs more than {self.min_accept_period:g}")
            return None
        e = n - 1 - self.lag  # buffer index of the frame whose estimate is used
        m = int(math.floor(period)) + 1 + 2 * self.pad
        start = e - int(math.floor(period)) - self.pad
        if start < 0:
            return None
        frames = self._span(start, m)
        if frames is None:
            self.reason = "waiting for a beat without missing frames to take as reference"
            return None
        ids = tuple(self._ids[i] for i in range(start, start + m))
        weight = self._repeat_weight(period, frames.shape[1:])
        self._estimates.clear()
        self.reason = ""
        logger.debug("reference %d: period %.3f frames (%.4f s)", ref_id, period,
                     period * dt)
        return Reference(np.ascontiguousarray(frames), period, self.pad, dt, ref_id,
                         self._times[-1], ids, weight=weight)

    def _repeat_weight(self, period: float, shape: tuple[int, int]) -> np.ndarray | None:
        """Per pixel (frame size), the share of its change that comes back one period
        later over the buffer (`repeat.repeat_weight`), frames missing from it ignored
        in their places; None when it holds too few beats."""
        slots = np.fromiter(self._binned, np.int64, len(self._binned))
        present = slots >= 0
        w = repeat_weight(self._ring[np.where(present, slots, 0)], period, present)
        return None if w is None else to_frame(w, self._bin, shape)
