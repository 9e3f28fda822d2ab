"""``replay VIDEO.tif --fps F ... --out OUT.csv``: gate a recorded brightfield video.

Stable CLI contract (wired as ``beamline-ls replay`` by calling `main(argv)`): reads a
TIFF video (a uint8 or uint16 stack of frames as it is; RGB, hyperstacks and other
pixel types converted as `video_file` says, each conversion printed), runs the analyzer and trigger
decisions in virtual time as fast as possible, writes one CSV row per frame with
``frame,timestamp_s,phase_rad,state,trigger_time_s`` (+ a few diagnostic columns;
``trigger_time_s`` is empty when no trigger was decided and never earlier than
``timestamp_s + latency``), and prints the period found, the number of triggers and
the per-frame processing time (p50/p99). When it never locks, or loses the lock for
good, it says why in one line (no repeating change, a repeat no stronger than the
noise, period estimates that disagree, a frame rate too low for the period, a
heartbeat that stopped). ``--truth FILE`` (one true phase per frame, rad) adds the
circular SD of the true phase at the triggers; ``--plot FILE.png`` draws the
phase-lock picture (`beamline_ls.gating.plot`). Exit codes: 0 ok, 2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import logging
import math
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ..frame import Frame
from .analyzer import LOCK_LOST, Decision, GatingAnalyzer, GatingConfig
from .executors import InlineExecutor
from .predict import REFUSALS
from .scheduler import RecordingSink, TriggerScheduler, VirtualClock
from .score import effective_fire_times, score_decisions
from .video_file import VideoError, load_video

logger = logging.getLogger(__name__)

COLUMNS = ("frame", "timestamp_s", "phase_rad", "state", "trigger_time_s", "trigger_kind",
           "period_s", "reference_id", "trigger_status", "trigger_error_rad")


class ReplayError(Exception):
    """Bad input for the replay command (reported as a clear message, exit code 2)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="replay",
                                description="Prospective optical gating on a recorded video.")
    p.add_argument("video", help="TIFF video: a stack of grey frames (uint8 or uint16 as "
                   "they are; RGB and other pixel types are converted, and say so)")
    p.add_argument("--fps", type=float, required=True, help="frame rate (frames/s)")
    p.add_argument("--timestamps", help="text file: one absolute timestamp (s) per frame")
    p.add_argument("--target-phase", type=float, default=None,
                   help="target phase (rad) in the first reference; default: the end of the "
                        "half beat that moves most")
    p.add_argument("--latency", type=float, default=0.015,
                   help="minimum time from frame timestamp to trigger (s), default 0.015")
    p.add_argument("--out", required=True, help="output CSV")
    p.add_argument("--truth", help="text file: the true heart phase (rad) of every frame, "
                   "to score the triggers")
    p.add_argument("--plot", help="write the phase-lock picture to this PNG file")
    return p


