"""Long-term reference updating that keeps the locked phase on the same heart phase.

Why: over hours the heart grows, drifts and changes rate; a fixed reference stops
matching, and a freshly taken reference starts at an arbitrary heart phase, so its
phase numbers mean something else. The adaptive-gating scheme (Nat. Commun. 10:5173)
fixes both: take a new reference every N triggers, resample its period to a fixed
length (80 samples), find the cyclic shift that best aligns it with each recent
reference (FFT over all cyclic shifts), then solve ALL pairwise shifts in the window
by weighted least squares (so alignment errors do not random-walk), and move the
target so it stays on the heart phase chosen at the start.

Runs off the per-frame path: `submit` queues the work on an executor; the analyzer
polls for the result. The default `InlineExecutor` runs jobs only when
`run_pending()` is called (deterministic, for replay and tests); pass a
`concurrent.futures.ThreadPoolExecutor(1)` for live use.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from .executors import Executor, InlineExecutor, finished_result
from .reference import Reference
from .sad import bin_image

logger = logging.getLogger(__name__)

TWO_PI = 2.0 * math.pi


def resample_period(ref: Reference, n: int = 80, size: int = 64) -> np.ndarray:
    """One period of ``ref`` resampled to ``n`` phases, binned to ~``size`` px, float32.

    Each resampled stack is normalised (zero mean, unit RMS over the whole stack) so
    slow changes in illumination and contrast do not bias the alignment.
    """
    f = max(1, min(ref.frames.shape[1:]) // size)
    frames = np.stack([bin_image(fr, f) for fr in ref.frames]).astype(np.float32)
    pos = ref.pad + np.arange(n) * (ref.period / n)
    i0 = np.floor(pos).astype(int)
    w = (pos - i0).astype(np.float32)[:, None, None]
    out = frames[i0] * (1 - w) + frames[i0 + 1] * w
    out = out.reshape(n, -1)
    out -= out.mean()
    rms = float(np.sqrt((out ** 2).mean()))
    return out / rms if rms > 0 else out


def cyclic_shift(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Shift s (samples) maximising sum_i <a_i, b_(i+s)>, and a weight in [0, 1].

    ``a``, ``b``: (n, pixels). Uses the FFT along the phase axis: the cyclic
    cross-correlation over all n shifts costs one FFT per array. Sub-sample position by
    a parabola through the peak; the weight is the normalised correlation at the peak.
    """
    fa = np.fft.rfft(a, axis=0)
    fb = np.fft.rfft(b, axis=0)
    corr = np.fft.irfft((np.conj(fa) * fb).sum(axis=1), n=a.shape[0])
    k = int(np.argmax(corr))
    n = corr.size
    ym, y0, yp = corr[(k - 1) % n], corr[k], corr[(k + 1) % n]
    den = ym - 2 * y0 + yp
    off = 0.5 * (ym - yp) / den if den < 0 else 0.0
    norm = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    weight = max(0.0, float(y0) / norm) if norm > 0 else 0.0
    return (k + float(np.clip(off, -0.5, 0.5))) % n, weight


@dataclass(frozen=True, slots=True)
class AlignedReference:
    reference: Reference
    target_phase: float  # rad, in the new reference's coordinates
    offset: float  # samples: heart phase (anchor coords) = ref phase + offset


class AdaptiveReferenceUpdater:
    """Aligns successive references and converts the anchored target into each."""

    def __init__(self, n_samples: int = 80, window: int = 6, size: int = 64,
                 executor: Executor | None = None) -> None:
        self.n = n_samples
        self.window = window
        self.size = size
        self.executor: Executor = executor or InlineExecutor()
        self.started = False
        self._stacks: list[np.ndarray] = []
        self._offsets: list[float] = []
        self._pairs: dict[tuple[int, int], tuple[float, float]] = {}
        self._target_anchor = 0.0  # samples, in the anchor (first reference) coordinates
        self._future: Future | None = None
        self.history: list[AlignedReference] = []

    def start(self, ref: Reference, target_phase: float) -> None:
        """Anchor: ``target_phase`` of ``ref`` is the heart phase to keep."""
        self._stacks = [resample_period(ref, self.n, self.size)]
        self._offsets = [0.0]
        self._pairs = {}
        self._target_anchor = (target_phase % TWO_PI) / TWO_PI * self.n
        self.started = True
        self.history = [AlignedReference(ref, target_phase % TWO_PI, 0.0)]

    def submit(self, ref: Reference) -> Future:
        """Queue alignment of a new reference (off the frame path)."""
        self._future = self.executor.submit(self.align, ref)
        return self._future

    def run_pending(self) -> None:
        run = getattr(self.executor, "run_pending", None)
        if run is not None:
            run()

    def poll(self) -> AlignedReference | None:
        """The finished result of the last submitted job, once; else None."""
        job = self._future
        if job is None or not job.done():
            return None
        self._future = None
        return finished_result(job, "adaptive alignment failed; keeping the old reference")

    def align(self, ref: Reference) -> AlignedReference:
        """Align ``ref`` to the recent references and return its target phase."""
        if not self.started:
            raise RuntimeError("start() must be called with the first reference")
        new = resample_period(ref, self.n, self.size)
        i_new = len(self._stacks)
        self._stacks.append(new)
        lo = max(0, i_new - self.window)
        for j in range(lo, i_new):
            s, w = cyclic_shift(new, self._stacks[j])
            # new_i ~ old_(i+s): heart phase = new phase + s + offset_j
            self._pairs[(i_new, j)] = (s, w)
        # first estimate from the most recent reference, then all pairs in the window
        s_last, _ = self._pairs[(i_new, i_new - 1)]
        self._offsets.append(self._offsets[-1] + s_last)
        self._solve(lo)
        off = self._offsets[i_new]
        target = ((self._target_anchor - off) % self.n) / self.n * TWO_PI
        if i_new - self.window - 1 >= 0:
            self._stacks[i_new - self.window - 1] = np.empty(0, np.float32)  # free
        out = AlignedReference(ref, target, off)
        self.history.append(out)
        logger.info("adaptive: reference aligned, offset %.2f/%d samples, target %.3f rad",
                    off, self.n, target)
        return out

    def _solve(self, lo: int) -> None:
        """Weighted least squares for the offsets of references lo+1..last (lo fixed)."""
        idx = list(range(lo, len(self._offsets)))
        if len(idx) < 2:
            return
        col = {r: c for c, r in enumerate(idx[1:])}
        rows, rhs, wts = [], [], []
        n = self.n
        for (a, b), (s, w) in self._pairs.items():
            if a < lo or b < lo or w <= 0:
                continue
            # unwrap the cyclic measurement near the current estimate
            pred = self._offsets[a] - self._offsets[b]
            s_u = s + n * round((pred - s) / n)
            row = np.zeros(len(col))
            val = s_u
            if a in col:
                row[col[a]] += 1.0
            else:
                val -= self._offsets[a]
            if b in col:
                row[col[b]] -= 1.0
            else:
                val += self._offsets[b]
            rows.append(row)
            rhs.append(val)
            wts.append(w * w)
        if not rows:
            return
        A = np.array(rows)
        y = np.array(rhs)
        sw = np.sqrt(np.array(wts))
        sol, *_ = np.linalg.lstsq(A * sw[:, None], y * sw, rcond=None)
        for r, c in col.items():
            self._offsets[r] = float(sol[c])
