"""``beamline-ls bench writer``: does this disk keep up with this camera?

It runs the real recording path (producer -> :class:`Recorder` -> :class:`FrameFileWriter`,
planar layout) with uint16 frames of the given shape, paced in real time at the given
rate, and counts frames expected / written / dropped. Then, on the same disk and in the
same run, it writes the same frames with bare h5py (one chunk per frame, as fast as
possible, with the same ``fletcher32`` checksums the pipeline's files carry) to measure
what the disk itself can take for such a file, and once more without checksums, which
gives the checksums' cost. Comparing the two tells the user
whether a shortfall is the disk (raw speed below demand) or the pipeline (drops although
the disk is fast enough).

Frames come from a small pool computed before the clock starts, so generating them
costs nothing during the measurement. The recorder's buffer is allocated and its pages
faulted in before the clock starts too (:meth:`Recorder.prepare`), as for a camera that
has been armed before; ``--cold-buffer`` skips that and measures a first capture into
fresh memory. ``MB`` is 10**6 bytes throughout.

Both timed phases start after a pause (``--settle``, default 5 s) with nothing
running: on a VM whose balloon driver reports free pages back to the host, memory freed
a moment ago (e.g. the page cache of the pipeline's file, deleted just before the raw
run) is cheap to reuse, while memory freed seconds ago must be faulted in again from the
host at ~0.4 GB/s (measured: 2.1 GB/s right after freeing, 0.57 after 1 s, 0.42 after
5 s). Without the pause the raw run, which follows the deletion within milliseconds,
gets the cheap pages and the pipeline does not. ``--settle 0`` gives the old order.

The pipeline is paced, so its MB/s cannot exceed the demand (by more than the last
frame's share); ``ratio_to_achievable`` therefore compares it with min(raw, demand).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from beamline_ls.frame import Frame
from beamline_ls.pipeline import concurrence
from beamline_ls.pipeline.hdf5_writer import LIBVER
from beamline_ls.pipeline.recorder import Recorder

MB = 1e6
POOL_FRAMES = 8
SETTLE_S = 5.0  # idle pause before each timed phase (see the module docstring)
KEEP_UP_FRACTION = 0.9  # sustained pipeline MB/s must reach this share of the demand


def parse_shape(text: str) -> tuple[int, int]:
    """``"2048x2048"`` -> (2048, 2048) as (y, x); argparse type, so errors exit with 2."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        if len(parts) != 2:
            raise ValueError
        y, x = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"bad shape {text!r}: expected HEIGHTxWIDTH, e.g. 2048x2048") from None
    if y < 1 or x < 1:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: both sizes must be >= 1")
    return y, x