def load_timestamps(path: str | Path, n: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ReplayError(f"timestamps file not found: {p}")
    try:
        ts = np.loadtxt(p, dtype=float, ndmin=1, delimiter=None)
    except ValueError as exc:
        raise ReplayError(f"cannot parse timestamps in {p}: {exc}") from exc
    if ts.ndim != 1 or ts.size != n:
        raise ReplayError(f"{p}: {ts.size} timestamps for {n} frames")
    if not np.all(np.isfinite(ts)) or np.any(np.diff(ts) <= 0):
        raise ReplayError(f"{p}: timestamps must be finite and strictly increasing")
    return ts


def load_truth(path: str | Path, n: int) -> np.ndarray:
    """One true phase (rad) per frame, returned unwrapped."""
    p = Path(path)
    if not p.is_file():
        raise ReplayError(f"truth file not found: {p}")
    try:
        ph = np.loadtxt(p, dtype=float, ndmin=1)
    except ValueError as exc:
        raise ReplayError(f"cannot parse true phases in {p}: {exc}") from exc
    if ph.ndim != 1 or ph.size != n or not np.all(np.isfinite(ph)):
        raise ReplayError(f"{p}: needs {n} finite phases (one per frame), got {ph.size}")
    return np.unwrap(ph)


def why_no_lock(analyzer: GatingAnalyzer, reasons: Counter[str], latest: dict[str, str]
                ) -> str | None:
    """One line saying why the video ends without a lock, or None if it is locked.

    The finder's reasons are counted per kind (text before the colon) over the
    frames it searched; the most frequent kind, in its latest words, is the answer.
    """
    if analyzer.state == "locked":
        return None
    if analyzer.references and analyzer.loss is not None:
        t, why = analyzer.loss
        return f"lock lost at {t:.2f} s and not regained: {why}"
    kinds = Counter({k: v for k, v in reasons.items()
                     if k not in ("collecting frames", "no frames yet")})
    if not kinds:
        return "no heartbeat detected (the video is too short to find a period)"
    kind = kinds.most_common(1)[0][0]
    return f"no heartbeat detected ({latest[kind]})"


#: why a locked frame gave no trigger, in words for the one-line summary: the
#: predictor's refusals and the analyzer's loss of lock (routine waits are not listed)
_REFUSALS = {**REFUSALS, LOCK_LOST: "the frames stopped matching the reference"}


def why_few_triggers(decisions: list[Decision], period_s: float | None) -> str | None:
    """One line saying why a video that locked got triggers on fewer than 80 % of
    the beats it was locked for, or None. Why: a lock without triggers (the phase
    read does not advance like a heart) ended with "triggers: 0" and nothing else.
    The answer is the most frequent refusal of the locked frames, counted by kind."""
    if not period_s or not decisions:
        return None
    locked = [d for d in decisions if d.state == "locked"]
    if len(locked) < 2:
        return None
    dt = np.diff([d.timestamp for d in decisions])  # each frame until the next
    locked_s = float(sum(step for d, step in zip(decisions[:-1], dt, strict=True)
                         if d.state == "locked"))
    beats = locked_s / period_s
    fired = sum(1 for d in locked if d.fire_time is not None)
    if beats < 2 or fired >= 0.8 * beats:
        return None
    kinds = Counter(d.reason for d in decisions if d.reason in _REFUSALS)
    if not kinds:
        return None
    kind, count = kinds.most_common(1)[0]
    return (f"few triggers: {fired} in {locked_s:.1f} s of lock (~{beats:.0f} beats); "
            f"{count} frames were refused for {kind!r}: {_REFUSALS[kind]}")


def _fmt(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.6f}"


def main(argv: list[str] | None = None) -> int:
    """Run the replay command; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if not (math.isfinite(args.fps) and args.fps > 0):
            raise ReplayError(f"--fps must be a positive number, got {args.fps}")
        if not (math.isfinite(args.latency) and args.latency >= 0):
            raise ReplayError(f"--latency must be >= 0 s, got {args.latency}")
        try:
            video, notes = load_video(args.video)
        except VideoError as exc:
            raise ReplayError(str(exc)) from exc
        for note in notes:
            print(f"video: {note}")
        n = video.shape[0]
        if args.timestamps:
            ts = load_timestamps(args.timestamps, n)
        else:
            ts = np.arange(n) / args.fps
        truth = load_truth(args.truth, n) if args.truth else None
        if args.plot:  # found out now, not after the whole replay
            folder = Path(args.plot).resolve().parent
            if not folder.is_dir():
                raise ReplayError(f"--plot {args.plot}: no directory {folder}")
    except ReplayError as exc:
        print(f"replay: error: {exc}", file=sys.stderr)
        return 2

    cfg = GatingConfig(latency_s=args.latency, target_phase=args.target_phase)
    analyzer = GatingAnalyzer(cfg, executor=InlineExecutor())
    clock = VirtualClock(float(ts[0]))
    sink = RecordingSink(clock)
    sched = TriggerScheduler(sink, clock)
    proc = np.empty(n)
    decisions = []
    period_track = np.full(n, np.nan)  # s: the reference's, or the search's estimate
    reasons: Counter[str] = Counter()
    latest: dict[str, str] = {}  # latest words of each kind of finder reason
    out = Path(args.out)
    try:
        fh = out.open("w", newline="")
    except OSError as exc:
        print(f"replay: error: cannot write {out}: {exc}", file=sys.stderr)
        return 2
    with fh:
        w = csv.writer(fh)
        w.writerow(COLUMNS)
        for i in range(n):
            t = float(ts[i])
            clock.advance_to(t)  # fires whatever became due before this frame
            frame = Frame(video[i], i, t, 0.0)
            c0 = time.perf_counter()
            d = analyzer.process(frame)
            proc[i] = time.perf_counter() - c0
            analyzer.run_background()  # folds: a worker's job live, not per-frame time
            decisions.append(d)
            if d.state == "locked":
                period_track[i] = d.fitted_period_s
            else:
                why = analyzer.finder.reason
                reasons[why.split(":")[0]] += 1
                latest[why.split(":")[0]] = why
                period_track[i] = analyzer.finder.last_period * analyzer.finder.frame_interval()
            status = ""
            if d.fire_time is not None:
                status = sched.schedule(d.fire_time, i).status
            w.writerow((i, f"{t:.6f}", _fmt(d.phase), d.state,
                        _fmt(d.fire_time) if d.fire_time is not None else "",
                        d.trigger_kind, _fmt(d.period_s), d.reference_id, status,
                        _fmt(d.error_estimate) if d.fire_time is not None else ""))
        clock.advance_to(math.inf if sched.pending else clock.now())
    ref = analyzer.references[0] if analyzer.references else None
    if ref is None:
        print("period: none found")
    else:
        print(f"period: {ref.period:.3f} frames = {ref.period_s:.4f} s "
              f"({1.0 / ref.period_s:.3f} Hz)")
        if args.latency > 0.5 * ref.period_s:
            print(f"warning: the trigger latency {args.latency:g} s is more than half a "
                  f"beat ({ref.period_s:.3f} s): each trigger is predicted "
                  f"{args.latency / ref.period_s:.1f} beats ahead, where beat-to-beat "
                  "changes of rate move it off the target phase")
    first = next((d for d in decisions if d.state == "locked"), None)
    if first is not None:
        losses = sum(a.state == "locked" and b.state != "locked"
                     for a, b in itertools.pairwise(decisions))
        print(f"lock: taken at {first.timestamp - ts[0]:.2f} s (frame {first.frame_id})"
              + (f"; lost {losses} time(s)" if losses else ""))
    print(f"triggers: {analyzer.n_triggers}")
    why = why_no_lock(analyzer, reasons, latest) or why_few_triggers(
        decisions, ref.period_s if ref is not None else None)
    if why:
        print(why)
    true_at_fire = None
    if truth is not None:
        sc = score_decisions(decisions, lambda t: np.interp(t, ts, truth), args.latency)
        if sc.n_triggers:
            eff = effective_fire_times(decisions, args.latency)
            true_at_fire = np.interp(eff[eff <= ts[-1]], ts, truth)
            spread = (f"circular SD {sc.sd_rad:.4f} rad (the analyzer's own estimate: "
                      f"{sc.est_err_rad:.4f} rad)" if sc.n_triggers > 1
                      else "one trigger, no spread to measure")
            print(f"true phase at the triggers: {spread}; beats triggered "
                  f"{sc.beats * 100:.1f} %, {sc.duplicates} duplicate, {sc.early} early")
    print(f"processing per frame: p50 {np.percentile(proc, 50) * 1e3:.3f} ms, "
          f"p99 {np.percentile(proc, 99) * 1e3:.3f} ms ({n} frames)")
    if args.plot:
        from .plot import phase_lock_figure

        try:
            phase_lock_figure(decisions, period_track, args.plot, true_at_fire, why)
        except OSError as exc:
            print(f"replay: error: cannot write {args.plot}: {exc}", file=sys.stderr)
            return 2
        print(f"phase-lock plot: {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
