"""Volumetric run on the simulated microscope through real IOCs, RunEngine and catalog.

Measures, for N volumes x P planes of an S x S ROI at R volumes/s:
- wall time of ``RE(volumetric_scan(...))`` over the ideal acquisition time N / R
- time from the ``RE(...)`` call to the first frame's exposure start and to its arrival
  in the file (the frame's timestamp is the camera's absolute exposure start)

Where the time goes, per run (from the file's exposure stamps and the call's clock):
``setup`` from the call to the first exposure (prepare, arm, kickoff), ``acquire``
from the first exposure's start to the last one's end (the scan board's timing: the
ideal minus nothing but the last volume's idle tail), ``finish`` from the last
exposure's end to the call's return (frames still rendering, the writer closing the
file, collect and close_run). Separately, the simulator's own cost: rendering one
frame of this ROI in this process, against the time per frame the scan allows; when it
is over budget, the simulated camera cannot keep up on this machine and the wall time
says more about the simulator than about the stack.

Run: ``python benchmarks/bench_volumetric.py [--volumes 20 --planes 20 --size 512
--rate 5 --repeats 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def scan_arguments(description: str | None, repeats: int) -> argparse.ArgumentParser:
    """The scan options shared by the volumetric benchmarks (this one, bench_runfile)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--volumes", type=int, default=20)
    ap.add_argument("--planes", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--rate", type=float, default=5.0)
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = scan_arguments(__doc__, repeats=3)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-run-files", action="store_true",
                    help="do not write the per-run HDF5 file (to see what it costs)")
    args = ap.parse_args(argv)

    from beamline_ls import log as bls_log
    from beamline_ls.config import load_settings
    from beamline_ls.epics_env import loopback_ioc

    bls_log.configure("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="bench-vol-"))
    settings = load_settings(data_dir=tmp, prefix="BENCH:")
    with loopback_ioc("BENCH:", tmp):
        import h5py

        from beamline_ls.session import make_session
        from devices import connect_microscope
        from plans import volumetric_scan

        scope = connect_microscope("BENCH:")
        session = make_session(settings, progress_bar=False, run_files=not args.no_run_files)
        scope.camera.set_centered_roi(args.size)
        ideal = args.volumes / args.rate
        rows = []
        for i in range(args.repeats):
            t_call = time.time()
            session.RE(volumetric_scan(scope.camera, scope.scanboard, args.volumes, args.planes,
                                       10.0, 80.0, args.rate, md={"sample_name": "bench"}))
            wall = time.time() - t_call
            session.flush()
            catalog_s = time.time() - t_call
            path = scope.camera.hdf.full_file_name.get()
            with h5py.File(path, "r") as f:
                stamps = f["/entry/meta/timestamp"][...]
                n_frames = int((stamps >= 0).sum())
            first_exposure = float(stamps.ravel()[0]) - t_call
            exposure = float(scope.camera.cam.acquire_time.get())
            last_end = float(stamps.ravel()[-1]) + exposure
            acquire = last_end - float(stamps.ravel()[0])
            finish = t_call + wall - last_end
            rows.append({"repeat": i, "wall_s": wall, "catalog_s": catalog_s, "ideal_s": ideal,
                         "ratio": wall / ideal, "setup_s": first_exposure,
                         "acquire_s": acquire, "finish_s": finish,
                         "first_frame_s": first_exposure, "frames": n_frames})
            print(f"run {i}: wall {wall:.3f} s, ideal {ideal:.3f} s, ratio {wall / ideal:.3f} "
                  f"= setup {first_exposure * 1e3:.0f} ms + acquire {acquire:.3f} s + finish "
                  f"{finish * 1e3:.0f} ms; {n_frames} frames, in catalog after "
                  f"{catalog_s:.3f} s", flush=True)
        summary = {
            "volumes": args.volumes, "planes": args.planes, "size": args.size,
            "rate": args.rate,
            "ratio_median": statistics.median(r["ratio"] for r in rows),
            "ratio_max": max(r["ratio"] for r in rows),
            "first_frame_s_median": statistics.median(r["first_frame_s"] for r in rows),
            "first_frame_s_max": max(r["first_frame_s"] for r in rows),
            "runs": rows,
        }
        summary["render_ms"], summary["budget_ms"] = render_cost(args)
        if args.json:
            print(json.dumps(summary))
        else:
            print(f"median wall/ideal {summary['ratio_median']:.3f} (goal <= 1.05), "
                  f"median RE -> first frame {summary['first_frame_s_median'] * 1e3:.0f} ms "
                  f"(goal < 500 ms)")
            print(f"simulator: rendering one {args.size}x{args.size} frame takes "
                  f"{summary['render_ms']:.1f} ms (median of 20, this process), the scan "
                  f"allows {summary['budget_ms']:.1f} ms per frame"
                  + ("" if summary["render_ms"] < summary["budget_ms"] else
                     ": OVER BUDGET, the simulated camera cannot keep up here"))
    return 0


def render_cost(args: argparse.Namespace) -> tuple[float, float]:
    """(median ms to render one frame of the scan's ROI, ms per frame the scan allows):
    the simulator's cost alone, measured in this process as the IOC's camera does it."""
    from beamline_ls.sim.heart import SimHeart
    from beamline_ls.sim.microscope import Roi, SimMicroscope

    m = SimMicroscope()  # with a heart, as the IOC's (the heart wall fluoresces too)
    m.heart = SimHeart(t0=m.clock.now() - 1.0, duration_s=60.0, dt_s=5e-3)
    n = args.size
    roi = Roi((m.sensor.width - n) // 2, (m.sensor.height - n) // 2, n, n)
    t0 = m.clock.now()
    times = []
    for k in range(21):
        start = time.perf_counter()
        m.expose(t0 + k * 0.01, 0.005, roi, 1)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:]) * 1e3, 1e3 / (args.rate * args.planes)


if __name__ == "__main__":
    sys.exit(main())
