"""Frame writer throughput on this machine's default temp disk (issue 4).

Runs ``beamline-ls bench writer`` (:func:`beamline_ls.pipeline.bench.main`) for the two
camera modes of the lightsheet facts: full-frame sCMOS 2048x2048 at 100 fps (839 MB/s)
and 2x2-binned 1024x1024 at 400 fps (the same 839 MB/s in 4x more, smaller frames),
each paced in real time through Recorder -> FrameFileWriter, then raw h5py on the same
disk. Each case runs ``--runs`` times (cases interleaved, so a passing disturbance does
not hit one case only). Prints the figures per run, the ratios pipeline MB/s / raw MB/s
and pipeline / min(raw, demand) of the same run, and checks the claim "zero drops where
the raw disk speed is >= 1.1x the demand".

The recorder's buffer is prepared (allocated, pages faulted in) before each clock starts
unless ``--cold-buffer``; each timed phase follows ``--settle`` idle seconds (see
:mod:`beamline_ls.pipeline.bench` for why).

Run: ``python benchmarks/bench_writer.py [--seconds 5] [--runs 3] [--dir D]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys

from beamline_ls.pipeline import bench

CASES = [("2048x2048", 100.0), ("1024x1024", 400.0)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--dir", default=None, help="disk to test (default: system temp dir)")
    ap.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    ap.add_argument("--settle", type=float, default=None,
                    help="idle seconds before each timed phase (default: the bench's)")
    ap.add_argument("--cold-buffer", action="store_true",
                    help="do not prepare the recorder's buffer before the clock")
    args = ap.parse_args(argv)
    rows = []
    for run, (shape, rate) in ((r, c) for r in range(1, args.runs + 1) for c in CASES):
        cmd = ["writer", "--shape", shape, "--rate", f"{rate:g}",
               "--seconds", f"{args.seconds:g}", "--json"]
        if args.dir:
            cmd += ["--dir", args.dir]
        if args.settle is not None:
            cmd += ["--settle", f"{args.settle:g}"]
        if args.cold_buffer:
            cmd += ["--cold-buffer"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = bench.main(cmd)
        if rc != 0:
            print(f"bench {' '.join(cmd)} failed with exit code {rc}", file=sys.stderr)
            return rc
        r = json.loads(out.getvalue())
        r["run"] = run
        rows.append(r)
        print(f"\n$ beamline-ls bench {' '.join(c for c in cmd if c != '--json')}  # run {run}")
        print(bench.format_summary(r), flush=True)
    print("\n| case | run | demand MB/s | pipeline MB/s | raw MB/s (checksums) "
          "| raw MB/s (none) | raw/demand | pipeline/raw "
          "| pipeline/min(raw,demand) | offered fps | written | dropped | cpu s pipeline/raw "
          "| keeps up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    claim_ok = True
    for r in sorted(rows, key=lambda r: (-r["shape"][0], r["run"])):
        y, x = r["shape"]
        print(f"| {y}x{x} @ {r['rate_fps']:g} fps | {r['run']} | {r['demand_mb_per_s']:.0f} "
              f"| {r['mb_per_s']:.0f} | {r['raw_mb_per_s']:.0f} "
              f"| {r['raw_plain_mb_per_s']:.0f} | {r['raw_over_demand']:.2f} "
              f"| {r['ratio_to_raw']:.2f} | {r['ratio_to_achievable']:.2f} "
              f"| {r['producer_fps']:.1f} | {r['frames_written']} | {r['frames_dropped']} "
              f"| {r['cpu_s']:.1f} / {r['raw_cpu_s']:.1f} "
              f"| {'yes' if r['keeps_up'] else 'NO'} |")
        if r["raw_over_demand"] >= 1.1 and r["frames_dropped"]:
            claim_ok = False
    print("\nclaim 'zero drops where raw >= 1.1x demand':",
          "holds" if claim_ok else "DOES NOT HOLD on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
