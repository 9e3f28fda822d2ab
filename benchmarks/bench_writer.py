"""Frame writer throughput on this machine's default temp disk (issue 4).

Runs ``beamline-ls bench writer`` (:func:`beamline_ls.pipeline.bench.main`) for the two
camera modes of the lightsheet facts: full-frame sCMOS 2048x2048 at 100 fps (839 MB/s)
and 2x2-binned 1024x1024 at 400 fps (the same 839 MB/s in 4x more, smaller frames),
each paced in real time through Recorder -> FrameFileWriter, then raw h5py on the same
disk. Prints the figures per case, the ratio pipeline MB/s / raw MB/s, and checks the
claim "zero drops where the raw disk speed is >= 1.1x the demand".

Run: ``python benchmarks/bench_writer.py [--seconds 5] [--dir D]``
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
    args = ap.parse_args(argv)
    rows = []
    for shape, rate in CASES:
        cmd = ["writer", "--shape", shape, "--rate", f"{rate:g}",
               "--seconds", f"{args.seconds:g}", "--json"]
        if args.dir:
            cmd += ["--dir", args.dir]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            rc = bench.main(cmd)
        if rc != 0:
            print(f"bench {' '.join(cmd)} failed with exit code {rc}", file=sys.stderr)
            return rc
        r = json.loads(out.getvalue())
        rows.append(r)
        print(f"\n$ beamline-ls bench {' '.join(cmd[:-1])}")
        print(bench.format_summary(r))
    print("\n| case | demand MB/s | pipeline MB/s | raw MB/s | raw/demand | pipeline/raw "
          "| offered fps | written | dropped | cpu s | keeps up |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    claim_ok = True
    for r in rows:
        y, x = r["shape"]
        print(f"| {y}x{x} @ {r['rate_fps']:g} fps | {r['demand_mb_per_s']:.0f} "
              f"| {r['mb_per_s']:.0f} | {r['raw_mb_per_s']:.0f} | {r['raw_over_demand']:.2f} "
              f"| {r['ratio_to_raw']:.2f} | {r['producer_fps']:.1f} | {r['frames_written']} "
              f"| {r['frames_dropped']} | {r['cpu_s']:.1f} | {'yes' if r['keeps_up'] else 'NO'} |")
        if r["raw_over_demand"] >= 1.1 and r["frames_dropped"]:
            claim_ok = False
    print("\nclaim 'zero drops where raw >= 1.1x demand':",
          "holds" if claim_ok else "DOES NOT HOLD on this machine")
    return 0


if __name__ == "__main__":
    sys.exit(main())
