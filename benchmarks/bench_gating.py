"""Benchmark prospective optical gating against the simulator's TRUE phase.

Run:  python benchmarks/bench_gating.py            (full: 60 s of heart per frame rate)
      python benchmarks/bench_gating.py --quick    (short runs, for a smoke check)
Options: --seconds S, --seeds N, --write (print the markdown section for RESULTS.md)

Per frame rate (80, 40, 26.7, 20 fps; 128x128 px; heart 2.33 Hz, +-5 % sinusoidal rate
modulation over 7 s, 2 % Ornstein-Uhlenbeck rate wander, tau 2 s; 2 ms exposure; noise
SD 2 grey levels): circular SD of the TRUE phase at the fire times (ms and % of the
mean period), fraction of beats that got a trigger (after the first trigger), panic
triggers. Then per-frame processing time p50/p99 at 128, 256 and 512 px (one thread;
numba is single-threaded here).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beamline_ls.gating.analyzer import GatingAnalyzer  # noqa: E402
from beamline_ls.gating.evaluate import run_sim  # noqa: E402
from beamline_ls.sim.heart import SimHeart  # noqa: E402

REF_SD_MS = {80.0: (0.97, 1.33), 40.0: (4.0, 4.0), 26.7: (6.5, 6.5), 20.0: (14.0, 14.0)}


def bench_accuracy(seconds: float, seeds: int) -> list[dict[str, float]]:
    rows = []
    for fps in REF_SD_MS:
        sds, fracs, panics, ntr, per = [], [], 0, 0, []
        for seed in range(seeds):
            heart = SimHeart(seed=100 + seed, duration_s=seconds + 2)
            r = run_sim(heart, fps, seconds, (128, 128), 0.002, GatingAnalyzer())
            p = r.mean_period_s()
            sd = r.trigger_sd_rad()
            sds.append(sd / (2 * math.pi) * p * 1e3)
            per.append(p)
            fracs.append(r.beats_fraction())
            panics += r.n_panic()
            ntr += len(r.fire_times)
        sd_ms = float(np.sqrt(np.mean(np.square(sds))))
        period = float(np.mean(per))
        rows.append(dict(fps=fps, sd_ms=sd_ms, sd_pct=sd_ms / (period * 1e3) * 100,
                         sd_worst_ms=max(sds), beats=float(np.mean(fracs)),
                         beats_min=min(fracs), panic=panics, triggers=ntr,
                         goal_ms=0.7 * REF_SD_MS[fps][0]))
        row = rows[-1]
        print(f"{fps:5.1f} fps: true-phase SD {sd_ms:.2f} ms ({row['sd_pct']:.2f} % of "
              f"period; worst seed {max(sds):.2f} ms; goal <= {row['goal_ms']:.2f} ms), "
              f"beats triggered {row['beats'] * 100:.1f} % (min {min(fracs) * 100:.1f} %), "
              f"{ntr} triggers, {panics} panic", flush=True)
    return rows


def bench_speed(n_frames: int) -> list[dict[str, float]]:
    rows = []
    for size in (128, 256, 512):
        heart = SimHeart(seed=7, duration_s=n_frames / 80 + 2)
        times = np.arange(n_frames) / 80.0
        video = heart.render_video(times, (size, size), 0.002)
        an = GatingAnalyzer()
        from beamline_ls.frame import Frame

        proc = np.empty(n_frames)
        states = []
        for i in range(n_frames):
            fr = Frame(video[i], i, float(times[i]), 0.002)
            c0 = time.perf_counter()
            d = an.process(fr)
            proc[i] = time.perf_counter() - c0
            states.append(d.state)
        # the first frames include numba compilation / cache loading: excluded
        p = proc[5:]
        locked = np.array(states[5:]) == "locked"
        rows.append(dict(size=size, p50=np.percentile(p, 50) * 1e3,
                         p99=np.percentile(p, 99) * 1e3, max=p.max() * 1e3,
                         p99_locked=np.percentile(p[locked], 99) * 1e3 if locked.any()
                         else math.nan))
        r = rows[-1]
        print(f"{size}x{size}: per-frame p50 {r['p50']:.3f} ms, p99 {r['p99']:.3f} ms, "
              f"max {r['max']:.3f} ms (p99 while locked {r['p99_locked']:.3f} ms)",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 s runs, 1 seed, 300 frames")
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--speed-frames", type=int, default=None)
    ap.add_argument("--write", action="store_true",
                    help="print the figures as the markdown section of benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    seconds = a.seconds or (10.0 if a.quick else 60.0)
    seeds = a.seeds or (1 if a.quick else 3)
    nspeed = a.speed_frames or (300 if a.quick else 600)
    print(f"gating benchmark: {seconds:g} s x {seeds} seeds per frame rate; "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}")
    t0 = time.time()
    acc = bench_accuracy(seconds, seeds)
    spd = bench_speed(nspeed)
    print(f"total wall time {time.time() - t0:.0f} s")
    if a.write:
        cmd = "python benchmarks/bench_gating.py " + " ".join(argv or sys.argv[1:])
        _write(None, cmd.strip(), seconds, seeds, acc, spd)
    return 0


def _write(path: Path | None, cmd: str, seconds: float, seeds: int, acc: list[dict[str, float]],
           spd: list[dict[str, float]]) -> None:
    lines = [
        "## Prospective optical gating (beamline_ls.gating)", "",
        f"Command: `{cmd}` (measured {time.strftime('%Y-%m-%d')}, "
        f"{os.cpu_count()}-core {platform.machine()}, one thread).", "",
        f"Simulated heart (beamline_ls.sim.heart): 2.33 Hz, +-5 % sinusoidal rate "
        f"modulation (7 s), 2 % OU rate wander (tau 2 s), 128x128 px, 2 ms exposure, noise "
        f"SD 2 grey levels; {seconds:g} s per run, {seeds} seeds per frame rate, "
        "latency 15 ms. SD = circular SD of the TRUE phase at the fire times (RMS over "
        "seeds); beats = fraction of heartbeats after the first trigger that got one.", "",
        "| frame rate | true-phase SD | % of period | goal (0.7x reference) | beats "
        "triggered (min seed) | panic |",
        "|---|---|---|---|---|---|",
    ]
    for r in acc:
        lines.append(f"| {r['fps']:g} fps | {r['sd_ms']:.2f} ms (worst seed "
                     f"{r['sd_worst_ms']:.2f}) | {r['sd_pct']:.2f} % | <= {r['goal_ms']:.2f} "
                     f"ms | {r['beats'] * 100:.1f} % ({r['beats_min'] * 100:.1f} %) | "
                     f"{int(r['panic'])} |")
    lines += ["", "| frame size | p50 per frame | p99 per frame | goal p99 |", "|---|---|---|---|"]
    goals = {128: "< 1 ms", 256: "-", 512: "< 5 ms"}
    for r in spd:
        lines.append(f"| {r['size']}x{r['size']} | {r['p50']:.3f} ms | {r['p99']:.3f} ms "
                     f"| {goals[int(r['size'])]} |")
    lines.append("")
    text = "\n".join(lines) + "\n"
    if path is None:
        print(text)
    else:
        path.write_text(text)
        print(f"wrote {path}")


if __name__ == "__main__":
    raise SystemExit(main())
