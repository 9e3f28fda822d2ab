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
``<data dir>/state/open-runs``, held locked by the process while the run is open) and
removes the mark once the run is stored. When a session starts,
:func:`close_abandoned_runs` takes every mark whose lock it can take (its process has
ended): each stream's keys are brought to one length (the longest any key registered,
or less where a key's files hold fewer rows: what a key's files hold beyond that stays
in them), and the run gets a stop document with ``exit_status = "fail"`` and a reason
naming the process.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class RunMarks:
    """RunEngine subscriber: a mark file per open run, held locked while the run is
    open, removed once it is stored.

    The process that opens a run keeps an exclusive ``flock`` on the run's mark; the
    kernel lets go of it when that process ends, however it ends (kill -9, the OOM
    killer). A session that can take the lock therefore knows the run's process is
    gone, whatever PID namespace or container either runs in and whether or not the
    PID was reused; no guess is made from PIDs. Subscribe it after the session's
    ``check_stored``, so a run whose stop did not reach the catalog keeps its mark.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._held: dict[str, int] = {}  # uid -> descriptor holding the mark's lock

    def __call__(self, name: str, doc: dict) -> None:
        try:
            if name == "start":
                self._open(doc)
            elif name == "stop":
                self._close(doc["run_start"])
        except OSError as exc:  # a full or read-only disk must not abort the scan
            log.warning("cannot mark run %s %s in %s (%s): were this process to die in "
                        "it, the next session would not close it", doc.get("uid") or
                        doc.get("run_start"), "open" if name == "start" else "closed",
                        self.directory, exc)

    def _open(self, doc: dict) -> None:
        fd = os.open(self.directory / f"{doc['uid']}.json",
                     os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, json.dumps({"uid": doc["uid"], "opened": doc["time"],
                                     "host": socket.gethostname(),
                                     "pid": os.getpid()}).encode())
            os.fsync(fd)
        except OSError:
            os.close(fd)
            raise
        self._held[doc["uid"]] = fd

    def note_unstored(self, uid: str, why: str) -> None:
        """The run ended but its end did not reach the catalog (``why``): kept in its
        mark, so the session that closes it later records that cause, not a process
        that died. (A disk too full for this too: the mark stays as it was.)"""
        fd = self._held.get(uid)
        if fd is None:
            return
        try:
            info = json.loads(os.pread(fd, 65536, 0) or b"{}")
            data = json.dumps({**info, "unstored": why[:2000]}).encode()
            # written over the old, then cut to length: the new text holds the old, so
            # a write a full disk refuses, or a crash between the two, leaves a mark
            # that still says who opened the run
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except (OSError, ValueError) as exc:
            log.warning("cannot note in the mark of run %s why it was not stored: %s",
                        uid, exc)

    def close_unstored(self, catalog: Any, runs_dir: Path | None = None) -> list[str]:
        """Close this session's runs whose end could not be stored (`note_unstored`),
        now that storing works again: as failed, saying why. Left to the next session,
        they showed in the catalog as running for as long as this one lasted. A run
        that still cannot be closed keeps its mark. Returns the uids closed."""
        closed = []
        for uid, fd in list(self._held.items()):
            try:
                why = json.loads(os.pread(fd, 65536, 0) or b"{}").get("unstored")
            except (OSError, ValueError):
                continue
            if not why:
                continue  # a run still open, or one stored after all
            try:
                if _close_if_open(catalog, uid, f"this session, process {os.getpid()}",
                                  runs_dir, why):
                    closed.append(uid)
            except Exception as exc:  # noqa: BLE001 - tried again at the next run's end
                log.info("run %s, whose end could not be stored, cannot be closed yet: "
                         "%s", uid, exc)
                continue
            self._close(uid)
        return closed

    def _close(self, uid: str) -> None:
        fd = self._held.pop(uid, None)
        try:
            (self.directory / f"{uid}.json").unlink(missing_ok=True)
        finally:
            if fd is not None:
                os.close(fd)  # releases the lock


def _describe(info: dict) -> str:
    """Who opened a run, from its mark (which a power cut can leave empty)."""
    if "pid" not in info:
        return "a process that has ended (its mark is empty)"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info.get("opened", 0))))
    return f"process {info['pid']} on {info.get('host', '?')}, which opened it at {when}"


def _rows_in_file(node: Any, data_source: Any) -> int | None:
    """How many rows of ``node``'s shape its HDF5 files hold (a capture that rolled
    over lists every file, in order), or None when one cannot be read (then the key
    keeps what it registered)."""
    import h5py
    from tiled.utils import path_from_uri

    dataset = (data_source.parameters or {}).get("dataset")
    assets = sorted((a for a in data_source.assets if a.parameter == "data_uris"),
                    key=lambda a: a.num or 0) or list(data_source.assets[:1])
    if data_source.mimetype != "application/x-hdf5" or not dataset or not assets:
        return None
    per_row = math.prod(node.shape[1:])
    size = 0
    for asset in assets:
        try:
            with h5py.File(path_from_uri(asset.data_uri), "r", swmr=True,
                           locking=False) as f:
                size += f[dataset].size
        except (OSError, KeyError) as exc:
            log.warning("%s: cannot read %s of %s (%s)", node.uri, dataset,
                        asset.data_uri, exc)
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
    # what the files hold decides: less than registered (a key cut short), or more
    # (the IOC went on writing after the process that collected died: those rows are
    # on disk, whole, and the run had them not)
    target = None
    for key, (node, source) in nodes.items():
        held = _rows_in_file(node, source)
        rows = before[key] if held is None else max(held, 0)
        target = rows if target is None else min(target, rows)
    if all(n == target for n in before.values()):
        return target, before
    longest = max(before, key=before.get)
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


def _event_rows(run: Any, name: str, stream: Any) -> int | None:
    """Rows of a stream of events (None when it cannot be read: not counted)."""
    try:
        return len(stream.read()["time"])
    except Exception as exc:  # noqa: BLE001 - the stop still goes in, without its count
        log.warning("run %s stream %s: events not counted: %s",
                    run.metadata["start"]["uid"], name, exc)
        return None


def close_run(run: Any, reason: str, replaces: dict | None = None) -> tuple[str, dict]:
    """Even up a stream-ragged run and add a failed stop document; returns what was
    done, in one line, and the stop document. ``replaces``: the stop document it
    stands in for (its uid and time are kept)."""
    kept = []
    num_events = {}
    for name, stream in run.items():
        try:
            rows, before = _even_up(stream)
        except Exception as exc:  # noqa: BLE001 - the stop still goes in, saying so
            log.warning("run %s stream %s: keys not evened up: %s", run.metadata["start"]
                        ["uid"], name, exc)
            continue
        if rows is None:  # a stream of events (the summary): its table's rows
            rows = _event_rows(run, name, stream)
        if rows is not None:
            num_events[name] = rows
        if any(n != rows for n in before.values()):
            kept.append(f"{name} keeps {rows} rows of each key, as its files hold them "
                        "(had " + ", ".join(f"{k} {n}" for k, n in before.items()) + ")")
    start = run.metadata["start"]
    stop = {"uid": str(uuid.uuid4()), "time": time.time(), "run_start": start["uid"],
            "exit_status": "fail", "reason": reason, "num_events": num_events}
    if replaces is not None:
        stop.update(uid=replaces.get("uid", stop["uid"]), time=replaces.get("time",
                                                                            stop["time"]))
    run.update_metadata(metadata={"stop": stop}, drop_revision=True)
    return "; ".join(kept) or "every stream's keys were of one length", stop


def close_abandoned_runs(catalog: Any, marks: RunMarks,
                         runs_dir: Path | None = None) -> list[str]:
    """Close every run whose mark's lock can be taken (the process that opened it has
    ended). Returns the uids closed. Marks held by live processes are left alone, and
    so are marks written on another host (a lock on a network file system is not
    trusted to say that a process there has ended). ``runs_dir``: where the live run
    files are; each closed run's file gets the same stop document."""
    closed = []
    here = socket.gethostname()
    paths = sorted(marks.directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for path in paths:
        uid = path.stem
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except OSError:
            continue  # closed meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its process lives
            try:
                info = json.loads(os.read(fd, 65536) or b"{}")
            except ValueError:
                info = {}
            if info.get("host", here) != here:
                continue
            if _close_if_open(catalog, uid, _describe(info), runs_dir,
                              info.get("unstored")):
                closed.append(uid)
            path.unlink(missing_ok=True)
        except Exception as exc:  # noqa: BLE001 - keep the mark, try next session
            log.error("run %s, left open by a process that has ended, could not be "
                      "closed: %s", uid, exc)
        finally:
            os.close(fd)
    return closed


def _close_if_open(catalog: Any, uid: str, who: str, runs_dir: Path | None = None,
                   unstored: str | None = None) -> bool:
    """Close run ``uid`` as failed if the catalog has it without a stop, and its run
    file under ``runs_dir`` if that says it is running; True if the run was closed.
    ``unstored``: why its own session could not store its end, when it ended so."""
    try:
        run = catalog[uid]
    except KeyError:
        log.warning("run %s was opened by %s; its start never reached the catalog, so "
                    "there is nothing to close", uid, who)
        return False
    stored_stop = run.metadata.get("stop")
    # a stop that reached the catalog closes the run, unless its session found rows
    # missing after it (a catalog write failed mid-run): then it said "success" of a
    # run the catalog does not hold whole, and is replaced
    amend = bool(unstored) and stored_stop is not None and \
        stored_stop.get("exit_status") == "success"
    if stored_stop is not None and not amend:
        return False
    if amend:
        reason = (f"the run ended, but not all of it reached the catalog ({unstored}; "
                  f"{who}); marked failed by process {os.getpid()}")
    elif unstored:
        reason = (f"the run ended, but its end could not be stored in the catalog "
                  f"({unstored}; {who}); closed by process {os.getpid()}")
    else:
        reason = (f"the RunEngine process ended without closing the run ({who}); closed "
                  f"by process {os.getpid()}")
    done, stop = close_run(run, reason, stored_stop if amend else None)
    log.warning("run %s (scan %s) %s: %s as failed; %s", uid,
                run.metadata["start"].get("scan_id"),
                "was not stored whole" if amend else f"was left open by {who}",
                "marked" if amend else "closed", done)
    if runs_dir is not None:
        _close_run_file(runs_dir, run.metadata["start"], stop, catalog[uid])
    return True


def _close_run_file(runs_dir: Path, start: dict, stop: dict, run: Any = None) -> None:
    """The run file's side of `_close_if_open`: written again from the closed catalog
    run (into a new file that then replaces it), so its rows and stop are the
    catalog's; else, if that fails, just closed. (A run file left as its dead process
    had it kept 600 frames of a run the catalog holds with 629.) A run whose session
    wrote none, or a file damaged by the crash, is said and left."""
    from beamline_ls.runfile.runfile import close_left_open
    from beamline_ls.runfile.writer import default_run_path

    path = default_run_path(runs_dir, start)
    if not path.is_file():
        return
    if run is not None:
        from beamline_ls.runfile.export import export_run

        again = path.with_name(f".{path.stem}.repair.h5")
        try:
            export_run(run, again, overwrite=True)
            os.replace(again, path)
            log.warning("run file %s written again from the catalog (closed as failed)",
                        path)
            return
        except Exception as exc:  # noqa: BLE001 - the plain close below still holds
            again.unlink(missing_ok=True)
            log.error("run file %s could not be written again from the catalog (%s); "
                      "closed as it was", path, exc)
    try:
        if close_left_open(path, stop):
            log.warning("run file %s closed as failed too", path)
    except OSError as exc:
        log.error("run file %s of the run left open could not be closed: %s", path, exc)
