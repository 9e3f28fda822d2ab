"""What one catalog request costs per document type, in a process doing nothing else.

The volumetric benchmark sees the catalog writer's time per document inside a running
scan, where it shares the process and two cores with the RunEngine, the camera
monitors and the IOC. This writes the documents of a fly scan (a stream resource,
StreamDatums of one volume each, an EventPage of the summary stream per volume, the
stop) with bluesky-tiled-plugins' ``TiledWriter`` (``batch_size=1``, as the session
does) straight into a fresh embedded catalog, one document at a time, and prints the
median and largest time per document type: the floor under what a run's end waits for.

Run: ``python benchmarks/bench_catalog_writer.py [--volumes 20] [--runs 3]``
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path


def fly_scan_documents(frames_file: Path, volumes: int) -> list[tuple[str, dict]]:
    """One fly scan's documents, as the camera and the plan emit them per volume."""
    import event_model as em

    run = em.compose_run()
    docs = [("start", run.start_doc)]
    prim = run.compose_descriptor(name="primary", data_keys={"camera_image": {
        "source": "sim", "dtype": "array", "dtype_numpy": "<u2", "shape": [20, 8, 8],
        "external": "STREAM:"}})
    keys = ("volume", "mean", "max")
    summ = run.compose_descriptor(name="summary", data_keys={
        k: {"source": "sim", "dtype": "number", "shape": []} for k in keys})
    docs += [("descriptor", prim.descriptor_doc), ("descriptor", summ.descriptor_doc)]
    res = run.compose_stream_resource(
        mimetype="application/x-hdf5", uri=f"file://localhost{frames_file}",
        data_key="camera_image", parameters={"dataset": "image", "chunk_shape": [1, 20, 8, 8]})
    docs.append(("stream_resource", res.stream_resource_doc))
    for i in range(volumes):
        docs.append(("stream_datum", res.compose_stream_datum(
            indices={"start": i, "stop": i + 1}, descriptor=prim.descriptor_doc)))
        docs.append(("event_page", summ.compose_event_page(
            data={k: [float(i)] for k in keys}, timestamps={k: [time.time()] for k in keys},
            seq_num=[i + 1], time=[time.time()])))
    docs.append(("stop", run.compose_stop()))
    return docs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--volumes", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)

    import h5py
    import numpy as np
    from bluesky_tiled_plugins import TiledWriter

    from beamline_ls import log as bls_log
    from beamline_ls.catalog import open_embedded_catalog
    from beamline_ls.config import load_settings

    bls_log.configure("WARNING")
    settings = load_settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-cw-")))
    settings.ensure_dirs()
    catalog, _ = open_embedded_catalog(settings, create=True)
    writer = TiledWriter(catalog, batch_size=1)
    frames = settings.frames_dir / "frames.h5"
    with h5py.File(frames, "w") as f:
        f["image"] = np.zeros((args.volumes, 20, 8, 8), np.uint16)
    times: dict[str, list[float]] = {}
    for _ in range(args.runs):
        for name, doc in fly_scan_documents(frames, args.volumes):
            t0 = time.perf_counter()
            writer(name, doc)
            times.setdefault(name, []).append(time.perf_counter() - t0)
    for name, ts in times.items():
        print(f"{name:16s} {len(ts):4d} documents: median {1e3 * statistics.median(ts):6.1f} "
              f"ms, max {1e3 * max(ts):6.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
