"""Gating on hearts it was not tuned on, scored against their TRUE phase.

Videos from `beamline_ls.gating.corpus`: recorded zebrafish heartbeats (read from
``../shared/data/heartbeats``) replayed with a live heart's rate modulation, wander,
irregular beats, beat-to-beat amplitude, drift, flicker and noise; procedural hearts
unlike the simulator's; and videos with no heart. 12 s each (the benchmark runs
40 s x 3 seeds of every heart: ``beamline-ls bench gating``).

The bounds are the user's (issue 10, item 1): a lock within 3 s; a trigger on >= 95 %
of the beats after the first lock; no trigger before its frame + latency; at most 2
duplicate triggers per 40 s (none in 12 s); circular SD of the true phase at the
triggers <= 0.05 rad at 80 fps and <= 0.15 rad at 20 fps. Item 2: no heart, no lock,
no trigger, and replay says why in one line.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import tifffile

from beamline_ls.frame import Frame
from beamline_ls.gating import corpus, replay
from beamline_ls.gating.score import (
    circular_mean,
    effective_fire_times,
    score_decisions,
    wrap_pm_pi,
)

pytestmark = pytest.mark.compute  # CPU only: `make test` runs these on every core

SECONDS = 12.0
SD_BOUND = {80.0: 0.05, 20.0: 0.15}


def _case(name: str) -> corpus.Case:
    return {c.name: c for c in corpus.hearts() + corpus.no_hearts()}[name]


@pytest.fixture(scope="module", autouse=True)
def heartbeats_present():
    if not corpus.heartbeats_dir().joinpath("periods.csv").is_file():
        pytest.fail(f"recorded heartbeats missing at {corpus.heartbeats_dir()} "
                    f"(set {corpus.HEARTBEATS_ENV})")


@pytest.mark.parametrize("fps", [80.0, 20.0])
@pytest.mark.parametrize("name", ["reference0002", "reference0019", "heart-tube",
                                  "sim-heart"])
def test_heart_meets_the_gating_bounds(name, fps):
    r = corpus.run_case(_case(name), fps, seed=0, duration_s=SECONDS)
    s = r.score
    assert s.t_lock_s <= 3.0, s
    assert s.beats >= 0.95, s
    assert s.early == 0, s
    assert s.duplicates == 0, s
    assert s.sd_rad <= SD_BOUND[fps], s


@pytest.mark.parametrize("name,fps,seed", [("reference0008", 40.0, 1), ("sim-heart", 80.0, 2)])
def test_analyzer_error_estimate_is_within_1_5x_of_the_truth(name, fps, seed):
    """The analyzer's own per-trigger estimate (from hindsight on its own phases, no
    truth) against the true SD: a recorded heartbeat at 40 fps, and a heart gated to
    a few thousandths of a radian at 80 fps, where a hindsight line over a whole
    period read its own bend through the reference's uneven phase as trigger error
    (1.56x the truth here, 1.10x with the shorter line)."""
    s = corpus.run_case(_case(name), fps, seed=seed, duration_s=20.0).score
    assert s.n_triggers > 30
    assert 1 / 1.5 <= s.est_err_rad / s.sd_rad <= 1.5, s


@pytest.mark.parametrize("name", ["static-tissue", "noise-only", "still-heart"])
@pytest.mark.parametrize("fps", [80.0, 20.0])
def test_no_heart_no_lock_no_trigger(name, fps):
    r = corpus.run_case(_case(name), fps, seed=0, duration_s=8.0, keep_decisions=True)
    assert r.score.n_triggers == 0
    assert all(d.state != "locked" for d in r.decisions)


def test_a_heart_that_stops_stops_triggering():
    video = _case("stops-at-8s").make(0, SECONDS)
    fps = 40.0
    times = np.arange(int(SECONDS * fps)) / fps
    frames = (Frame(video.frame(float(t)), i, float(t), 0.0)
              for i, t in enumerate(times))
    decisions, _, an = corpus.gate_frames(frames)
    fires = [d.fire_time for d in decisions if d.fire_time is not None]
    assert any(f < 8.0 for f in fires)  # it was gating while the heart beat
    period = 1.0 / 2.0  # slower than any corpus heart (2.0-2.7 Hz)
    assert all(f <= 8.0 + 3.5 * period for f in fires), fires[-5:]
    assert decisions[-1].state != "locked"
    # said as what the frames show (it was "no usable phase advance" or "the frames'
    # phases do not fit a steady beat", depending on the frame rate)
    assert an.loss is not None and an.loss[1].startswith("the heart stopped"), an.loss


def _gate(video, times, ids=None, image=None):
    """Gate frames of ``video`` rendered (by ``image(t)``, default its own) at ``times``
    with frame numbers ``ids`` (default 0..); decisions, analyzer and score."""
    image = image or video.frame
    ids = range(times.size) if ids is None else ids
    frames = (Frame(image(float(t)), int(i), float(t), 0.0)
              for i, t in zip(ids, times, strict=True))
    decisions, _, an = corpus.gate_frames(frames)
    return decisions, an, score_decisions(decisions, video.true_phase, an.cfg.latency_s)


def _assert_holds(s, sd_bound: float) -> None:
    """Issue 10's bounds: lock within 3 s, >= 95 % of beats, none early or twice."""
    assert s.t_lock_s <= 3.0, s
    assert s.beats >= 0.95, s
    assert s.early == 0 and s.duplicates == 0, s
    assert s.sd_rad <= sd_bound, s


