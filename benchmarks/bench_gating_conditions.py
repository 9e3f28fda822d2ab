"""Gating under conditions the corpus does not vary: heart rate, rhythm, dropped frames.

Usage (from the project root):

    .venv/bin/python benchmarks/bench_gating_conditions.py --heart reference0001 \
        --rate 3.6 --fps 20 --seconds 20 --seeds 0,1
    .venv/bin/python benchmarks/bench_gating_conditions.py --heart reference0002 \
        --drop 0.1 --stall 9.0 --fps 80 --seconds 20 --seeds 0,1

``--rate`` replays a recorded heartbeat at that mean heart rate (Hz) with the corpus's
live irregularity (`corpus.live_beat`); ``--stretch LO,HI`` makes its irregular beats
last that much longer (the corpus: 0.2,0.3), ``--irregular N`` sets how many there are,
``--modulation F`` the rate modulation (the corpus: 0.05). Without any of these the
corpus case is used as it is.
``--contrast F`` gates a faint tube heart of that contrast and of another shape than
the corpus's low-contrast heart.
``--drop`` removes that fraction of the frames at random, ``--stall`` 0.3 s of frames
from that time on; the analyzer gets the kept frames with their true times. One line
per seed: true-phase SD, beats triggered, triggers, early, duplicates, time to lock.
"""

from __future__ import annotations

import argparse

import numpy as np

from beamline_ls.frame import Frame
from beamline_ls.gating import corpus
from beamline_ls.gating.score import score_decisions
from beamline_ls.sim.videos import RecordedHeart


def _faint(contrast: float, seed: int, seconds: float):
    """The corpus's faint heart at another contrast and another tube (shape seed + 100)."""
    from beamline_ls.sim.procedural import LowContrastHeart

    rng = np.random.default_rng([seed, 999])
    return LowContrastHeart(beat=corpus.live_beat(rng, seconds),
                            camera=corpus.live_camera(rng), seed=seed + 100,
                            contrast=contrast)


def _video(heart: str, rhythm: dict, seed: int, seconds: float):
    if not rhythm:
        return {c.name: c for c in corpus.hearts()}[heart].make(seed, seconds)
    tif, period = corpus.recorded_periods()[heart]
    rng = np.random.default_rng([seed, 7])
    return RecordedHeart(tif, period, corpus.live_beat(rng, seconds, **rhythm),
                         corpus.live_camera(rng), seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heart", default="reference0001")
    ap.add_argument("--rate", type=float, help="mean heart rate (Hz), recorded hearts")
    ap.add_argument("--stretch", help="LO,HI: irregular beats last 1+LO to 1+HI times "
                                      "longer (recorded hearts)")
    ap.add_argument("--irregular", type=int, help="irregular beats in the video")
    ap.add_argument("--modulation", type=float, help="rate modulation, fraction")
    ap.add_argument("--contrast", type=float,
                    help="a faint tube heart of this contrast (fraction of the mean; the "
                         "corpus's low-contrast heart: 0.04), another shape than the "
                         "corpus's; --heart is ignored")
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--drop", type=float, default=0.0, help="fraction of frames dropped")
    ap.add_argument("--stall", type=float, help="0.3 s without frames from this time (s)")
    args = ap.parse_args()
    rhythm: dict[str, object] = {}
    if args.rate is not None:
        rhythm["mean_rate_hz"] = args.rate
    if args.stretch:
        lo, hi = (float(v) for v in args.stretch.split(","))
        rhythm["irregular_stretch"] = (lo, hi)
    if args.irregular is not None:
        rhythm["n_irregular"] = args.irregular
    if args.modulation is not None:
        rhythm["modulation_frac"] = args.modulation
    for seed in (int(s) for s in args.seeds.split(",")):
        video = _faint(args.contrast, seed, args.seconds) if args.contrast is not None \
            else _video(args.heart, rhythm, seed, args.seconds)
        times = np.arange(int(round(args.seconds * args.fps))) / args.fps
        keep = np.random.default_rng(seed).random(times.size) >= args.drop
        if args.stall is not None:
            keep &= ~((times >= args.stall) & (times < args.stall + 0.3))
        frames = (Frame(video.frame(float(times[i])), int(i), float(times[i]), 0.0)
                  for i in np.flatnonzero(keep))
        decisions, _, an = corpus.gate_frames(frames)
        s = score_decisions(decisions, video.true_phase, an.cfg.latency_s)
        heart = f"faint tube {args.contrast:g}" if args.contrast is not None else args.heart
        print(f"{heart} {rhythm or 'as in the corpus'} {args.fps:g} fps "
              f"drop {args.drop:g} seed {seed}: SD {s.sd_rad:.3f} rad, beats "
              f"{s.beats * 100:.0f} %, {s.n_triggers} triggers, early {s.early}, "
              f"duplicates {s.duplicates}, lock {s.t_lock_s:.2f} s", flush=True)


if __name__ == "__main__":
    main()
