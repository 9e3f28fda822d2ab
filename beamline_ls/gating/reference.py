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

import logging
import math
from collections import deque
from dataclasses import dataclass, field

import numpy as np

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

    @property
    def period_s(self) -> float:
        return self.period * self.frame_interval

    def index_to_phase(self, pos: float) -> float:
        """Fractional reference index -> phase in [0, 2*pi)."""
        return float(np.mod(TWO_PI * (pos - self.pad) / self.period, TWO_PI))

    def phase_to_index(self, phase: float) -> float:
        return self.pad + float(np.mod(phase, TWO_PI)) / TWO_PI * self.period

    def frame_changes(self) -> np.ndarray:
        """SAD between consecutive reference frames over one cycle (len floor(period))."""
        n = int(math.floor(self.period))
        idx = np.arange(self.pad, self.pad + n)
        out = np.empty(n)
        for i, j in enumerate(idx):
            out[i] = float(sad_indexed(self.frames, np.array([j + 1]), self.frames[j])[0])
        return out

    def default_target_phase(self) -> float:
        """Frame of fastest change + P/3 (a phase of well-defined, moving heart)."""
        c = self.frame_changes()
        j = int(np.argmax(c)) + 0.5  # change between j and j+1
        return self.index_to_phase(self.pad + j + self.period / 3.0)

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
    contrast: float  # (max - min) / max of the SAD-vs-lag curve


def estimate_period(d: np.ndarray, min_period: int, min_contrast: float
                    ) -> PeriodEstimate | None:
    """Period (frames) from SAD-vs-lag ``d`` (``d[k-1]`` = SAD at lag k), or None.

    Walk outwards: first leave the similar region (SAD above 75 % of the range), then
    come back (below 50 %), then follow the descent to the local minimum and V-fit it.
    A curve whose range is below ``min_contrast`` of its maximum is noise (no heart).
    """
    if d.size < min_period + 1:
        return None
    lo = float(d.min())
    hi = float(d.max())
    if hi <= 0 or (hi - lo) < min_contrast * hi:
        return None
    th_hi = lo + 0.75 * (hi - lo)
    th_lo = lo + 0.5 * (hi - lo)
    above = np.flatnonzero(d > th_hi)
    if above.size == 0:
        return None
    back = np.flatnonzero(d[above[0]:] < th_lo)
    if back.size == 0:
        return None
    i = above[0] + back[0]
    n = d.size
    while i + 1 < n and d[i + 1] < d[i]:
        i += 1
    if i + 1 >= n:  # minimum not bracketed yet
        return None
    k = i + 1  # lag of the minimum
    if k < min_period:
        return None
    off = v_fit(float(d[i - 1]), float(d[i]), float(d[i + 1]))
    return PeriodEstimate(k + (off or 0.0), (hi - lo) / hi)


class PeriodFinder:
    """Rolling buffer + stability-gated period search producing a `Reference`.

    ``push`` is called with every frame (cheap: a binned copy); ``search`` controls
    whether the SAD row is computed for that frame (only while searching or
    refreshing, so a locked analyzer pays nothing here).
    """

    def __init__(self, max_period_s: float = 1.0, min_period_frames: int = 5,
                 min_accept_period: float = 6.0, pad: int = 2, n_stable: int = 9,
                 lag: int = 3, stable_rel: float = 0.05, stable_abs: float = 0.6,
                 min_contrast: float = 0.15, search_size: int = 128) -> None:
        if lag < pad:
            raise ValueError("lag must be >= pad so the padding after the period exists")
        self.max_period_s = max_period_s
        self.min_period_frames = min_period_frames
        self.min_accept_period = min_accept_period
        self.pad = pad
        self.n_stable = n_stable
        self.lag = lag
        self.stable_rel = stable_rel
        self.stable_abs = stable_abs
        self.min_contrast = min_contrast
        self.search_size = search_size
        self._frames: deque[np.ndarray] = deque()
        self._binned: deque[np.ndarray] = deque()
        self._times: deque[float] = deque()
        self._ids: deque[int] = deque()
        self._estimates: deque[float | None] = deque(maxlen=n_stable)
        self._bin = 0
        self.last_contrast = math.nan

    def reset(self, keep_buffer: bool = False) -> None:
        """Forget estimates (and optionally the frame buffer)."""
        self._estimates.clear()
        if not keep_buffer:
            self._frames.clear()
            self._binned.clear()
            self._times.clear()
            self._ids.clear()

    def frame_interval(self) -> float:
        """Median frame interval of the buffer (s), nan with fewer than 2 frames."""
        if len(self._times) < 2:
            return math.nan
        return float(np.median(np.diff(np.fromiter(self._times, float))))

    def push(self, image: np.ndarray, t: float, frame_id: int, search: bool,
             ref_id: int = 0) -> Reference | None:
        """Add a frame; when ``search``, try to complete a reference and return it."""
        if self._frames and self._frames[-1].shape != image.shape:
            self.reset()
        if self._bin == 0 or not self._frames:
            self._bin = max(1, int(min(image.shape) // self.search_size))
        b = bin_image(image, self._bin)
        self._frames.append(image)
        self._binned.append(b)
        self._times.append(t)
        self._ids.append(frame_id)
        dt = self.frame_interval()
        horizon = self.max_period_s + (self.lag + self.pad + 3) * (dt if dt > 0 else 0.1)
        while len(self._times) > 2 and t - self._times[0] > horizon:
            self._frames.popleft()
            self._binned.popleft()
            self._times.popleft()
            self._ids.popleft()
        if not search:
            return None
        return self._search(dt, ref_id)

    def _search(self, dt: float, ref_id: int) -> Reference | None:
        n = len(self._binned)
        if n < self.min_period_frames + 2 or not dt > 0:
            self._estimates.append(None)
            return None
        stack = np.stack(self._binned)  # (n, h, w), small (binned)
        lags = np.arange(n - 2, -1, -1)  # SAD vs frames at lag 1..n-1
        d = sad_indexed(stack, lags, stack[-1]).astype(float)
        est = estimate_period(d, self.min_period_frames, self.min_contrast)
        self.last_contrast = est.contrast if est else math.nan
        self._estimates.append(est.period if est else None)
        if len(self._estimates) < self.n_stable or any(e is None for e in self._estimates):
            return None
        vals = np.array(self._estimates, dtype=float)
        med = float(np.median(vals))
        if vals.max() - vals.min() > max(self.stable_abs, self.stable_rel * med):
            return None
        period = med  # median of the stable run: less noisy than any single estimate
        if period <= self.min_accept_period:
            return None
        e = n - 1 - self.lag  # buffer index of the frame whose estimate is used
        m = int(math.floor(period)) + 1 + 2 * self.pad
        start = e - int(math.floor(period)) - self.pad
        if start < 0:
            return None
        frames = np.stack([self._frames[i] for i in range(start, start + m)])
        ids = tuple(self._ids[i] for i in range(start, start + m))
        self._estimates.clear()
        logger.debug("reference %d: period %.3f frames (%.4f s)", ref_id, period,
                     period * dt)
        return Reference(np.ascontiguousarray(frames), period, self.pad, dt, ref_id,
                         self._times[-1], ids)