def _heart_at(rate_hz: float, seconds: float, seed: int = 0):
    """A recorded heartbeat replayed at ``rate_hz`` with a live heart's irregularity."""
    from beamline_ls.sim.videos import RecordedHeart

    tif, period = corpus.recorded_periods()["reference0001"]
    rng = np.random.default_rng([seed, 7])
    return RecordedHeart(tif, period, corpus.live_beat(rng, seconds, mean_rate_hz=rate_hz),
                         corpus.live_camera(rng), seed)


def test_a_fast_heart_at_20_fps_is_gated_on_each_beat_not_on_its_repeats():
    """3.6 Hz at 20 fps: 5.6 frames a beat, between integer lags, so the difference
    curve dips deepest at two or three beats (11.1 and 16.7 frames, nearer to whole
    frames). Taking one of those for the beat locked on a wrong reference: triggers
    on 17 % of the beats at random phases (SD 0.92 rad). 20 s: on 4 seeds, SD
    0.04-0.12 rad, every beat."""
    seconds, fps = 20.0, 20.0
    video = _heart_at(3.6, seconds)
    times = np.arange(int(seconds * fps)) / fps
    _, an, s = _gate(video, times)
    true_period = 2 * math.pi * (times[-1] - times[0]) / float(
        np.diff(video.true_phase(times[[0, -1]]))[0])
    assert an.references and an.references[0].period_s == pytest.approx(true_period,
                                                                        rel=0.1)
    _assert_holds(s, SD_BOUND[fps])


def test_triggers_in_and_after_a_long_beat_land_on_the_target():
    """A recorded heart at 80 fps whose 22nd and 35th beats run 20-30 % long (seed 2 of
    the corpus case). The predictor fitted a window reaching back across the change of
    rate: the trigger in the long beat came 0.22 rad early and the one after it 0.26
    rad late (SD 0.051 over 20 s). Now each window must agree with the shorter ones:
    every trigger within 0.1 rad of the others' mean (0.041 at worst, SD 0.017)."""
    case = _case("reference0013")
    video = case.make(2, 20.0)
    assert {22, 35} <= set(video.beat.irregular_beats.tolist())
    fps = 80.0
    times = np.arange(int(20.0 * fps)) / fps
    decisions, an, s = _gate(video, times)
    _assert_holds(s, SD_BOUND[fps])
    fired = effective_fire_times(decisions, an.cfg.latency_s)
    off = wrap_pm_pi(video.true_phase(fired) - s.locked_phase)
    assert np.abs(off).max() < 0.1, \
        f"triggers off by up to {np.abs(off).max():.3f} rad, at {fired[np.abs(off) >= 0.1]} s"


