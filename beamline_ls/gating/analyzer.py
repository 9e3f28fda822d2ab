"""`GatingAnalyzer.process(frame) -> Decision`: the per-frame gating state machine.

States: ``searching`` (no reference yet), ``locked`` (phase tracked against a
reference, triggers possible), ``lost`` (lock was lost; searching again). Nothing is
ever triggered unless locked with a stability-gated reference, so a static or
noise-only video gives no triggers.

Decision rules (latency ``L``, frame interval ``D``), for the next predicted time
``t*`` of the target phase after the frame's timestamp, ``wait = t* - timestamp``:
- at most one trigger per half cycle (and per cycle index);
- ``wait < L``: panic, fire as soon as possible, i.e. at ``timestamp + L``;
- ``wait - 1.6 D < L``: the next frame would come too late; fire at ``t*``;
- otherwise wait for the next frame (a fresher prediction).
A fire time is therefore never earlier than ``frame.timestamp + L``.

The analyzer knows nothing of hardware: the caller hands ``Decision.fire_time`` to a
`TriggerScheduler`. Long-term reference updating (`AdaptiveReferenceUpdater`) runs off
the per-frame path: ``process`` only submits jobs and adopts finished results; so
does folding the reference over several beats (`fold`), on ``executor``.

Frames may go missing (a camera drops them, or a live caller skips ahead when the
analysis falls behind). Across a gap (`PeriodFinder.gap_before`) the period search
keeps the missing frames' places as holes (its difference curve counts frame
intervals; a gap of more than the slowest beat restarts it), the phase is unwrapped
by the elapsed time and fitted across (up to half a beat without frames), and the
time without frames does not count towards loss of lock.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..frame import Frame
from .adaptive import AdaptiveReferenceUpdater
from .executors import Executor, ImmediateExecutor, finished_result
from .fold import fold_reference, origin_offset, register_shift
from .hindsight import Hindsight
from .phase import PhaseEstimator, PhaseResult
from .predict import PhaseHistory, Predictor, reckon
from .reference import PeriodFinder, Reference
from .sad import as_work_dtype, bin_image, normalise_brightness
from .strength import BeatStrength

logger = logging.getLogger(__name__)

TWO_PI = 2.0 * math.pi
SEARCHING, LOCKED, LOST = "searching", "locked", "lost"
#: the reason of the frame at which the lock was lost
LOCK_LOST = "lock lost"


@dataclass(slots=True)
class GatingConfig:
    """Tunables; defaults follow the published guards (see gating-facts)."""

    latency_s: float = 0.015
    target_phase: float | None = None  # rad in the first reference; None: default rule
    panic_factor: float = 1.6
    max_period_s: float = 1.5  # slowest heart considered: 0.67 Hz
    min_period_s: float = 0.1  # fastest: 10 Hz (a zebrafish heart beats 2-4 Hz)
    min_period_frames: int = 5  # shortest lag searched for the beat
    # fewest frames per beat gated: a 3.9 Hz heart at 20 fps (5.1) still holds 0.10-0.13
    # rad on recorded beats; below it the search says the frame rate is too low
    min_accept_period: float = 5.0
    pad: int = 2
    n_stable: int = 9
    stable_lag: int = 3
    min_significance: float = 10.0  # a beat's dip vs the noise of the difference curve
    search_size: int = 64  # period search on frames binned to about this size
    phase_size: int = 256  # phase matching on frames binned to at most ~this size
    max_drift: int = 4
    min_fit: int = 3
    max_fit: int = 64
    fit_periods: tuple[float, ...] = (0.25, 0.35, 0.5, 0.75)  # windows tried
    max_gap_phase: float = math.pi  # rad: the longest gap a phase fit spans
    use_barrier: bool = False
    loss_step_factor: float = 3.0  # no match: cost > this x (largest reference step + noise)
    loss_periods_without_prediction: float = 3.0
    #: locked, but no trigger for this many periods: the reference does not fit (a lock
    #: taken on an odd stretch can yield a usable fit now and then, which keeps the
    #: prediction clock alive, and no trigger for the rest of the run)
    loss_periods_without_trigger: float = 4.0
    refresh_every_triggers: int | None = None  # new reference every N triggers
    fold_beats: float = 16.0  # the matched reference averages up to this many beats
    fold_max_frames: int = 240  # ... and at most this many frames
    #: ... and at most this many frame pixels in all (as matched, after binning): a fold
    #: stamps every frame twice, so this bounds the worker's time per fold (about 0.7 s
    #: at 240 x 128 x 160; 256 x 256 frames get 75 frames)
    fold_max_pixels: int = 240 * 128 * 160
    refold_beats: float = 16.0  # folded again from the newest frames this often
    refine_after_beats: float = 4.0  # the first fold again after this many beats locked
    prefill_periods: float = 1.25  # buffered frames phased at once after a new reference
    #: concentration of the motion prior on each frame's phase (`PhaseEstimator.estimate`;
    #: 0: each frame phased on its own image alone). Weak on purpose (SD ~0.7 rad): it
    #: decides between look-alike phases a fair part of the beat apart, and moves a
    #: frame its image places to 0.05 rad by at most ~0.005 rad
    motion_kappa: float = 2.0
    #: the motion prior is reckoned from the frames of this much of a beat (a still
    #: stretch of up to half the beat lies between a contraction and the relaxation
    #: before it): see `GatingAnalyzer._motion_prior`
    motion_span: float = 0.5
    #: each frame is matched as a pair with the frame before it (the previous frame's
    #: image likelihood moved on by the beat's advance: `PhaseEstimator.estimate`), so
    #: the way the heart moves counts, not only how it looks; off: each frame on its
    #: own image and the motion prior
    pair_frames: bool = True
    #: the predictor fits the readings less what each beat's strength moved them by,
    #: learned from the readings (`strength.BeatStrength`; used only while it brings
    #: them nearer their beat's line); off: the readings as they are
    beat_strength: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    """What the analyzer concluded from one frame."""

    frame_id: int
    timestamp: float
    state: str
    phase: float = math.nan  # rad, wrapped, in the current reference's coordinates
    unwrapped_phase: float = math.nan
    period_s: float = math.nan
    period_frames: float = math.nan
    reference_id: int = -1
    target_phase: float = math.nan
    fire_time: float | None = None  # absolute s; None: no trigger from this frame
    trigger_kind: str = ""  # "standard" | "panic" | ""
    predicted_time: float = math.nan  # next target time as predicted now
    match_ratio: float = math.nan
    reason: str = ""
    error_estimate: float = math.nan  # rad: expected phase error of this trigger
    fitted_period_s: float = math.nan  # the current beat period from the phase fit


class GatingAnalyzer:
    """Prospective optical gating on a stream of brightfield `Frame` objects."""

    def __init__(self, config: GatingConfig | None = None,
                 adaptive: AdaptiveReferenceUpdater | None = None,
                 executor: Executor | None = None) -> None:
        self.cfg = config or GatingConfig()
        self.executor: Executor = executor or ImmediateExecutor()
        c = self.cfg
        self.finder = PeriodFinder(c.max_period_s, c.min_period_frames, c.min_accept_period,
                                   c.pad, c.n_stable, c.stable_lag,
                                   min_significance=c.min_significance, search_size=c.search_size,
                                   min_period_s=c.min_period_s)
        self.predictor = Predictor(c.min_fit, c.max_fit, c.fit_periods, c.max_gap_phase,
                                   use_barrier=c.use_barrier)
        self.history = PhaseHistory()
        self.strength = BeatStrength(self.executor) if self.cfg.beat_strength else None
        self.adaptive = adaptive
        self.state = SEARCHING
        self.reference: Reference | None = None
        self.estimator: PhaseEstimator | None = None
        self.target_phase = math.nan
        self.barrier_phase: float | None = None
        self.n_triggers = 0
        self._next_ref_id = 0
        self._refresh_pending = False
        self._awaiting = False
        self._phase_bin = 1
        self._triggers_since_ref = 0
        self._last_fire_time = -math.inf
        self._last_fire_cycle: int | None = None
        self._max_step = math.inf
        self._baseline_cost = math.nan  # running typical cost of matched frames
        self._n_bad = 0
        self._t_last_prediction = math.nan
        self._t_last_trigger = math.nan
        self.references: list[Reference] = []
        self.loss: tuple[float, str] | None = None  # time and cause of the latest loss
        self.hindsight = Hindsight()  # the analyzer's own view of its trigger errors
        self._work: Reference | None = None  # current reference as matched (binned)
        self._frame_interval = math.nan  # camera frame interval (s)
        self._refine_at = math.inf  # when to fold the beats seen under this lock
        self._fold_buf: deque[tuple[np.ndarray, float]] = deque()  # binned frames, times
        self._fold: Future | None = None  # folding of the current reference, running
        #: the first fold of the current reference: later folds keep its phase origin
        self._anchor: Reference | None = None
        self._target_pending = False  # default target waits for the first fold
        #: (reference id, phase) of the target the default rule placed last
        self._auto_target: tuple[int, float] | None = None

    # ----------------------------------------------------------------- public API
    def set_target_phase(self, phase: float) -> None:
        """Target phase (rad) in the current reference's coordinates."""
        self.target_phase = float(phase) % TWO_PI
        if self.adaptive is not None and self.reference is not None:
            self.adaptive.start(self.reference, self.target_phase)

    def use_default_target(self) -> None:
        """Back to the default target: the one the default rule placed on this
        reference, if it did; else the rule a lock uses (`_settle_target`) on the
        reference matched now (the fold, when there is one). A fold still running
        places it when done. Why: scans that ask for the default target expect the
        heart phase the earlier ones had. ``Reference.default_target_phase()`` on the
        raw one-beat reference picked another (0.33 rad of true phase between two
        scans, measured through the IOC), and the rule on a later fold may move it by
        a sample."""
        if self._target_pending or self._work is None or self.estimator is None \
                or self.reference is None:
            return
        if self._auto_target is not None and self._auto_target[0] == self.reference.ref_id:
            self.set_target_phase(self._auto_target[1])
            return
        self.set_target_phase(self._work.default_target_phase(self.estimator.step_costs()))
        self._auto_target = (self.reference.ref_id, self.target_phase)

    def request_refresh(self) -> None:
        """Ask for a new reference while staying locked on the current one."""
        if self.state == LOCKED:
            self._refresh_pending = True
            self.finder.reset(keep_buffer=True)

    @property
    def searching(self) -> bool:
        """True while a period search runs: no lock yet, or a new reference requested
        while locked. The search needs evenly spaced frames (no skipping)."""
        return self.state != LOCKED or self._refresh_pending

    def run_background(self) -> None:
        """Run queued off-path work now (`InlineExecutor`); no-op for the others."""
        run = getattr(self.executor, "run_pending", None)
        if run is not None:
            run()
        if self.adaptive is not None:
            self.adaptive.run_pending()

    def process(self, frame: Frame) -> Decision:
        """Analyse one frame; never blocks on hardware or background work."""
        img = normalise_brightness(as_work_dtype(frame.image))
        t_mid = frame.timestamp + 0.5 * frame.exposure
        gap = self._gap(t_mid)
        search = self.searching and not self._awaiting
        ref = self.finder.push(img, t_mid, frame.frame_id, search=search,
                               ref_id=self._next_ref_id)
        if ref is not None:
            self._refresh_pending = False
            if self.adaptive is not None and self.adaptive.started:
                self.adaptive.submit(ref)  # aligned off the frame path
                self._awaiting = True
            else:
                self._adopt(ref, None)
                return self._decision(frame, reason="new reference; frame discarded")
        if self._awaiting and self.adaptive is not None:
            done = self.adaptive.poll()
            if done is not None:
                self._awaiting = False
                self._adopt(done.reference, done.target_phase)
                # adopted when the worker's alignment is done, maybe periods after the
                # reference's last frame: the loss clocks start now, not back then
                self._t_last_prediction = max(self._t_last_prediction, t_mid)
                self._t_last_trigger = max(self._t_last_trigger, t_mid)
                return self._decision(frame, reason="aligned reference; frame discarded")
        if self.state != LOCKED:
            return self._decision(frame, reason="no stable period yet")
        assert self.estimator is not None and self.reference is not None
        self._adopt_fold()
        if t_mid >= self._refine_at and self._fold is None:
            self._refine()
        work_img = bin_image(img, self._phase_bin)
        if gap > self.reference.period_s:
            # the fold unwraps each stamp to the cycle the rate predicts since the
            # frame before; over a gap of more than a beat that guess is unsafe
            self._fold_buf.clear()
        self._fold_buf.append((work_img, t_mid))
        advance = self._advance(t_mid)
        # the frame before is matched with this one as a pair, unless frames are missing
        paired = self.cfg.pair_frames and not gap
        res = self.estimator.estimate(work_img, self._motion_prior(t_mid),
                                      advance if paired else None)
        if self._check_lost(res, t_mid):
            return self._decision(frame, res, reason=LOCK_LOST)
        u = self.history.add(t_mid, res.phase, frame.frame_id, res.information, advance)
        if self.strength is not None:
            self.strength.add(t_mid, u)
        self.hindsight.update(self.history, self.reference.period_s)
        return self._decide(frame, res, u)

    # ----------------------------------------------------------------- internals
    def _gap(self, t_mid: float) -> float:
        """Seconds since the previous frame when frames are missing before this one
        (`PeriodFinder.gap_before`), else 0. The time without frames is not held
        against the lock: the loss clock moves on by it."""
        gap = self.finder.gap_before(t_mid)
        if gap > 0:
            self._t_last_prediction += gap - self.finder.frame_interval()
            self._t_last_trigger += gap - self.finder.frame_interval()
            logger.debug("frames missing: %.3f s since the previous frame", gap)
        return gap

    def _advance(self, t: float) -> float | None:
        """The phase the beat advances from the newest phase of the history to ``t``
        (rad, at the reference's rate), which `PhaseHistory.add` unwraps the phase at
        ``t`` next to; None for the first. Why not the wrapped step alone: a frame
        misread by 1.2 rad backwards wrapped to 5 rad forwards, a whole cycle ahead of
        the frames after it, and no line fitted across that jump for the next 5
        frames (a stiff-walled heart at 80 frames/s lost 1 beat in 6 that way)."""
        hist = self.history
        if not len(hist) or self.reference is None:
            return None
        return TWO_PI * max(t - hist.t[-1], 0.0) / self.reference.period_s

    def _motion_prior(self, t: float) -> tuple[float, float] | None:
        """Where the beat's motion puts the frame at ``t``: the newest phase that says
        where the beat was, among those of the last ``motion_span`` of a beat, plus
        the advance since at the reference's rate (`predict.reckon`), with a
        concentration ``motion_kappa`` (see `PhaseEstimator.estimate`); None before
        the first phase of this reference.

        Why not always the newest phase: a frame in a still stretch of the beat is
        placed mid-stretch, so the first frame that moves again was expected
        mid-stretch too, as near to the end of the relaxation as to the start of the
        contraction. Where the heart retraces in relaxation the images of its
        contraction, those two look alike, and frames read on the wrong side ran
        backwards: a heart that twists as it contracts (a probe's, 80 frames/s) was
        locked 14 times in 40 s and never triggered, its phase stuck in one band."""
        kappa = self.cfg.motion_kappa
        hist = self.history
        if not len(hist) or not kappa or self.reference is None:
            return None
        period = self.reference.period_s
        centre = reckon(hist.t, hist.phase, hist.weight, t, TWO_PI / period,
                        self.cfg.motion_span * period)
        return float(centre % TWO_PI), kappa

    def _adopt(self, ref: Reference, target: float | None) -> None:
        ref = Reference(ref.frames, ref.period, ref.pad, ref.frame_interval,
                        self._next_ref_id, ref.t_created, ref.frame_ids, weight=ref.weight)
        self._next_ref_id += 1
        self.reference = ref
        self.references.append(ref)
        # phase matching at <= phase_size px: 512x512 is binned 2x2 (4x less work, and
        # the averaging lowers pixel noise); the reference is binned the same way
        self._phase_bin = max(1, min(ref.frames.shape[1:]) // self.cfg.phase_size)
        work = ref
        if self._phase_bin > 1:
            binned = np.stack([bin_image(f, self._phase_bin) for f in ref.frames])
            weight = None if ref.weight is None else bin_image(ref.weight, self._phase_bin)
            work = Reference(binned, ref.period, ref.pad, ref.frame_interval, ref.ref_id,
                             ref.t_created, ref.frame_ids, weight=weight)
        self._frame_interval = ref.frame_interval  # the camera's, before any folding
        self._fold = None  # a fold of the previous reference is of no use any more
        self._fold_buf = deque(maxlen=self.cfg.fold_max_frames)
        recent, times = self.finder.recent(self.cfg.fold_max_frames)
        for img, t in zip(recent, times, strict=True):
            if img.shape[0] // self._phase_bin == work.frames.shape[1]:
                self._fold_buf.append((bin_image(img, self._phase_bin), float(t)))
        folded = self._start_fold(work)
        self._refine_at = ref.t_created + self.cfg.refine_after_beats * ref.period_s
        if folded is not None:
            work = folded.ref
        self.estimator = folded or PhaseEstimator(work, self.cfg.max_drift)
        self.history.clear(ref.ref_id)  # fit barrier at every reference change
        self.barrier_phase = work.barrier_phase()  # binned: same phase, less work
        if self.strength is not None:  # beats begin where the heart is quietest
            self.strength.reset(self.barrier_phase, ref.period)
        previous, self._work = self._work, work
        self._target_pending = False
        if target is not None:
            self.target_phase = target % TWO_PI
        elif previous is not None and previous.frames.shape[1:] == work.frames.shape[1:]:
            self.target_phase = self._carry_target(previous, work)
        elif self.cfg.target_phase is not None:
            self.target_phase = self.cfg.target_phase % TWO_PI
        else:
            self.target_phase = work.default_target_phase(self.estimator.step_costs())
            self._auto_target = (ref.ref_id, self.target_phase)
            # a fold is running: place the target on it (`_settle_target`)
            self._target_pending = self._fold is not None
        if self.adaptive is not None and not self.adaptive.started \
                and not self._target_pending:
            self.adaptive.start(ref, self.target_phase)
        self.state = LOCKED
        self._triggers_since_ref = 0
        self._last_fire_cycle = None
        self._max_step = float(self.estimator.step_costs().max())
        self._baseline_cost = math.nan
        self._n_bad = 0
        self._t_last_prediction = ref.t_created
        self._t_last_trigger = ref.t_created
        self._prefill()
        logger.info("reference %d adopted: period %.3f frames = %.4f s, target %.3f rad",
                    ref.ref_id, ref.period, ref.period_s, self.target_phase)

    def _start_fold(self, work: Reference) -> PhaseEstimator | None:
        """Fold ``work`` over the newest frames matched under this lock (`fold`) on the
        executor; an estimator on the folded reference if it is ready at once, else
        None (adopted by `_adopt_fold` when the job is done)."""
        h, w = work.frames.shape[1:]
        n = min(self.cfg.fold_max_frames, self.cfg.fold_max_pixels // (h * w),
                int(self.cfg.fold_beats * work.period_s / self._frame_interval))
        buf = list(self._fold_buf)[-n:]
        if len(buf) < 3 or buf[-1][0].shape != work.frames.shape[1:]:
            return None
        frames = [f for f, _ in buf]
        times = np.array([t for _, t in buf])
        drift = (self.estimator.dy, self.estimator.dx) if self.estimator is not None \
            and self.estimator.ref.ref_id == work.ref_id else (0, 0)
        anchor = self._anchor if self._anchor is not None \
            and self._anchor.ref_id == work.ref_id else None
        self._fold = self.executor.submit(_fold_job, work, frames, times, drift,
                                          self.cfg.max_drift, anchor)
        return self._take_fold()

    def _take_fold(self) -> PhaseEstimator | None:
        """The finished fold of the current reference, once; else None."""
        job = self._fold
        if job is None or not job.done():
            return None
        self._fold = None
        better = finished_result(job, "folding the reference failed; keeping the one in use")
        if better is None or self.reference is None or \
                better.ref.ref_id != self.reference.ref_id:
            self._settle_target(None)
            return None
        return better

    def _adopt_fold(self) -> None:
        """Match against a fold that finished since the last frame."""
        better = self._take_fold()
        if better is not None:
            self._use_fold(better)

    def _use_fold(self, better: PhaseEstimator) -> None:
        """Match with ``better``, an estimator on a fold of the current reference
        (built on the worker: its Gram matrix alone is tens of milliseconds at 256 px).
        The phase coordinates stay the same (the fold stamps against the current
        reference), so the history, target and triggers carry on undisturbed. The
        fold averages the frames where they are now: its drift starts at zero."""
        self._work = better.ref
        self.estimator = better
        if self._anchor is None or self._anchor.ref_id != better.ref.ref_id:
            self._anchor = better.ref
        self._settle_target(better)
        self._max_step = float(better.step_costs().max())
        logger.debug("reference %d folded over the recent beats", better.ref.ref_id)

    def _settle_target(self, folded: PhaseEstimator | None) -> None:
        """Place a pending default target on the first fold (or keep the one from the
        one-beat reference when the fold failed).

        Why wait: the default rule reads where the image changes most from the
        reference; on one beat of 8-16 noisy frames it may pick the wrong stretch
        (measured on a two-chamber heart with a long quiet diastole: true-phase SD
        0.35 instead of 0.16 rad at 20 frames/s). Moving the target after the first
        triggers would image two heart phases, so triggers wait for the fold (one
        frame in replay, ~0.1-1 s live on the worker).
        """
        if not self._target_pending:
            return
        self._target_pending = False
        if folded is not None:
            self.target_phase = folded.ref.default_target_phase(folded.step_costs())
            if self.reference is not None:
                self._auto_target = (self.reference.ref_id, self.target_phase)
            logger.info("target placed on the folded reference: %.3f rad",
                        self.target_phase)
        if self.adaptive is not None and not self.adaptive.started \
                and self.reference is not None:
            self.adaptive.start(self.reference, self.target_phase)

    def _prefill(self) -> None:
        """Phase the last ``prefill_periods`` of buffered frames against the new
        reference, so predictions start at once: the first beat after a lock, and
        every beat across a refresh, gets its trigger instead of waiting a period
        for a history of its own."""
        assert self.reference is not None and self.estimator is not None
        n = int(math.ceil(self.cfg.prefill_periods * self.reference.period)) + 1
        recent, times = self.finder.recent(n)
        previous = -math.inf
        for img, t in zip(recent, times, strict=True):
            if img.shape[0] // self._phase_bin != self._work.frames.shape[1]:
                continue
            advance = self._advance(t)
            # paired with the frame before when none is missing between them (the
            # period finder's rule, `PeriodFinder.gap_before`)
            paired = self.cfg.pair_frames and \
                t - previous <= self.finder.MISSING_RATIO * self._frame_interval
            res = self.estimator.estimate(bin_image(img, self._phase_bin), None,
                                          advance if paired else None)
            u = self.history.add(float(t), res.phase, -1, res.information, advance)
            if self.strength is not None:
                self.strength.add(float(t), u)
            previous = float(t)

    def _refine(self) -> None:
        """Fold the reference again over the frames seen since the lock. A lock forms
        after about two beats, so the first fold averages few; each fold doubles the
        beats averaged, up to ``fold_beats``, and then folds are repeated every
        ``refold_beats`` over the newest ones, so the reference follows a sample that
        drifts or changes slowly. Each fold stamps the frames against the reference
        in use, so the phase coordinates carry over.

        Never while a fold runs (the caller waits for it): a new fold replaced the
        running one, whose result was lost. On a loaded host, where a fold on the
        low-priority worker took 3-7 s, each was replaced before it finished, so the
        default target, which waits for the first fold, was never placed and no
        trigger fired (a gated scan failed after 12 s, locked, 490 frames analysed)."""
        assert self._work is not None and self.reference is not None
        ref = self.reference
        beats = (self._refine_at - ref.t_created) / ref.period_s
        self._refine_at += min(beats, self.cfg.refold_beats) * ref.period_s
        better = self._start_fold(self._work)
        if better is not None:
            self._use_fold(better)

    def _carry_target(self, previous: Reference, new: Reference) -> float:
        """The target phase in ``new``'s coordinates: where the heart looks as it did at
        the target in ``previous``, so a new reference (after a loss or a refresh)
        keeps triggering the same heart phase rather than re-applying a rule whose
        outcome shifts with the frame sampling.

        The heart may have moved since ``previous`` was taken (a jolt of the stage, or
        the larva moving its heart within a still field, which is what lost the lock).
        The two references' whole cycles are compared (`origin_offset`): each minus
        its own mean over the cycle, so what does not beat (a still background the
        heart moved against) takes no part, after moving the old cycle by the shift
        between the two (measured on the beat's own pattern, the SD over the cycle).
        Where the cycles do not match, the old target image alone is phased against
        the new reference, moved by that shift."""
        n = max(8, int(round(min(previous.period, new.period))))
        offset = origin_offset(_cycle(previous, n), _cycle(new, n), new.weight,
                               max_offset=math.pi)
        if offset is not None:
            return float((self.target_phase + offset) % TWO_PI)
        image = previous.image_at(self.target_phase)
        d = register_shift(previous.frames.std(axis=0), new.frames.std(axis=0))
        if max(abs(d[0]), abs(d[1])) >= 0.5:
            moved = ndimage.shift(image.astype(np.float64), d, order=1, mode="nearest")
            image = np.rint(moved).astype(image.dtype)
        est = PhaseEstimator(new, self.cfg.max_drift)
        for _ in range(self.cfg.max_drift + 1):  # let the drift search settle
            res = est.estimate(image)
        return res.phase

    def _check_lost(self, res: PhaseResult, t: float) -> bool:
        """Lost when frames stop matching the reference or predictions stop coming.

        A frame of the same heart lies between two reference samples, so its distance
        to the interpolated reference is at most about the distance between
        neighbouring samples, plus the frame's own noise (the typical distance of the
        frames matched so far). Several frames in a row far beyond both are not this
        heart any more.
        """
        ref = self.reference
        assert ref is not None
        base = self._baseline_cost
        limit = self.cfg.loss_step_factor * (self._max_step + (base if base == base else 0))
        if base == base and res.cost > limit:
            self._n_bad += 1
        else:
            self._n_bad = 0
            self._baseline_cost = res.cost if base != base else 0.95 * base + 0.05 * res.cost
        stalled = (t - self._t_last_prediction
                   > self.cfg.loss_periods_without_prediction * ref.period_s)
        idle = t - self._t_last_trigger > self.cfg.loss_periods_without_trigger * ref.period_s
        if self._n_bad > max(3, ref.period / 2) or stalled or idle:
            still = self.finder.still_for() if stalled or idle else 0.0
            if still > ref.period_s:
                why = (f"the heart stopped: the frames have not changed for {still:.1f} s "
                       "(sensor noise only)")
            elif stalled:
                why = (f"heartbeat stopped or unreadable: no usable phase advance for "
                       f"{self.cfg.loss_periods_without_prediction:g} periods")
            elif idle:
                why = (f"no trigger for {self.cfg.loss_periods_without_trigger:g} periods: "
                       f"the frames' phases do not fit a steady beat on this reference")
            else:
                why = f"frames stopped matching the reference ({self._n_bad} in a row)"
            self.loss = (t, why)
            logger.info("gating lock lost at %.3f s: %s", t, why)
            self.state = LOST
            self.reference = None
            self.estimator = None
            self._fold = None
            self._refresh_pending = False
            self.finder.reset(keep_buffer=False)
            return True
        return False

    def _decide(self, frame: Frame, res: PhaseResult, u: float) -> Decision:
        ref = self.reference
        assert ref is not None
        now = frame.timestamp
        if self._target_pending:  # locked, not stalled: the fold is on its way
            self._t_last_prediction = self._t_last_trigger = now + 0.5 * frame.exposure
            return self._decision(frame, res, u, reason="placing the target on the "
                                  "folded reference")
        hist = self.history
        n = len(hist)
        t = np.fromiter(hist.t, float, n)
        raw = np.fromiter(hist.phase, float, n)
        wt = np.fromiter(hist.weight, float, n)
        st = self.strength
        # each beat's strength taken out of its readings (`strength.BeatStrength`)
        # while that helps; the correction must not cost a prediction the readings give
        corrected = st.corrected(raw) if st is not None and st.useful and n else raw
        pred = self.predictor.predict_arrays(t, corrected, wt, ref.period_s, now,
                                             self.target_phase, self.barrier_phase)
        if pred is None and corrected is not raw:
            pred = self.predictor.predict_arrays(t, raw, wt, ref.period_s, now,
                                                 self.target_phase, self.barrier_phase)
        if pred is None:
            return self._decision(frame, res, u, reason=self.predictor.last_reject)
        self._t_last_prediction = frame.timestamp + 0.5 * frame.exposure
        L = self.cfg.latency_s
        D = self._frame_interval
        wait = pred.t_target - now
        if pred.cycle == self._last_fire_cycle or (
                pred.t_target - self._last_fire_time < 0.5 * ref.period_s):
            return self._decision(frame, res, u, pred=pred.t_target,
                                  reason="already triggered this cycle", rate=pred.rate)
        if wait < L:
            fire, kind = now + L, "panic"
        elif wait - self.cfg.panic_factor * D < L:
            fire, kind = pred.t_target, "standard"
        else:
            return self._decision(frame, res, u, pred=pred.t_target, reason="waiting",
                                  rate=pred.rate)
        self._last_fire_cycle = pred.cycle
        self._last_fire_time = self._t_last_trigger = fire
        self.n_triggers += 1
        self._triggers_since_ref += 1
        n = self.cfg.refresh_every_triggers
        if n and self._triggers_since_ref >= n and not self._refresh_pending:
            self.request_refresh()
            self._triggers_since_ref = 0
        goal = self.target_phase + TWO_PI * pred.cycle
        self.hindsight.add(fire, goal, self.history.ref_id)
        err = self.hindsight.estimate(math.hypot(pred.phase_sd,
                                                 pred.rate * (fire - pred.t_target)))
        return self._decision(frame, res, u, pred=pred.t_target, fire=fire, kind=kind,
                              err=err, rate=pred.rate)

    def _decision(self, frame: Frame, res: PhaseResult | None = None, u: float = math.nan,
                  pred: float = math.nan, fire: float | None = None, kind: str = "",
                  reason: str = "", err: float = math.nan, rate: float = math.nan
                  ) -> Decision:
        ref = self.reference
        return Decision(
            frame_id=frame.frame_id, timestamp=frame.timestamp, state=self.state,
            phase=res.phase if res else math.nan, unwrapped_phase=u,
            period_s=ref.period_s if ref else math.nan,
            period_frames=ref.period if ref else math.nan,
            reference_id=ref.ref_id if ref else -1,
            target_phase=self.target_phase if ref else math.nan,
            fire_time=fire, trigger_kind=kind, predicted_time=pred,
            match_ratio=res.match_ratio if res else math.nan, reason=reason,
            error_estimate=err, fitted_period_s=TWO_PI / rate if rate > 0 else math.nan)


def _fold_job(work: Reference, frames: list[np.ndarray], times: np.ndarray,
              drift: tuple[int, int], max_drift: int, anchor: Reference | None
              ) -> PhaseEstimator | None:
    """Fold the frames (as matched: binned) into ``work``, on ``anchor``'s phase origin
    when given, and build the estimator that matches against the fold (executor job).
    The fold at the lock (no anchor yet) weighs pixels by its own and the
    reference's repeat weight (`fold_reference`'s ``lock_weight``)."""
    folded = fold_reference(work, np.stack(frames), times, drift=drift, anchor=anchor,
                            max_drift=max_drift, lock_weight=anchor is None)
    return None if folded is None else PhaseEstimator(folded, max_drift)


def _cycle(ref: Reference, n: int) -> np.ndarray:
    """One period of ``ref`` at ``n`` equally spaced phases (float, full size): sample
    ``k`` is the heart at phase ``2 pi k / n`` of ``ref``'s coordinates."""
    pos = ref.pad + np.arange(n) * (ref.period / n)
    i0 = np.minimum(np.floor(pos).astype(int), ref.frames.shape[0] - 2)
    w = (pos - i0)[:, None, None]
    f = ref.frames.astype(np.float64)
    return f[i0] * (1.0 - w) + f[i0 + 1] * w
