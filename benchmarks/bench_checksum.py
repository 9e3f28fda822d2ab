"""What the frame files' Fletcher-32 checksums cost (issue 14).

Two measurements on this machine's temp disk:

1. the kernel alone: copying a 2048x2048 uint16 frame into its chunk buffer and
   summing it (`beamline_ls.pipeline.checksum.chunk_with_fletcher32`), ms per frame;
2. writing the same random frames as one chunk each under SWMR, interleaved runs with
   and without the checksum (``fletcher32`` dataset + the kernel, against a plain
   dataset and ``write_direct_chunk`` of the frame as it is), MB/s per run and median.
   Runs alternate order and each follows ``--settle`` idle seconds (see
   `beamline_ls.pipeline.bench` on why this VM needs it).

Run: ``python benchmarks/bench_checksum.py [--frames 100] [--runs 3] [--settle 3]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from beamline_ls.pipeline.checksum import chunk_with_fletcher32

SHAPE = (2048, 2048)


def kernel_ms(frame: np.ndarray, repeats: int = 50) -> float:
    buf = chunk_with_fletcher32(frame)
    t = time.perf_counter()
    for _ in range(repeats):
        chunk_with_fletcher32(frame, buf)
    return (time.perf_counter() - t) / repeats * 1e3


def write_mb_per_s(path: Path, pool: list[np.ndarray], n: int, checksums: bool) -> float:
    with h5py.File(path, "x", libver="latest") as f:
        ds = f.create_dataset("d", shape=(0, *SHAPE), maxshape=(None, *SHAPE),
                              chunks=(1, *SHAPE), dtype="<u2", fletcher32=checksums)
        f.swmr_mode = True
        buf = None
        t = time.perf_counter()
        for k in range(n):
            ds.resize(k + 1, axis=0)
            frame = pool[k % len(pool)]
            if checksums:
                buf = chunk_with_fletcher32(frame, buf)
                ds.id.write_direct_chunk((k, 0, 0), buf)
            else:
                ds.id.write_direct_chunk((k, 0, 0), frame)
            if k % 50 == 49:
                f.flush()
        f.flush()
        elapsed = time.perf_counter() - t
    path.unlink()
    return n * frame.nbytes / 1e6 / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--settle", type=float, default=3.0)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    pool = [rng.integers(0, 65535, SHAPE, dtype=np.uint16) for _ in range(8)]
    print(f"kernel: {kernel_ms(pool[0]):.2f} ms per {SHAPE[0]}x{SHAPE[1]} frame "
          "(copy + checksum)")
    results: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for run in range(args.runs):
            for checksums in (True, False) if run % 2 == 0 else (False, True):
                time.sleep(args.settle)
                results[checksums].append(
                    write_mb_per_s(Path(d) / "c.h5", pool, args.frames, checksums))
    for checksums, label in ((True, "with checksums"), (False, "without")):
        v = results[checksums]
        print(f"{label:15s} MB/s: {' '.join(f'{x:.0f}' for x in v)} "
              f"(median {statistics.median(v):.0f})")
    ratio = statistics.median(results[True]) / statistics.median(results[False])
    print(f"median with / without: {ratio:.2f} ({os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