def test_a_slow_heart_is_gated_from_its_first_beats():
    """0.9 Hz (a bradycardic or cold fish): the search looked for a beat of at most
    1 s, so it locked only when the rate strayed above 1 Hz, 8-11 s in, or never."""
    seconds, fps = 15.0, 40.0
    video = _heart_at(0.9, seconds)
    _, _, s = _gate(video, np.arange(int(seconds * fps)) / fps)
    _assert_holds(s, 0.05)


def test_a_frame_misread_back_across_the_cycles_start_costs_no_trigger():
    """A recorded heart at 80 frames/s, target 1.6 rad; every 1.5 s the frame 3 frames
    before a trigger is replaced by one from 0.3 of a beat earlier, so it reads ~1.9
    rad back, across the start of the cycle (a misread, as a stiff-walled or faint
    heart gives). Unwrapped by the sign of the wrapped step alone it jumped a cycle
    ahead of the frames after it, no line fitted across the jump for 5 frames, and
    the beat lost its trigger: 72 % of the beats triggered, now all. Frames are
    phased one by one here (``pair_frames=False``): matched as a pair with the frame
    before, a substituted frame this far back is no longer read back at all, and the
    unwrapping under test would not be reached."""
    from beamline_ls.gating.analyzer import GatingConfig

    fps, seconds = 80.0, 10.0
    video = _case("reference0002").make(0, seconds)
    times = np.arange(int(seconds * fps)) / fps
    images = [video.frame(float(t)) for t in times]
    cfg = GatingConfig(target_phase=1.6, pair_frames=False)

    def gate(stack):
        frames = (Frame(im, i, float(t), 0.0)
                  for i, (im, t) in enumerate(zip(stack, times, strict=True)))
        return corpus.gate_frames(frames, cfg)

    clean, _, an = gate(images)
    back = int(round(0.3 * an.references[0].period))
    picks, last = [], -math.inf
    for i, d in enumerate(clean):
        k = i - 3
        if d.fire_time is not None and times[k] - last > 1.5 and times[k] > 2.0 \
                and 0.2 < clean[k].phase < 1.2:
            picks.append(k)
            last = times[k]
    misread = list(images)
    for k in picks:
        misread[k] = images[k - back]
    decisions, _, _ = gate(misread)
    assert len(picks) >= 4 and all(decisions[k].phase > 4.0 for k in picks)  # read back
    s = score_decisions(decisions, video.true_phase, cfg.latency_s)
    assert s.beats >= 0.95 and s.early == 0 and s.duplicates == 0, s
    assert s.sd_rad <= 0.05, s


def test_a_heart_that_starts_after_a_still_stretch_locks_as_soon_as_it_beats():
    """A recorded heart, still for the first 3 s (the camera started before the heart,
    or the heart paused), then beating. The still frames flattened the period
    search's window against the beating ones, so the lock waited for them to leave
    it: 2.9 s (40 fps) and 3.3 s (20 fps) after the heart started. A heart that beats
    from the first frame locks in 1.0-1.5 s; the still stretch must not delay that by
    more than about half a second."""
    from beamline_ls.sim.videos import RecordedHeart

    start, fps = 3.0, 20.0
    tif, period = corpus.recorded_periods()["reference0002"]
    rng = np.random.default_rng(3)
    still = RecordedHeart(tif, period, corpus.live_beat(rng, SECONDS, stop_s=0.0,
                                                        n_irregular=0),
                          corpus.live_camera(rng), 0)
    heart = _case("reference0002").make(0, SECONDS)

    def image(t: float) -> np.ndarray:
        return still.frame(t) if t < start else heart.frame(t)

    _, _, s = _gate(heart, np.arange(int(SECONDS * fps)) / fps, image=image)
    assert s.t_lock_s - start <= 2.0, s
    assert s.beats >= 0.95 and s.early == 0 and s.duplicates == 0, s
    assert s.sd_rad <= SD_BOUND[fps], s


@pytest.mark.parametrize("fps", [80.0, 20.0])
def test_a_camera_that_drops_one_frame_in_ten_is_gated_from_the_first_beats(fps):
    """A busy camera bus, or a live analysis that skips frames when it falls behind.
    The period search restarted at every missing frame (with one in ten missing it
    never locked) and the predictor refused any window with one."""
    video = _case("reference0002").make(0, SECONDS)
    times = np.arange(int(SECONDS * fps)) / fps
    kept = np.flatnonzero(np.random.default_rng(5).random(times.size) >= 0.1)
    _, _, s = _gate(video, times[kept], ids=kept)
    _assert_holds(s, SD_BOUND[fps])


