"""Close the catalog runs of a RunEngine process that died in the middle of them.

A run's documents reach the catalog as they are emitted (:func:`session.make_session`),
so a RunEngine process killed mid-run (kill -9, the OOM killer, a power cut, a queue
worker's environment destroyed) leaves its run in the catalog with every frame it had
collected, but
- with no stop document: it looks as if it were still running, nothing says it failed,
  and its frame files never move to their verified copies (relocation waits for the
  stop);
- with the keys of a stream at different lengths: each data key's rows are registered
  by a request of its own, and the process can die between two of them. Then
  bluesky-tiled-plugins' ``run["primary"].read()`` refuses the whole stream
  ("different left-most dimensions").

Every session marks the runs it opens (:class:`RunMarks`: one small file per run under
``<data dir>/state/open-runs``, naming its host, boot, process and that process's start
time) and removes the mark once the run is stored. When a session starts,
:func:`close_abandoned_runs` takes every mark whose process is gone: each stream's keys
are brought to one length (the longest any key registered, or less where a key's file
holds fewer rows: what a key's file holds beyond that stays in the file), and the run
gets a stop document with ``exit_status = "fail"`` and a reason naming the process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The process's start time since boot (clock ticks, /proc), or None when no
    process has that PID. With the boot id it tells a reused PID from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name may hold spaces


@dataclass(frozen=True)
class Mark:
    """Who opened a run: enough to tell, later, whether that process still lives."""

    uid: str
    host: str
    boot_id: str
    pid: int
    process_start: str | None
    opened: float
    path: Path

    @property
    def process_gone(self) -> bool:
        """True when the process that opened the run has ended (on this host)."""
        if self.boot_id != _boot_id():
            return True  # the machine restarted since
        return _process_start(self.pid) != self.process_start

    def describe(self) -> str:
        return (f"process {self.pid} on {self.host}, which opened it at "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.opened))}")


class RunMarks:
    """RunEngine subscriber: a mark file per open run, removed once the run is stored.
    Subscribe it after the session's ``check_stored``, so a run whose stop did not
    reach the catalog keeps its mark and is closed by the next session."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._me = {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": os.getpid(),
                    "process_start": _process_start(os.getpid())}

    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start":
                path = self.directory / f"{doc['uid']}.json"
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps({"uid": doc["uid"], "opened": doc["time"],
                                           **self._me}))
                os.replace(tmp, path)
            elif name == "stop":
                (self.directory / f"{doc['run_start']}.json").unlink(missing_ok=True)
        except OSError as exc:  # a full or read-only disk must not abort the scan
            log.warning("cannot mark run %s %s in %s (%s): were this process to die in "
                        "it, the next session would not close it", doc.get("uid") or
                        doc.get("run_start"), "open" if name == "start" else "closed",
                        self.directory, exc)

    def marks(self) -> list[Mark]:
        """Every run marked open, oldest first; unreadable marks are skipped (logged)."""
        out = []
        for path in sorted(self.directory.glob("*.json")):
            try:
                data = json.loads(path.read_text())
                out.append(Mark(uid=data["uid"], host=data["host"], boot_id=data["boot_id"],
                                pid=int(data["pid"]), process_start=data["process_start"],
                                opened=float(data["opened"]), path=path))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("open-run mark %s cannot be read (%s); left alone", path, exc)
        return sorted(out, key=lambda m: m.opened)


def _rows_in_file(node: Any, data_source: Any) -> int | None:
    """How many rows of ``node``'s shape its HDF5 dataset holds, or None when the file
    cannot be read (then the key keeps what it registered)."""
    import h5py
    from tiled.utils import path_from_uri

    dataset = (data_source.parameters or {}).get("dataset")
    if data_source.mimetype != "application/x-hdf5" or not dataset or \
            not data_source.assets:
        return None
    per_row = math.prod(node.shape[1:])
    try:
        with h5py.File(path_from_uri(data_source.assets[0].data_uri), "r", swmr=True,
                       locking=False) as f:
            size = f[dataset].size
    except (OSError, KeyError) as exc:
        log.warning("%s: cannot read %s (%s)", node.uri, dataset, exc)
        return None
    return size // per_row if per_row else None


