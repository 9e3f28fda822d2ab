"""The first gated scan after an IOC starts: how late do its triggers fire?

Each repeat starts a fresh simulated IOC on a private loopback CA network, connects the
devices, and runs one gated scan (4 planes x 2 passes, as an operator's first scan of
the day would be) through the RunEngine into the catalog. From the stored frames:
- lateness: exposure start (when the simulated camera saw the pulse) minus the time
  the gating decided to fire, per frame; the software trigger's real delay;
- the circular SD of the simulated heart's true phase over the frames (every frame
  should show the same phase);
- brightfield frames the gating camera lost and the analysis skipped during the scan.

Why a fresh IOC: its first capture allocates the frame buffer, and faulting that in
once stalled the whole IOC for tens of ms at a time (RESULTS.md, 2026-12-06).

Run: ``python benchmarks/bench_gated_first_scan.py [--repeats 5]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLANES = [25.0, 40.0, 55.0, 70.0]


def one_scan() -> dict:
    """A fresh IOC, one gated scan; the figures of the module docstring."""
    import numpy as np

    from beamline_ls import log as bls_log
    from beamline_ls.config import load_settings
    from beamline_ls.epics_env import loopback_ioc
    from beamline_ls.gating.score import circular_sd

    bls_log.configure("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="bench-gated-"))
    with loopback_ioc("BENCHG:", tmp):
        from beamline_ls.session import make_session
        from devices import connect_microscope
        from plans import gated_scan

        scope = connect_microscope("BENCHG:")
        session = make_session(load_settings(data_dir=tmp, prefix="BENCHG:"),
                               progress_bar=False)
        try:
            lost0, skipped0 = scope.gating.frames_lost.get(), scope.gating.frames_skipped.get()
            t0 = time.time()
            result = session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, PLANES,
                                           frames_per_plane=2, md={"sample_name": "bench"}))
            wall = time.time() - t0
            lost = scope.gating.frames_lost.get() - lost0
            skipped = scope.gating.frames_skipped.get() - skipped0
            scope.gating.enable.set("Off").wait(10)
            session.flush()
            prim = session.catalog[result.run_start_uids[0]]["primary"]
            late = (prim["camera_timestamp"].read() - prim["camera_trigger_time"].read())
            true = np.ravel(prim["camera_true_phase"].read())
        finally:
            session.close()
    return {"late_max_ms": float(np.max(late)) * 1e3,
            "late_median_ms": float(np.median(late)) * 1e3,
            "true_phase_sd_rad": circular_sd(true),
            "brightfield_lost": int(lost), "brightfield_skipped": int(skipped),
            "wall_s": wall}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one_scan()))
        return 0
    rows = []
    for i in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--one"], capture_output=True,
                             text=True, timeout=600)
        if out.returncode != 0:
            print(out.stderr[-2000:], file=sys.stderr)
            return 1
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"run {i + 1}: lateness max {r['late_max_ms']:.1f} ms (median "
              f"{r['late_median_ms']:.2f}), true-phase SD {r['true_phase_sd_rad']:.3f} rad, "
              f"brightfield lost {r['brightfield_lost']} skipped {r['brightfield_skipped']}",
              flush=True)
    worst = max(r["late_max_ms"] for r in rows)
    sds = sorted(r["true_phase_sd_rad"] for r in rows)
    print(f"{len(rows)} fresh IOCs: worst lateness {worst:.1f} ms; true-phase SD "
          f"{sds[0]:.3f}-{sds[-1]:.3f} rad; over 0.06 rad in "
          f"{sum(s > 0.06 for s in sds)} of {len(sds)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