def _jolted(video, jolt_at: float, shift: tuple[float, float]):
    """``video``'s frames, moved by ``shift`` (y, x) px from ``jolt_at`` s on: the
    stage knocked."""
    from scipy import ndimage

    def frame(t: float) -> np.ndarray:
        img = video.frame(t)
        if t < jolt_at:
            return img
        moved = ndimage.shift(img.astype(np.float32), shift, order=1, mode="nearest")
        return np.rint(moved).astype(img.dtype)

    return frame


def test_after_a_jolt_of_the_sample_the_lock_is_retaken_on_the_same_heart_phase():
    """The stage is knocked: 20 px down, 10 px across, at 4 s. The lock is lost and
    taken again on the heart where it now is; the target must stay the same heart
    phase. It was carried by phasing the old reference's target image against the
    new reference, which only follows a few pixels of movement: the triggers after
    the jolt went to another phase (true-phase SD over the video 1.41 rad). (A new
    reference taken on one of the irregular, 20-30 % longer beats still moves the
    target by up to 0.27 rad: with the jolt at 5 s instead.)"""
    fps, jolt_at = 80.0, 4.0
    video = _case("reference0002").make(0, SECONDS)
    times = np.arange(int(SECONDS * fps)) / fps
    decisions, an, s = _gate(video, times, image=_jolted(video, jolt_at, (20.0, 10.0)))
    assert len(an.references) >= 2, "the lock on the old position was never given up"
    fires = effective_fire_times(decisions, an.cfg.latency_s)
    phase = video.true_phase(fires)
    before, after = phase[fires < jolt_at], phase[fires > an.references[1].t_created]
    assert before.size >= 5 and after.size >= 5, (before.size, after.size)
    shift = np.angle(np.exp(1j * (after - circular_mean(before))).mean())
    assert abs(shift) < 0.1, f"the heart phase triggered moved by {shift:.2f} rad"
    assert s.early == 0 and s.duplicates == 0, s
    assert s.sd_rad <= SD_BOUND[fps], s


def test_a_jolt_the_drift_search_can_follow_keeps_its_triggers_on_target():
    """Knocked 8 px down and 4 across at 8 s: more than the drift search (4 px) reaches
    at once, too little to lose the lock. The next refold averaged the buffered frames
    where each was taken, so the new reference held the heart twice (before and after
    the jolt); matched against it the drift sat at its limit and the triggers went to
    0.45 rad SD for the rest of a 20 s video. The fold now moves its frames to where
    the newest one is (by their matched drift) before averaging. (The trigger of the
    beat in which the drift search is still walking the 8 px, within a second of the
    jolt, is phased on frames matched off their place: 0.11-0.25 rad off. Not held
    to the bound.)"""
    fps, jolt_at, seconds = 80.0, 8.0, 20.0  # the refolds after it come within 20 s
    video = _case("reference0002").make(0, seconds)
    times = np.arange(int(seconds * fps)) / fps
    decisions, an, s = _gate(video, times, image=_jolted(video, jolt_at, (8.0, 4.0)))
    fires = effective_fire_times(decisions, an.cfg.latency_s)
    err = wrap_pm_pi(video.true_phase(fires) - s.locked_phase)
    late = err[fires > jolt_at + 2.0]
    assert late.size >= 10, late.size
    assert np.sqrt(np.mean(late ** 2)) <= SD_BOUND[fps], f"after the jolt: {late.round(2)}"
    calm = err[(fires < jolt_at) | (fires > jolt_at + 1.0)]
    assert np.sqrt(np.mean(calm ** 2)) <= SD_BOUND[fps], f"outside the jolt: {calm.round(2)}"
    assert s.beats >= 0.95 and s.early == 0 and s.duplicates == 0, s