def _cut_chunks(chunks: list[int], rows: int) -> list[int]:
    """Leading-dimension chunks covering ``rows`` rows, following ``chunks`` as far as
    they go and continuing with chunks of one row."""
    out, total = [], 0
    for c in chunks:
        if total >= rows:
            break
        out.append(min(c, rows - total))
        total += out[-1]
    out.extend([1] * (rows - total))
    return out


def _even_up(stream: Any) -> tuple[int | None, dict[str, int]]:
    """Bring the external arrays of a stream to one length; return it (None for a
    stream with none) and each key's length before."""
    from beamline_ls.tiled_compat import replace_data_source

    nodes = {}
    for key, node in stream.items():
        sources = node.data_sources() or []
        if len(sources) == 1 and sources[0].management == "external" and \
                sources[0].structure_family == "array" and getattr(node, "shape", None):
            nodes[key] = (node, sources[0])
    before = {key: int(node.shape[0]) for key, (node, _) in nodes.items()}
    if not nodes:
        return None, before
    if len(set(before.values())) == 1:
        return next(iter(before.values())), before
    longest = max(before, key=before.get)
    target = before[longest]
    for key, (node, source) in nodes.items():
        held = _rows_in_file(node, source)
        target = min(target, before[key] if held is None else max(held, 0))
    reference = nodes[longest][1].structure["chunks"][0]
    for key, (node, source) in nodes.items():
        if before[key] == target:
            continue
        structure = dict(source.structure)
        structure["shape"] = [target, *structure["shape"][1:]]
        structure["chunks"] = [_cut_chunks(reference, target), *structure["chunks"][1:]]
        source.structure = structure
        replace_data_source(node, source)
    return target, before


def close_run(run: Any, reason: str) -> str:
    """Even up a stream-ragged run and add a failed stop document; returns what was
    done, in one line."""
    kept = []
    num_events = {}
    for name, stream in run.items():
        try:
            rows, before = _even_up(stream)
        except Exception as exc:  # noqa: BLE001 - the stop still goes in, saying so
            log.warning("run %s stream %s: keys not evened up: %s", run.metadata["start"]
                        ["uid"], name, exc)
            continue
        if rows is not None:
            num_events[name] = rows  # of the streams of registered frames
        if len(set(before.values())) > 1:
            kept.append(f"{name} keeps {rows} rows of each key (had "
                        + ", ".join(f"{k} {n}" for k, n in before.items()) + ")")
    start = run.metadata["start"]
    stop = {"uid": str(uuid.uuid4()), "time": time.time(), "run_start": start["uid"],
            "exit_status": "fail", "reason": reason, "num_events": num_events}
    run.update_metadata(metadata={"stop": stop}, drop_revision=True)
    return "; ".join(kept) or "every stream's keys were of one length"


def close_abandoned_runs(catalog: Any, marks: RunMarks) -> list[str]:
    """Close every run marked open by a process that has ended on this host. Returns
    the uids closed. Marks of live processes and of other hosts are left alone."""
    closed = []
    here = socket.gethostname()
    for mark in marks.marks():
        if mark.host != here or not mark.process_gone:
            continue
        try:
            run = catalog[mark.uid]
        except KeyError:
            log.warning("run %s was opened by %s, which ended; its start never reached "
                        "the catalog, so there is nothing to close", mark.uid,
                        mark.describe())
            mark.path.unlink(missing_ok=True)
            continue
        if run.metadata.get("stop") is None:
            reason = (f"the RunEngine process ended without closing the run "
                      f"({mark.describe()}); closed by process {os.getpid()}")
            try:
                done = close_run(run, reason)
            except Exception as exc:  # noqa: BLE001 - keep the mark, try next session
                log.error("run %s, left open by %s, could not be closed: %s", mark.uid,
                          mark.describe(), exc)
                continue
            log.warning("run %s (scan %s) was left open by %s: closed as failed; %s",
                        mark.uid, run.metadata["start"].get("scan_id"), mark.describe(),
                        done)
            closed.append(mark.uid)
        mark.path.unlink(missing_ok=True)
    return closed
