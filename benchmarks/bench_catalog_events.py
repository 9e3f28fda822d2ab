"""What writing every document to the catalog as it is emitted costs a step scan.

The session's catalog writer sends each Event to the catalog at once (``TiledWriter``
with ``batch_size=1``, see docs/DESIGN.md), one request per Event. This times
``RE(count([det, motor], num=N))`` with ophyd's simulated (instant) detector through a
session on a fresh data directory, from the call to its return (the run stored):
what a step scan of fast detectors pays, at most.

Run: ``python benchmarks/bench_catalog_events.py [--points 300] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--points", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import bluesky.plans as bp
    from ophyd.sim import det, motor

    from beamline_ls import log as bls_log
    from beamline_ls.config import load_settings
    from beamline_ls.session import make_session

    bls_log.configure("WARNING")
    session = make_session(load_settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-ev-"))),
                           progress_bar=False, run_files=False)
    walls = []
    for i in range(args.repeats):
        t0 = time.perf_counter()
        session.RE(bp.count([det, motor], num=args.points))
        walls.append(time.perf_counter() - t0)
        print(f"run {i}: {args.points} events stored in {walls[-1]:.2f} s "
              f"({walls[-1] / args.points * 1e3:.1f} ms per event)", flush=True)
    session.close()
    print(f"median {statistics.median(walls):.2f} s for {args.points} events")
    return 0


if __name__ == "__main__":
    sys.exit(main())