def test_a_heart_that_moves_within_a_still_field_is_retaken_on_the_same_phase():
    """The larva moves its heart 6 px down and 8 across within a field that stays
    where it is (tissue, yolk): the lock is lost and taken again on the heart where it
    now is, on the heart phase it triggered before. The target was carried by
    registering the two references' mean images, which the still field dominates
    (the shift came out ~0 px), and phasing the old target image against the new
    reference: 0.8-1.3 rad off for the rest of the video (seeds 0-2), with the
    analyzer's own estimate saying 0.01. It is now carried by comparing the two
    references' cycles, each minus its own mean (what does not beat takes no part),
    after a shift measured on the beat's own pattern: 0.02-0.12 rad (seeds 0-2)."""
    from beamline_ls.sim.procedural import SmallHeart

    fps, moved_at, seconds = 80.0, 6.0, 16.0
    rng = np.random.default_rng([0, 99])
    video = SmallHeart(beat=corpus.live_beat(rng, seconds), camera=corpus.live_camera(rng),
                       seed=0, move=(moved_at, (6, 8)))
    times = np.arange(int(seconds * fps)) / fps
    decisions, an, s = _gate(video, times)
    assert len(an.references) >= 2, "the lock on the old place was never given up"
    fires = effective_fire_times(decisions, an.cfg.latency_s)
    phase = video.true_phase(fires)
    before, after = phase[fires < moved_at], phase[fires > moved_at + 2.0]
    assert before.size >= 10 and after.size >= 10, (before.size, after.size)
    shift = np.angle(np.exp(1j * (after - circular_mean(before))).mean())
    assert abs(shift) < 0.15, f"the heart phase triggered moved by {shift:.2f} rad"
    assert s.early == 0 and s.duplicates == 0, s


def test_a_faint_heart_at_40_fps_keeps_its_lock_and_a_trigger_on_every_beat():
    """A heart whose beat changes no pixel by more than 4 % of the mean, at 40 fps. The
    fold at the lock averages two or three beats, so its samples carry unequal noise;
    matched by plain distance, frames of a third of the beat were read on the
    quietest samples, every later fold was refused and the lock was lost and taken
    again and again (16 s: lost twice, 42 % of the beats triggered, true-phase SD
    0.28 rad). With each sample's own noise taken out of the distance the lock holds.
    (Its SD, 0.14 rad here, is still over issue 10's 0.05 rad at 40 fps.)"""
    r = corpus.run_case(_case("low-contrast"), 40.0, seed=1, duration_s=16.0,
                        keep_decisions=True)
    locked = [d for d in r.decisions if d.state != "searching"]
    assert locked and not [d for d in locked if d.reason == "lock lost"], r.score
    s = r.score
    assert s.beats >= 0.95 and s.early == 0 and s.duplicates == 0, s


def test_a_faint_hearts_first_triggers_land_where_the_later_ones_do():
    """A faint heart (4 % contrast) at 80 fps. The fold made at the lock averages the
    2-3 beats of the period search; weighing its pixels by what repeats in those few
    beats alone, it read frames up to 0.2 rad off from where later folds read them,
    and its first four triggers landed 0.16 rad from the later ones (true-phase SD
    0.066 rad). With the period search's repeat weight beside the fold's own they land
    within 0.08 rad and the run holds issue 10's 0.05 rad."""
    name, fps, seed, seconds = "low-contrast", 80.0, 2, 14.0
    r = corpus.run_case(_case(name), fps, seed=seed, duration_s=seconds,
                        keep_decisions=True)
    video = _case(name).make(seed, seconds)
    eff = effective_fire_times(r.decisions, 0.015)
    eff = eff[eff <= seconds - 1 / fps]
    z = np.exp(1j * video.true_phase(eff))
    later = eff > 5.0
    assert later.sum() > 20
    offset = float(np.angle(np.mean(z[:4]) / np.mean(z[later])))
    assert abs(offset) <= 0.12, offset
    _assert_holds(r.score, 0.05)


