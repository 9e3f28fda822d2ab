"""The catalog as data users meet it: 1000 runs, one of them 10,000 frames, embedded
and through ``beamline-ls serve`` (issue 15).

Builds a catalog in a temporary data directory: a real 10,000-frame planar run and a
real small volumetric run from the simulated microscope (IOC, RunEngine, session),
then 998 more runs whose documents are the small run's with new uids, scan ids and
sample names (``fish 0`` .. ``fish 99``), written through bluesky-tiled-plugins'
``TiledWriter`` like any run. Then, each in a fresh process (imports included):

- ``open``: ``open_catalog(...)`` until the catalog object is returned;
- ``search``: ``cat.search(Key("sample_name") == "fish 7")`` and its length (10 runs);
- ``last``: ``cat[-1]``;
- ``plane``: one frame of the 10,000-frame run, ``frames[i]``, at random ``i``.

Figures are medians over ``--repeats`` (search, last, plane) after one warm-up call.

Run: ``python benchmarks/bench_catalog.py [--runs 1000 --frames 10000 --repeats 20]
[--keep]``; ``--data DIR`` measures a directory kept before (building takes ~25 min).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

CLIENT = r"""
import json, random, statistics, sys, time
t0 = time.perf_counter()
from beamline_ls.catalog import open_catalog
from tiled.queries import Key
where, big, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
cat = (open_catalog(uri=where, api_key=sys.argv[4]) if where.startswith("http")
       else open_catalog(where))
t_open = time.perf_counter() - t0
def median(fn):
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); times.append(time.perf_counter() - t)
    return statistics.median(times)
found = []
t_search = median(lambda: found.append(len(cat.search(Key("sample_name") == "fish 7"))))
t_last = median(lambda: cat[-1])
frames = cat[big]["primary"]["camera_image"]
n = frames.shape[0]
t_plane = median(lambda: frames[random.randrange(n)])
print(json.dumps({"open": t_open, "search": t_search, "found": found[-1], "last": t_last,
                  "plane": t_plane, "runs": len(cat), "frames": n,
                  "plane_shape": list(frames.shape[1:])}))
"""


def renamed(docs: list[tuple[str, dict]], scan_id: int, sample: str) -> list[tuple[str, dict]]:
    """The same documents as a new run: every uid replaced, new scan id and sample."""
    text = json.dumps(docs)
    start = docs[0][1]
    olds = [start["uid"]] + [d["uid"] for n, d in docs if n == "descriptor"]
    for old in olds:
        text = text.replace(old, str(uuid.uuid4()))
    out = json.loads(text)
    shift = time.time() - start["time"]
    for name, doc in out:
        if "time" in doc:
            doc["time"] += shift
        if name == "start":
            doc["scan_id"] = scan_id
            doc["sample_name"] = sample
    return [(n, d) for n, d in out]


def client(where: str, big: str, repeats: int, key: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CLIENT, where, big, str(repeats), key],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def build(args: argparse.Namespace, settings) -> str:
    """The catalog: a big planar run, a small volumetric one, and copies of the small
    one up to ``--runs``; returns the big run's uid (also kept in big-run-uid)."""
    from beamline_ls.epics_env import loopback_ioc

    with loopback_ioc(settings.prefix, settings.data_dir):
        from bluesky_tiled_plugins import TiledWriter

        from beamline_ls.session import make_session
        from devices import connect_microscope
        from plans import planar_scan, volumetric_scan

        scope = connect_microscope(settings.prefix)
        scope.camera.set_centered_roi(args.size)
        session = make_session(settings, progress_bar=False, run_files=False)
        try:
            t = time.perf_counter()
            (big,) = session.RE(planar_scan(scope.camera, scope.scanboard, args.frames,
                                            40.0, 0.0005)).run_start_uids
            print(f"{args.frames}-frame run: {time.perf_counter() - t:.1f} s",
                  flush=True)
            (small,) = session.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 5,
                                                  10.0, 50.0, 5.0)).run_start_uids
            session.flush()
            template = list(session.catalog[small].documents())
            writer = TiledWriter(session.catalog)
            t = time.perf_counter()
            extra = args.runs - 2
            for i in range(extra):
                for name, doc in renamed(template, 1000 + i, f"fish {i % 100}"):
                    writer(name, doc)
                if (i + 1) % 100 == 0:
                    print(f"  {i + 1}/{extra} runs written "
                          f"({time.perf_counter() - t:.0f} s)", flush=True)
        finally:
            session.close()
            scope.destroy()

    (settings.data_dir / "big-run-uid").write_text(big)
    return big


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=128, help="frame size (px) of the big run")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--data", type=Path, default=None,
                    help="measure a data directory kept by an earlier --keep run")
    args = ap.parse_args(argv)

    from beamline_ls import log as bls_log
    from beamline_ls.config import load_settings
    from beamline_ls.epics_env import free_port

    bls_log.configure("WARNING")
    if args.data is not None:
        args.keep = True
    tmp = args.data or Path(tempfile.mkdtemp(prefix="bench-cat-"))
    settings = load_settings(data_dir=tmp, prefix="BENCHCAT:")
    try:
        if args.data is not None:
            big = (tmp / "big-run-uid").read_text().strip()
        else:
            big = build(args, settings)
        results = {"embedded": client(str(tmp), big, args.repeats, "")}
        key = "benchkey"
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "beamline_ls.cli", "serve",
                                   "--data-dir", str(tmp), "--port", str(port),
                                   "--api-key", key], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            import httpx

            deadline = time.monotonic() + 120
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/api/v1/", timeout=2)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise RuntimeError("beamline-ls serve did not start") from None
                    time.sleep(0.3)
            results["http"] = client(f"http://127.0.0.1:{port}", big, args.repeats, key)
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(30)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print(f"{'':10s}{'open s':>8s}{'search ms':>11s}{'cat[-1] ms':>12s}{'plane ms':>10s}"
          f"{'runs':>7s}{'found':>7s}")
    for where, r in results.items():
        print(f"{where:10s}{r['open']:8.2f}{r['search'] * 1e3:11.1f}{r['last'] * 1e3:12.1f}"
              f"{r['plane'] * 1e3:10.1f}{r['runs']:7d}{r['found']:7d}")
    print(f"big run: {results['http']['frames']} frames of {results['http']['plane_shape']}; "
          f"median of {args.repeats}")
    if args.keep:
        print(f"data kept in {tmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
