"""``beamline-ls bench gating``: gate every heart of the corpus and score it.

Runs `beamline_ls.gating.corpus` (recorded heartbeats, procedural hearts, the sim heart,
and videos with no heart) at each frame rate and seed, through the same per-frame path
as ``beamline-ls replay``, and prints one row per heart and frame rate against the
targets a user checks gating by: lock within 3 s, a trigger on >= 95 % of beats, no
early trigger, <= 2 duplicates per 40 s, true-phase SD <= 0.05 rad at 80/40 fps and
<= 0.15 rad at 26.7/20 fps (worst seed), and the analyzer's own error estimate within
1.5x of the true SD. Then the per-frame cost (p99) at 128x128 and 512x512.

``--markdown FILE`` writes the tables as a section for ``benchmarks/RESULTS.md``.
Progress goes to stderr, one line per run; ``--jobs`` runs that many in parallel.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import os
import platform
import sys
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from . import corpus
from .score import Score

SD_BOUND = {80.0: 0.05, 40.0: 0.05, 80.0 / 3.0: 0.15, 20.0: 0.15}


def _run(job: tuple[str, float, int, float, str | None]
         ) -> tuple[str, str, float, int, Score, float, int]:
    """One (case, fps, seed) run in a worker: single-threaded numerics."""
    name, fps, seed, seconds, folder = job
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        cases = {c.name: c for c in _cases(folder)}
        r = corpus.run_case(cases[name], fps, seed, seconds)
    return r.case, r.kind, r.fps, r.seed, r.score, r.p99_ms, r.false_triggers


def _cases(folder: str | None) -> list[corpus.Case]:
    return corpus.hearts(Path(folder) if folder else None) + corpus.no_hearts()


def _row_ok(kind: str, fps: float, scores: list[Score], seconds: float,
            false_triggers: int = 0) -> list[str]:
    """What misses item 1 (or 2 for no-heart videos); empty when the row holds."""
    if kind == "no-heart":
        return ["triggered"] if false_triggers else []
    miss = []
    if any(not s.t_lock_s <= 3.0 for s in scores):
        miss.append("lock > 3 s")
    if any(not s.beats >= 0.95 for s in scores):
        miss.append("beats < 95 %")
    if any(s.early for s in scores):
        miss.append("early")
    if any(s.duplicates > 2 * seconds / 40.0 for s in scores):
        miss.append("duplicates")
    bound = min(SD_BOUND.items(), key=lambda kv: abs(kv[0] - fps))[1]
    if any(not s.sd_rad <= bound for s in scores):
        miss.append(f"SD > {bound:g}")
    ratios = [s.est_err_rad / s.sd_rad for s in scores if s.sd_rad > 0]
    if any(not 1 / 1.5 <= r <= 1.5 for r in ratios):
        miss.append("estimate off > 1.5x")
    return miss


def speed(n_frames: int = 600) -> list[dict[str, float]]:
    """Per-frame processing time of the sim heart at 128 and 512 px (one thread), every
    frame counted, after the warm-up a live gating system runs before frames stream
    (`warmup.warm_up`: kernels compiled and loaded, as on the IOC)."""
    from threadpoolctl import threadpool_limits

    from ..frame import Frame
    from ..sim.heart import SimHeart
    from .analyzer import GatingAnalyzer
    from .executors import InlineExecutor
    from .warmup import warm_up

    rows = []
    with threadpool_limits(1):
        for size in (128, 512):
            heart = SimHeart(seed=7, duration_s=n_frames / 80 + 2)
            times = np.arange(n_frames) / 80.0
            video = heart.render_video(times, (size, size), 0.002)
            warm_up((size, size), video.dtype)
            an = GatingAnalyzer(executor=InlineExecutor())
            proc = np.empty(n_frames)
            locked = np.zeros(n_frames, bool)
            for i in range(n_frames):
                c0 = time.perf_counter()
                d = an.process(Frame(video[i], i, float(times[i]), 0.002))
                proc[i] = time.perf_counter() - c0
                an.run_background()  # a worker's job in the IOC: not per-frame time
                locked[i] = d.state == "locked"
            p = proc * 1e3
            lk = locked
            rows.append(dict(size=size, p50=float(np.percentile(p, 50)),
                             p99=float(np.percentile(p, 99)), max=float(p.max()),
                             p99_locked=float(np.percentile(p[lk], 99)) if lk.any()
                             else math.nan))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="beamline-ls bench gating",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=40.0, help="video length (s)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per heart and frame rate")
    ap.add_argument("--fps", default="80,40,26.667,20", help="frame rates, comma separated")
    ap.add_argument("--cases", default="", help="only these cases (comma separated)")
    ap.add_argument("--heartbeats", default=None,
                    help="folder of recorded heartbeats (default ../shared/data/heartbeats)")
    ap.add_argument("--jobs", type=_non_negative, default=max(1, min(2, os.cpu_count() or 1)),
                    help="worker processes (0 or 1: in this process)")
    ap.add_argument("--speed-frames", type=_non_negative, default=600,
                    help="frames per size for the per-frame cost table (0: no table)")
    ap.add_argument("--markdown", default=None, help="write the tables to this file")
    a = ap.parse_args(argv)
    try:
        fpss = [float(x) for x in a.fps.split(",") if x]
        names = [c.name for c in _cases(a.heartbeats)]
    except (ValueError, FileNotFoundError) as exc:
        print(f"beamline-ls bench gating: error: {exc}", file=sys.stderr)
        return 2
    wanted = [n for n in a.cases.split(",") if n]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        print(f"beamline-ls bench gating: error: unknown case(s) {unknown}; known: "
              f"{', '.join(names)}", file=sys.stderr)
        return 2
    names = wanted or names
    jobs = [(n, f, s, a.seconds, a.heartbeats) for n in names for f in fpss
            for s in range(a.seeds)]
    t0 = time.time()
    results: dict[tuple[str, str, float], list[tuple[Score, float, int]]] = defaultdict(list)
    with contextlib.ExitStack() as stack:
        if a.jobs > 1:  # worker processes started afresh: forking a threaded caller
            # (a test session with CA clients) can copy a held lock into the child
            pool = stack.enter_context(ProcessPoolExecutor(
                max_workers=a.jobs, mp_context=multiprocessing.get_context("spawn")))
            outcomes = pool.map(_run, jobs)
        else:
            outcomes = map(_run, jobs)
        for i, (name, kind, fps, seed, sc, p99, false) in enumerate(outcomes, 1):
            results[(name, kind, fps)].append((sc, p99, false))
            print(f"[{i}/{len(jobs)} {time.time() - t0:5.0f} s] {name} {fps:g} fps seed "
                  f"{seed}: SD {sc.sd_rad:.3f} rad, beats {sc.beats * 100:.1f} %, "
                  f"{sc.n_triggers} triggers", file=sys.stderr, flush=True)
    lines = table(results, a.seconds)
    spd = speed(a.speed_frames) if a.speed_frames else []
    if spd:
        lines += ["", "| frame size | p50 per frame | p99 per frame | p99 while locked | "
                  "goal p99 |", "|---|---|---|---|---|"]
    goals = {128: "< 1 ms", 512: "< 5 ms"}
    for r in spd:
        lines.append(f"| {r['size']}x{r['size']} | {r['p50']:.3f} ms | {r['p99']:.3f} ms | "
                     f"{r['p99_locked']:.3f} ms | {goals[int(r['size'])]} |")
    cmd = "beamline-ls bench gating " + " ".join(argv if argv is not None else sys.argv[1:])
    head = [f"Command: `{cmd.strip()}` ({time.strftime('%Y-%m-%d')}, {os.cpu_count()}-core "
            f"{platform.machine()}, {a.jobs} worker(s), {time.time() - t0:.0f} s).", ""]
    text = "\n".join(head + lines) + "\n"
    print(text)
    if a.markdown:
        Path(a.markdown).write_text(text)
    return 0


def _worst_lock(scores: list[Score]) -> str:
    """The slowest time to lock, or how many seeds never locked."""
    never = sum(1 for s in scores if math.isnan(s.t_lock_s))
    if never:
        return f"never in {never} seed(s)"
    return f"{max(s.t_lock_s for s in scores):.2f}"


def _non_negative(text: str) -> int:
    """argparse type: a whole number, 0 or more."""
    n = int(text)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {n}")
    return n


def table(results: dict[tuple[str, str, float], list[tuple[Score, float, int]]],
          seconds: float) -> list[str]:
    """Markdown rows: one per heart and frame rate, seeds summarised (worst seed)."""
    lines = ["| heart | fps | true-phase SD worst (mean) rad | own estimate / true | beats "
             "min | dupl. max | early | lock max s | p99 ms | holds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (name, kind, fps), rows in sorted(results.items(), key=lambda kv: (
            kv[0][1] == "no-heart", kv[0][0], -kv[0][2])):
        scores = [r[0] for r in rows]
        p99 = max(r[1] for r in rows)
        false = sum(r[2] for r in rows)
        miss = _row_ok(kind, fps, scores, seconds, false)
        if kind == "no-heart":
            locks = sum(1 for s in scores if not math.isnan(s.t_lock_s))
            lines.append(f"| {name} | {fps:g} | - | - | - | - | - | locked in {locks} of "
                         f"{len(scores)} | {p99:.2f} | {'yes' if not miss else 'NO'}: "
                         f"{false} false triggers |")
            continue
        sds = [s.sd_rad for s in scores]
        ratio = [s.est_err_rad / s.sd_rad for s in scores if s.sd_rad > 0] or [math.nan]
        known = [x for x in sds if not math.isnan(x)]  # NaN: too few triggers for an SD
        sd_text = f"{max(known):.3f} ({np.mean(known):.3f})" if known else ""
        if len(known) < len(sds):
            sd_text += f" + {len(sds) - len(known)} seed(s) with < 2 triggers"
        lines.append(
            f"| {name} | {fps:g} | {sd_text.strip()} | "
            f"{min(ratio):.2f}-{max(ratio):.2f} | {min(s.beats for s in scores) * 100:.1f} % | "
            f"{max(s.duplicates for s in scores)} | {sum(s.early for s in scores)} | "
            f"{_worst_lock(scores)} | {p99:.2f} | "
            f"{'yes' if not miss else 'NO: ' + ', '.join(miss)} |")
    return lines
