"""Lazy (dask) reads from the catalog: one plane, and the whole run (issue 15, item 4).

For each run given, opens the catalog with ``lazy=True``, takes
``run["primary"]["camera_image"].read()`` (a dask array) and times computing one plane
(``[1, 2]`` of a volumetric run, ``[77]`` of a planar one) and then the whole array,
each in this fresh process. Prints the dask chunks too.

Run: ``python benchmarks/bench_lazy.py DATA_DIR[:RUN_UID] [...]`` (no uid: the newest
run), e.g. the demo's data directory and ``bench_catalog.py --keep``'s (its big run's
uid is in ``DIR/big-run-uid``).
"""

from __future__ import annotations

import sys
import time


def main(argv: list[str] | None = None) -> int:
    from beamline_ls import open_catalog

    targets = argv if argv is not None else sys.argv[1:]
    if not targets:
        print(__doc__)
        return 2
    for target in targets:
        data, _, uid = target.partition(":")
        cat = open_catalog(data, lazy=True)
        run = cat[uid] if uid else cat[-1]
        volumes = run["primary"]["camera_image"].read()
        plane = (1, 2) if volumes.ndim == 4 else (77,)
        t0 = time.perf_counter()
        volumes[plane].compute()
        t_plane = time.perf_counter() - t0
        t0 = time.perf_counter()
        volumes.compute()
        t_whole = time.perf_counter() - t0
        print(f"{volumes.shape} in chunks of {volumes.chunksize}: one plane {t_plane:.2f} s, "
              f"whole run {t_whole:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