def _positive(kind: type) -> Any:
    def convert(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} must be > 0")
        return value
    return convert


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="beamline-ls bench",
                                     description="Measure acquisition throughput.")
    sub = parser.add_subparsers(dest="what", required=True)
    w = sub.add_parser("writer", help="can this disk record frames of SHAPE at RATE?",
                       description="Record paced frames through the real pipeline, then "
                                   "measure raw h5py speed on the same disk.")
    w.add_argument("--shape", type=parse_shape, default=(2048, 2048),
                   help="frame HEIGHTxWIDTH (default 2048x2048)")
    w.add_argument("--rate", type=_positive(float), default=100.0,
                   help="frames per second (default 100)")
    w.add_argument("--seconds", type=_positive(float), default=20.0,
                   help="duration of the paced run (default 20)")
    w.add_argument("--dir", type=Path, default=None,
                   help="directory on the disk to test (default: the system temp dir)")
    w.add_argument("--buffer-frames", type=_positive(int), default=None,
                   help="recorder buffer in frames, >= 2 (default: the recorder's default, "
                        "sized from free RAM)")
    w.add_argument("--cold-buffer", action="store_true",
                   help="do not prepare the recorder's buffer before the clock starts "
                        "(a first capture into freshly allocated memory)")
    w.add_argument("--settle", type=float, default=SETTLE_S,
                   help="idle seconds before each timed phase, so neither inherits "
                        f"memory the other just freed (default {SETTLE_S:g})")
    w.add_argument("--json", action="store_true", help="print one JSON object")
    w.add_argument("--keep", action="store_true", help="keep the files written")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``beamline-ls bench ...``; ``argv`` starts at "writer".

    Returns 0 after a measurement (whether or not the disk keeps up), 2 for bad
    arguments or an unusable directory, 1 if the benchmark itself failed.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.buffer_frames is not None and args.buffer_frames < 2:
        parser.print_usage(sys.stderr)
        print("beamline-ls bench: error: --buffer-frames must be >= 2", file=sys.stderr)
        return 2
    if not args.settle >= 0:
        parser.print_usage(sys.stderr)
        print("beamline-ls bench: error: --settle must be >= 0", file=sys.stderr)
        return 2
    directory = Path(args.dir) if args.dir is not None else Path(tempfile.gettempdir())
    problem = _check_directory(directory)
    if problem:
        parser.print_usage(sys.stderr)
        print(f"beamline-ls bench: error: {problem}", file=sys.stderr)
        return 2
    try:
        result = bench_writer(args.shape, args.rate, args.seconds, directory,
                              buffer_frames=args.buffer_frames, keep=args.keep,
                              warm_buffer=not args.cold_buffer, settle_s=args.settle)
    except (OSError, RuntimeError) as exc:
        print(f"beamline-ls bench: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print(format_summary(result))
    return 0


def _check_directory(directory: Path) -> str:
    if not directory.exists():
        return f"directory {directory} does not exist"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"directory {directory} is not writable"
    return ""


def bench_writer(shape: tuple[int, int], rate: float, seconds: float, directory: Path,
                 buffer_frames: int | None = None, keep: bool = False,
                 warm_buffer: bool = True, settle_s: float = SETTLE_S) -> dict[str, Any]:
    """Run both measurements in a fresh subdirectory of ``directory``; return figures.

    ``warm_buffer``: allocate the recorder's ring and fault its pages in before the
    clock starts (an armed camera); otherwise the capture starts with fresh memory.
    ``settle_s``: idle pause before each timed phase (see the module docstring).
    """
    n_frames = max(1, round(rate * seconds))
    frame_bytes = shape[0] * shape[1] * 2
    total_bytes = n_frames * frame_bytes
    free = shutil.disk_usage(directory).free
    if free < total_bytes * 1.1:
        raise RuntimeError(f"needs {total_bytes * 1.1 / 1e9:.2f} GB free in {directory}, "
                           f"has {free / 1e9:.2f} GB; shorten --seconds")
    pool = _frame_pool(shape, min(POOL_FRAMES, n_frames))
    workdir = Path(tempfile.mkdtemp(prefix="beamline-ls-bench-", dir=directory))
    try:
        recorder = Recorder(buffer_frames) if buffer_frames else Recorder()
        t_prep = time.perf_counter()
        if warm_buffer:
            recorder.prepare(shape, wait=True)
        prepare_s = time.perf_counter() - t_prep
        time.sleep(settle_s)
        pipeline = _run_pipeline(recorder, workdir / "pipeline.h5", pool, n_frames, rate)
        if not keep:
            (workdir / "pipeline.h5").unlink()  # halve the space the raw run needs
        time.sleep(settle_s)
        raw = _run_raw(workdir / "raw.h5", pool, n_frames, fletcher32=True)
        if not keep:
            (workdir / "raw.h5").unlink()
        time.sleep(settle_s)
        plain = _run_raw(workdir / "raw_plain.h5", pool, n_frames, fletcher32=False)
        raw["raw_plain_mb_per_s"] = plain["raw_mb_per_s"]
        raw["raw_plain_cpu_s"] = plain["raw_cpu_s"]
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    demand = rate * frame_bytes / MB
    # the recorder sizes its ring from free RAM unless told; report what it used
    buffer = getattr(getattr(recorder, "_ring", None), "capacity", recorder.buffer_frames)
    result: dict[str, Any] = {
        "shape": list(shape),
        "rate_fps": rate,
        "seconds": seconds,
        "frame_mb": frame_bytes / MB,
        "demand_mb_per_s": demand,
        **pipeline,
        **raw,
        "buffer_frames": buffer,
        "buffer_mb": buffer * frame_bytes / MB,
        "buffer_warm": warm_buffer,
        "buffer_prepare_s": prepare_s,
        "settle_s": settle_s,
        "directory": str(directory),
        "kept": str(workdir) if keep else "",
        "cpu_count": os.cpu_count(),
        "load_avg_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    result["ratio_to_raw"] = (result["mb_per_s"] / result["raw_mb_per_s"]
                              if result["raw_mb_per_s"] else 0.0)
    result["raw_over_demand"] = result["raw_mb_per_s"] / demand
    # paced at the demand, the pipeline cannot beat min(raw, demand)
    achievable = min(result["raw_mb_per_s"], demand)
    result["ratio_to_achievable"] = result["mb_per_s"] / achievable if achievable else 0.0
    result["producer_kept_pace"] = bool(result["producer_fps"] >= 0.98 * rate)
    # A short run can hide a slow writer inside a big buffer (no drops, but the file
    # closes long after the last frame), hence the sustained-rate condition as well.
    result["keeps_up"] = bool(result["frames_dropped"] == 0 and not result["error"]
                              and result["frames_written"] == n_frames
                              and result["producer_kept_pace"]
                              and result["mb_per_s"] >= KEEP_UP_FRACTION * demand
                              and result["raw_mb_per_s"] >= demand)
    return result


def _frame_pool(shape: tuple[int, int], count: int) -> list[np.ndarray]:
    """Noise-like 12-bit frames (incompressible, like camera data), made before timing."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 4096, size=shape, dtype=np.uint16) for _ in range(count)]


def _run_pipeline(recorder: Recorder, path: Path, pool: list[np.ndarray], n_frames: int,
                  rate: float) -> dict[str, Any]:
    """Feed ``n_frames`` paced frames to the recorder; measure until the file is closed."""
    shape = pool[0].shape
    recorder.start(path, shape, n_frames, attrs={"benchmark": "bench writer"})
    late = {"max_s": 0.0}

    def produce(t0: float) -> None:
        period = 1.0 / rate
        for k in range(n_frames):
            target = t0 + k * period  # absolute times: no drift from sleep overshoot
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            else:
                late["max_s"] = max(late["max_s"], -delay)
            recorder.submit(Frame(pool[k % len(pool)], k, time.time(), period))

    events = concurrence.enable(capacity=4 * n_frames + 16)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    producer = threading.Thread(target=produce, args=(t0,), name="bench-producer")
    producer.start()
    producer.join()
    t_produced = time.perf_counter()
    status = recorder.stop(timeout=3600.0)
    t_closed = time.perf_counter()
    cpu = time.process_time() - cpu0
    concurrence.disable()
    latency = _dispatch_latency(events, path.with_suffix(".concurrence.csv"))
    fsync_s = _fsync(path)
    elapsed = t_closed - t0
    frame_bytes = pool[0].nbytes
    return {
        "mb_per_s": status.frames_written * frame_bytes / MB / elapsed,
        "mb_per_s_incl_fsync": status.frames_written * frame_bytes / MB / (elapsed + fsync_s),
        "frames_expected": n_frames,
        "frames_written": status.frames_written,
        "frames_dropped": status.frames_dropped,
        "first_dropped_id": status.dropped_ids[0] if status.dropped_ids else None,
        "wall_s": elapsed,
        "drain_s": t_closed - t_produced,
        "fsync_s": fsync_s,
        "producer_max_late_s": late["max_s"],
        "producer_fps": (n_frames - 1) / (t_produced - t0) if n_frames > 1 else rate,
        "cpu_s": cpu,
        "latency_ms": latency,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
        "error": status.error,
    }


def _dispatch_latency(events: concurrence.ConcurrenceLog, csv_path: Path) -> dict[str, float]:
    """Per frame, from entering the ring to written (the concurrence log's figures)."""
    steps = concurrence.summarize(events.save(csv_path))
    csv_path.unlink()
    into = steps.get("ring push -> write start", {})
    write = steps.get("write start -> write end", {})
    return {"queue_p50": into.get("p50_ms", float("nan")),
            "queue_p99": into.get("p99_ms", float("nan")),
            "write_p50": write.get("p50_ms", float("nan")),
            "write_p99": write.get("p99_ms", float("nan")),
            "write_max": write.get("max_ms", float("nan"))}


def _run_raw(path: Path, pool: list[np.ndarray], n_frames: int,
             fletcher32: bool) -> dict[str, Any]:
    """Bare h5py: one chunk per frame (HDF5 computing its checksum when
    ``fletcher32``), no pacing, no metadata; flushed and closed."""
    shape = pool[0].shape
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    with h5py.File(path, "x", libver=LIBVER) as f:
        ds = f.create_dataset("data", shape=(n_frames, *shape), chunks=(1, *shape),
                              dtype="<u2", fletcher32=fletcher32)
        for k in range(n_frames):
            ds[k] = pool[k % len(pool)]
        f.flush()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    fsync_s = _fsync(path)
    total = n_frames * pool[0].nbytes / MB
    return {
        "raw_mb_per_s": total / elapsed,
        "raw_mb_per_s_incl_fsync": total / (elapsed + fsync_s),
        "raw_s": elapsed,
        "raw_fsync_s": fsync_s,
        "raw_cpu_s": cpu,
    }


def _fsync(path: Path) -> float:
    """Seconds to push what the OS still caches of ``path`` to the device.

    Neither writer fsyncs (the recorder relies on flushes), so short runs can be
    absorbed by the page cache; this figure shows how much was still pending.
    """
    t0 = time.perf_counter()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t0


def format_summary(r: dict[str, Any]) -> str:
    """Human-readable verdict and figures."""
    y, x = r["shape"]
    verdict = "KEEPS UP" if r["keeps_up"] else "DOES NOT KEEP UP"
    lines = [
        f"bench writer: {y}x{x} uint16 at {r['rate_fps']:g} fps for {r['seconds']:g} s "
        f"in {r['directory']}",
        f"  demand           {r['demand_mb_per_s']:9.1f} MB/s",
        f"  pipeline         {r['mb_per_s']:9.1f} MB/s sustained "
        f"({r['mb_per_s_incl_fsync']:.1f} incl. final fsync of {r['fsync_s']:.2f} s)",
        f"  raw h5py         {r['raw_mb_per_s']:9.1f} MB/s "
        f"({r['raw_mb_per_s_incl_fsync']:.1f} incl. final fsync of {r['raw_fsync_s']:.2f} s),"
        f" {r['raw_over_demand']:.2f}x demand, with the pipeline's checksums",
        f"  raw, no checksum {r['raw_plain_mb_per_s']:9.1f} MB/s (what the checksums cost)",
        f"  producer         {r['producer_fps']:9.1f} fps offered of {r['rate_fps']:g} "
        f"requested",
        f"  ratio            {r['ratio_to_raw']:.2f} of raw, {r['ratio_to_achievable']:.2f} of "
        f"min(raw, demand)",
        f"  frames           {r['frames_written']} written, {r['frames_dropped']} dropped "
        f"of {r['frames_expected']} expected (buffer {r['buffer_frames']} frames = "
        f"{r['buffer_mb']:.0f} MB, "
        + (f"prepared before the clock in {r['buffer_prepare_s']:.2f} s"
           if r["buffer_warm"] else "cold: allocated at start")
        + f"); drained {r['drain_s']:.2f} s after the last frame",
        f"  per frame        {r['latency_ms']['queue_p50']:.2f} ms in the buffer (p99 "
        f"{r['latency_ms']['queue_p99']:.2f}), {r['latency_ms']['write_p50']:.2f} ms to write "
        f"(p99 {r['latency_ms']['write_p99']:.2f}, max {r['latency_ms']['write_max']:.2f})",
        f"  memory           {r['max_rss_mb']:.0f} MB peak resident (buffer "
        f"{r['buffer_mb']:.0f} MB)",
        f"  cpu              {r['cpu_s']:.2f} s pipeline, {r['raw_cpu_s']:.2f} s raw "
        f"({r['cpu_count']} cores, load {r['load_avg_1min']:.2f}); "
        f"{r['settle_s']:g} s idle before each phase",
    ]
    if r["error"]:
        lines.append(f"  writer error     {r['error']}")
    lines.append(f"verdict: {verdict}")
    if not r["keeps_up"]:
        if not r["producer_kept_pace"]:
            lines.append(f"  this machine could not even offer frames at {r['rate_fps']:g} fps "
                         f"(reached {r['producer_fps']:.1f} fps: CPU or memory bound, e.g. "
                         "copying into the recorder's buffer while the writer runs)")
        if r["raw_mb_per_s"] < r["demand_mb_per_s"]:
            lines.append("  the disk itself is slower than the camera: use a faster local "
                         "disk, a lower rate, binning or a smaller ROI")
        elif r["producer_kept_pace"]:
            lines.append("  the raw disk is fast enough but the pipeline dropped frames or "
                         f"fell below {KEEP_UP_FRACTION:.0%} of the demand: the writer "
                         "thread or the CPU is the bottleneck")
    if r["kept"]:
        lines.append(f"files kept in {r['kept']}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
