"""Benchmark prospective optical gating on the heart corpus against the TRUE phase.

The benchmark lives in the CLI so users can run it on their own machine:

    beamline-ls bench gating                      (full: 40 s x 3 seeds, every heart)
    beamline-ls bench gating --seconds 10 --seeds 1 --fps 80,20   (a quick look)

This script only forwards its arguments: `python benchmarks/bench_gating.py [ARGS]`.
Figures and the command that produced them are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from beamline_ls.gating.bench import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