def test_a_faint_noisy_heart_is_phased_along_its_motion_not_frame_by_frame_alone():
    """A recorded heart with its contrast cut to 15 % of the recording's and 8 grey
    levels of sensor noise, at 80 fps. Phased on its own image, a frame's likelihood
    is broad and noise draws it to far phases that look alike; the line through them
    scattered the triggers by 0.096 rad (true-phase SD, this seed). Weighted by where
    the beat's motion puts it (the previous frame's phase plus the advance since), each
    frame is read on the right stretch of the beat: 0.037 rad."""
    import dataclasses

    fps, seconds = 80.0, 12.0
    video = _case("reference0002").make(1, seconds)
    video.frames = video.mean + 0.15 * (video.frames - video.mean)
    video.camera = dataclasses.replace(video.camera, noise_sd=8.0)
    times = np.arange(int(seconds * fps)) / fps
    frames = (Frame(video.frame(float(t)), i, float(t), 0.0) for i, t in enumerate(times))
    decisions, _, _ = corpus.gate_frames(frames)
    _assert_holds(score_decisions(decisions, video.true_phase, 0.015), 0.05)


def test_a_chamber_that_turns_out_and_back_is_tracked_through_its_still_diastole():
    """A chamber that turns about its base and back each beat, beating regularly at
    80 fps: its images on the way back retrace those on the way out, and a still
    diastole lies between. The motion prior centred on the newest frame (read
    mid-diastole, where every phase of the still stretch fits) was as near to the
    way back as to the way out when the chamber moved again: 21 % of beats got a
    trigger (a probe's twisting heart: none in 40 s); reckoned from the last frame
    that moved, 83 %; with each frame matched together with the one before it (the
    way the chamber turns, not only where it is), 100 % at 0.005 rad."""
    from beamline_ls.sim.beat import BeatParams, BeatProcess
    from beamline_ls.sim.pulsing import TwistingChamber
    from beamline_ls.sim.videos import Camera

    fps, seconds = 80.0, 20.0
    beat = BeatProcess(BeatParams(mean_rate_hz=2.2, modulation_frac=0.0, wander_frac=0.0,
                                  n_irregular=0, amplitude_range=(1.0, 1.0),
                                  duration_s=seconds), seed=0)
    video = TwistingChamber(beat=beat, camera=Camera(noise_sd=3.0), seed=0)
    times = np.arange(int(seconds * fps)) / fps
    frames = (Frame(video.frame(float(t)), i, float(t), 0.0) for i, t in enumerate(times))
    decisions, _, _ = corpus.gate_frames(frames)
    _assert_holds(score_decisions(decisions, video.true_phase, 0.015), SD_BOUND[80.0])


@pytest.mark.parametrize(("name", "fps"), [("pulsing-chamber", 40.0),
                                           ("twisting-chamber", 80.0)])
def test_frames_of_a_heart_that_retraces_its_beat_are_read_on_the_right_side(name, fps):
    """A chamber whose relaxation retraces its contraction looks the same at two
    phases of each beat. Phased one by one against the first reference, 29-52 % of
    its frames were read more than 1 rad from where the heart was (on the way back
    for the way out, or between the two); phased with the frame before them moved on
    by the beat's advance (the way the heart moves), 9-16 %. A recorded heart, whose
    frames say their phase alone, reads as before (median error within 20 %)."""
    from beamline_ls.gating.phase import PhaseEstimator
    from beamline_ls.gating.reference import PeriodFinder
    from beamline_ls.gating.sad import as_work_dtype, normalise_brightness

    def errors(case: str) -> tuple[np.ndarray, np.ndarray]:
        """Each later frame's error from the heart's true phase, read alone and read
        as a pair with the frame before (one rendering, one reference)."""
        video = _case(case).make(0, SECONDS)
        times = np.arange(int(SECONDS * fps)) / fps
        frames = [normalise_brightness(as_work_dtype(video.frame(float(t)))) for t in times]
        finder = PeriodFinder()
        ref = next(r for i, (f, t) in enumerate(zip(frames, times, strict=True))
                   if (r := finder.push(f, float(t), i, search=True)) is not None)
        later = np.flatnonzero(times > ref.t_created)
        advance = 2 * math.pi / ref.period_s / fps
        out = []
        for pairs in (False, True):
            est = PhaseEstimator(ref)
            read = [est.estimate(frames[i], None, advance if pairs and i > later[0]
                                 else None).phase for i in later]
            d = wrap_pm_pi(np.array(read) - video.true_phase(times[later]))
            out.append(np.abs(wrap_pm_pi(d - circular_mean(d))))
        return out[0], out[1]

    alone, paired = errors(name)
    assert np.mean(alone > 1.0) >= 0.25, np.mean(alone > 1.0)  # the trouble is there
    assert np.mean(paired > 1.0) <= 0.5 * np.mean(alone > 1.0), \
        (np.mean(alone > 1.0), np.mean(paired > 1.0))
    recorded_alone, recorded_paired = errors("reference0001")
    assert np.median(recorded_paired) <= 1.2 * np.median(recorded_alone), \
        (np.median(recorded_alone), np.median(recorded_paired))


