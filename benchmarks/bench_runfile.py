"""What the run-file writer adds to a volumetric run (issue 6).

Same scan as ``bench_volumetric.py`` (N volumes x P planes of S x S at R volumes/s,
real IOC subprocess, ophyd, RunEngine, catalog writer on its thread), alternating runs
WITHOUT and WITH the run-file writer subscribed (on its own background thread, as the
session does by default), in one process. Reports, per mode, the wall time of
``RE(volumetric_scan(...))`` and the time until the catalog and run file hold the run
(``session.flush()``), the median difference, and the time spent inside the writer.

Run: ``python benchmarks/bench_runfile.py [--volumes 20 --planes 20 --size 512
--rate 5 --repeats 4]``
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench_volumetric import scan_arguments  # the same scan options (benchmarks/ on path)


def main(argv: list[str] | None = None) -> int:
    args = scan_arguments(__doc__, repeats=4).parse_args(argv)

    from beamline_ls import log as bls_log
    from beamline_ls.config import load_settings
    from beamline_ls.epics_env import loopback_ioc

    bls_log.configure("WARNING")
    tmp = Path(tempfile.mkdtemp(prefix="bench-runfile-"))
    settings = load_settings(data_dir=tmp, prefix="BENCHRF:")
    with loopback_ioc("BENCHRF:", tmp):
        import h5py

        from beamline_ls.callbacks import BackgroundCallback
        from beamline_ls.runfile import RunFileWriter
        from beamline_ls.session import make_session
        from devices import connect_microscope
        from plans import volumetric_scan

        scope = connect_microscope("BENCHRF:")
        session = make_session(settings, progress_bar=False, run_files=False)
        writer = RunFileWriter(tmp / "runs")
        spent = [0.0]  # seconds inside the writer (its own thread), all runs together

        def timed(name: str, doc: dict) -> None:
            t = time.perf_counter()
            try:
                writer(name, doc)
            finally:
                spent[0] += time.perf_counter() - t

        feed = BackgroundCallback(timed, name="run-file-writer")
        scope.camera.set_centered_roi(args.size)
        ideal = args.volumes / args.rate
        rows: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for i in range(args.repeats):
            for with_file in (False, True):
                token = session.RE.subscribe(feed) if with_file else None
                t0 = time.perf_counter()
                session.RE(volumetric_scan(scope.camera, scope.scanboard, args.volumes,
                                           args.planes, 10.0, 80.0, args.rate,
                                           md={"sample_name": "bench"}))
                wall = time.perf_counter() - t0
                session.flush()
                if with_file:
                    if not feed.flush(60):
                        raise TimeoutError("run-file writer did not finish")
                    session.RE.unsubscribe(token)
                stored = time.perf_counter() - t0
                rows[with_file].append((wall, stored))
                label = "with run file   " if with_file else "without run file"
                print(f"repeat {i} {label}: wall {wall:.3f} s (ideal {ideal:.3f} s), "
                      f"stored after {stored:.3f} s", flush=True)
        if feed.errors:
            raise RuntimeError(f"run-file writer failed: {feed.last_error}")
        with h5py.File(writer.last_path, "r") as f:
            shape = f["streams/primary/data/camera_image"].shape
        feed.close()
        writer.close()
        med = {k: (statistics.median(w for w, _ in v), statistics.median(s for _, s in v))
               for k, v in rows.items()}
        added_wall = med[True][0] - med[False][0]
        added_stored = med[True][1] - med[False][1]
        print(f"median wall: without {med[False][0]:.3f} s, with {med[True][0]:.3f} s, "
              f"added {added_wall * 1e3:+.0f} ms ({added_wall / med[False][0] * 100:+.1f} %, "
              f"goal <= +5 %)")
        print(f"median until stored: without {med[False][1]:.3f} s, with {med[True][1]:.3f} s, "
              f"added {added_stored * 1e3:+.0f} ms "
              f"({added_stored / med[False][1] * 100:+.1f} %)")
        print(f"time inside the run-file writer (its own thread): "
              f"{spent[0] / args.repeats * 1e3:.0f} ms per run")
        print(f"last run file: {writer.last_path.name}, camera_image {shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