def test_a_pulsing_chamber_at_40_fps_gets_a_trigger_on_every_beat():
    """A chamber that shrinks and swells back along one path (live rhythm, drift,
    flicker, noise), 40 fps: with frames phased one by one, 87 % of beats got a
    trigger at a true-phase SD of 1.06 rad (seed 0; 0.60 seed 1): the triggers fell
    on either side of the beat. Phased as pairs with the frame before, every beat
    at 0.19-0.23 rad. Issue 10 asks for 0.05 at this rate, which it does not meet
    (the corpus rows in RESULTS.md say where it stands); the bound here is the
    misreading's, well above what pairs give and well below what it gave."""
    s = corpus.run_case(_case("pulsing-chamber"), 40.0, seed=0, duration_s=20.0).score
    assert s.t_lock_s <= 3.0, s
    assert s.beats >= 0.95, s
    assert s.early == 0 and s.duplicates == 0, s
    assert s.sd_rad <= 0.35, s


def test_a_chamber_whose_beats_vary_in_depth_is_triggered_nearer_one_phase():
    """A chamber whose beats contract 0.85-1.15 as deep as the reference's: a deeper
    beat passes through the reference's images at other times, so all its frames
    are read off one way, and the trigger with them. Learned from the readings and
    taken out (`strength.BeatStrength`), the same frames' triggers scatter less:
    0.208 -> 0.140 rad here (12 s, 80 fps, seed 1); 40 s, three seeds, in
    RESULTS.md."""
    from beamline_ls.gating.analyzer import GatingConfig

    fps = 80.0
    video = _case("pulsing-chamber").make(1, SECONDS)
    times = np.arange(int(SECONDS * fps)) / fps
    images = [video.frame(float(t)) for t in times]
    sd = {}
    for on in (False, True):
        frames = (Frame(img, i, float(t), 0.0)
                  for i, (img, t) in enumerate(zip(images, times, strict=True)))
        decisions, _, an = corpus.gate_frames(frames, GatingConfig(beat_strength=on))
        s = score_decisions(decisions, video.true_phase, an.cfg.latency_s)
        assert s.beats >= 0.95 and s.early == 0 and s.duplicates == 0, s
        sd[on] = s.sd_rad
    assert sd[True] <= 0.8 * sd[False], sd


def test_replay_says_the_frame_rate_is_too_low_for_a_heart_this_fast(tmp_path, capsys):
    """4.7 Hz at 20 fps (4.3 frames a beat): no lock on its repeats, and why."""
    seconds = 10.0
    times = np.arange(int(seconds * 20)) / 20.0
    tif = tmp_path / "fast.tif"
    tifffile.imwrite(tif, _heart_at(4.7, seconds).render(times))
    out = tmp_path / "out.csv"
    assert replay.main([str(tif), "--fps", "20", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [x for x in printed if "frame rate too low for the period" in x], printed
    rows = list(csv.DictReader(out.open()))
    assert all(r["trigger_time_s"] == "" and r["state"] != "locked" for r in rows)


def _write_video(tmp_path, name: str, fps: float, seconds: float):
    video = _case(name).make(0, seconds)
    times = np.arange(int(seconds * fps)) / fps
    tif = tmp_path / f"{name}.tif"
    tifffile.imwrite(tif, video.render(times))
    return video, times, tif


@pytest.mark.parametrize("name,why", [("static-tissue", "no heartbeat detected"),
                                      ("noise-only", "no heartbeat detected"),
                                      ("stops-at-8s", "the heart stopped: the frames "
                                                      "have not changed")])
def test_replay_says_in_one_line_why_there_is_no_lock(tmp_path, capsys, name, why):
    _, _, tif = _write_video(tmp_path, name, 40.0, 11.0)
    out = tmp_path / "out.csv"
    assert replay.main([str(tif), "--fps", "40", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    reasons = [line for line in printed if why in line]
    assert len(reasons) == 1, printed
    rows = list(csv.DictReader(out.open()))
    if name != "stops-at-8s":
        assert all(r["trigger_time_s"] == "" for r in rows)
        assert all(r["state"] != "locked" for r in rows)


def test_replay_truth_and_phase_lock_plot(tmp_path, capsys):
    video, times, tif = _write_video(tmp_path, "reference0005", 40.0, 10.0)
    truth = tmp_path / "truth.txt"
    np.savetxt(truth, video.true_phase(times))
    out, png = tmp_path / "out.csv", tmp_path / "lock.png"
    assert replay.main([str(tif), "--fps", "40", "--out", str(out), "--truth", str(truth),
                        "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    lock = next(x for x in printed.splitlines() if x.startswith("lock: taken at "))
    first = next(r for r in csv.DictReader(out.open()) if r["state"] == "locked")
    assert float(lock.split()[3]) == pytest.approx(float(first["timestamp_s"]), abs=0.01)
    line = next(x for x in printed.splitlines() if x.startswith("true phase at the triggers"))
    sd = float(line.split("circular SD ")[1].split()[0])
    assert 0 < sd <= 0.05
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000
    rows = list(csv.DictReader(out.open()))
    fired = [r for r in rows if r["trigger_time_s"]]
    assert fired and all(r["trigger_error_rad"] != "" for r in fired)


def test_replay_rejects_a_truth_file_of_the_wrong_length(tmp_path, capsys):
    _, times, tif = _write_video(tmp_path, "noise-only", 40.0, 1.0)
    truth = tmp_path / "truth.txt"
    np.savetxt(truth, np.zeros(times.size - 1))
    assert replay.main([str(tif), "--fps", "40", "--out", str(tmp_path / "o.csv"),
                        "--truth", str(truth)]) == 2
    assert "one per frame" in capsys.readouterr().err


def test_score_counts_early_duplicate_and_missed_triggers():
    """The scoring rules on hand-made decisions against a 2 Hz heart."""
    from beamline_ls.gating.analyzer import Decision

    def true_phase(t):
        return 2 * math.pi * 2.0 * np.asarray(t, float)

    ts = np.arange(0, 5, 0.025)
    fire_at = {int(round(k / 0.025)): k + 0.02 for k in (1.0, 1.5, 2.0, 3.0, 3.5, 4.0)}
    fire_at[int(round(2.05 / 0.025))] = 2.05 + 0.02  # a second trigger in one beat
    fire_at[int(round(4.49 / 0.025))] = 4.49 + 0.005  # early: before frame + latency
    ds = [Decision(i, float(t), "locked" if t >= 0.5 else "searching",
                   fire_time=fire_at.get(i), error_estimate=0.01)
          for i, t in enumerate(ts)]
    s = score_decisions(ds, true_phase, latency_s=0.015)
    assert s.early == 1
    assert s.duplicates == 1
    assert s.t_lock_s == pytest.approx(0.5)
    # beats after the lock: 9 occurrences of the locked phase; 2.5 s missed
    assert s.beats == pytest.approx(7 / 9, abs=0.12)


def test_a_drifting_videos_frames_move_as_a_linear_shift_with_extended_edges():
    """The corpus moves every frame of a drifting video with its own whole-slice
    interpolation (`shift_linear`, 5x faster than scipy's); the frames must be the ones
    scipy's linear shift with extended edges gives, so the drift is what it says."""
    from scipy import ndimage

    from beamline_ls.sim.videos import shift_linear

    img = np.random.default_rng(3).random((40, 56)) * 255
    for d in [(0.3, -1.7), (2.5, 3.0), (-7.25, 0.0), (0.0, 0.0), (-0.01, 12.6)]:
        expected = ndimage.shift(img, d, order=1, mode="nearest")
        np.testing.assert_allclose(shift_linear(img, *d), expected, atol=1e-9, err_msg=d)
