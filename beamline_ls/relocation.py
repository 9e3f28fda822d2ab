"""Point the catalog at verified copies of frame files.

The camera IOC writes frames to fast local staging and copies each closed file to a
slow destination (a network share), recording every verified copy in the copy ledger
(:mod:`beamline_ls.pipeline.copy_ledger`). Runs in the catalog were registered with the
staging path; once a copy is verified, :func:`point_catalog_at_copies` rewrites the
catalog's asset row for that file, so every data key of every run that used the file
loads from the copy (and staging can be cleared).

Why SQL: tiled 0.2's API can add assets to a data source but not replace one, and an
asset row is shared by all data sources that read the same file, so one ``UPDATE`` of
``assets.data_uri`` moves them all at once. This works for the embedded catalog (the
default); a tiled server's operator runs the same function on the server's database.

:class:`CopyWatcher` does this in the background of a RunEngine session, so a copy that
verifies minutes (or retries) after its run ended is picked up without anyone asking.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from beamline_ls.config import Settings
from beamline_ls.log import success
from beamline_ls.pipeline.copy_ledger import CopyLedger, CopyRecord

log = logging.getLogger(__name__)


def file_uris(path: str | Path) -> tuple[str, ...]:
    """The spellings of a local file's URI that catalogs hold (with and without host)."""
    posix = Path(path).as_posix()
    return (f"file://localhost{posix}", f"file://{posix}")


@dataclass
class RelocationReport:
    """What one pass changed and what it could not."""

    moved: list[tuple[str, str]] = field(default_factory=list)  # (staging, destination)
    failed_copies: list[CopyRecord] = field(default_factory=list)
    missing_copies: list[CopyRecord] = field(default_factory=list)
    waiting: list[CopyRecord] = field(default_factory=list)  # their run is still open


# A run's catalog writer updates the data sources of its files until it writes the
# stop document (last), so an asset moves only once every run using it has stopped.
_OPEN_RUNS_USING_ASSET = """
SELECT COUNT(*) FROM assets AS a
JOIN data_source_asset_association AS link ON link.asset_id = a.id
JOIN data_sources AS ds ON ds.id = link.data_source_id
JOIN nodes_closure AS c ON c.descendant = ds.node_id
JOIN nodes AS n ON n.id = c.ancestor
WHERE a.data_uri = ? AND json_extract(n.metadata, '$.start') IS NOT NULL
  AND json_extract(n.metadata, '$.stop') IS NULL
"""


def _used_by_an_open_run(conn: sqlite3.Connection, uri: str) -> bool:
    return conn.execute(_OPEN_RUNS_USING_ASSET, (uri,)).fetchone()[0] > 0


def point_catalog_at_copies(settings: Settings, timeout_s: float = 30.0) -> RelocationReport:
    """Rewrite catalog assets from staging paths to their verified copies.

    Idempotent: a file already pointing at its copy is left alone; a file of a run
    whose stop document is not yet in the catalog waits (``waiting``). A verified copy
    of a file the catalog still reads from staging, whose copy is gone or has another
    size, is not used (``missing_copies``); failed copies are reported in
    ``failed_copies`` and the catalog keeps pointing at staging for them.
    """
    report = RelocationReport()
    records = CopyLedger.in_directory(settings.frames_dir).latest()
    db = settings.catalog_dir / "catalog.db"
    if not records or not db.exists():
        return report
    report.failed_copies = [rec for rec in records.values() if rec.failed]
    with sqlite3.connect(db, timeout=timeout_s) as conn:
        # Only files the catalog still reads from staging need work: a pass stays cheap
        # (no look at the share) however long the ledger grows.
        staged = {uri for (uri,) in conn.execute(
            "SELECT data_uri FROM assets WHERE data_uri LIKE 'file:%'")}
        for rec in records.values():
            old_uri = next((u for u in file_uris(rec.staging) if u in staged), None)
            if not rec.verified or old_uri is None:
                continue
            try:
                size = Path(rec.destination).stat().st_size
            except OSError:
                size = -1
            if size != rec.size:
                report.missing_copies.append(rec)
            elif _used_by_an_open_run(conn, old_uri):
                report.waiting.append(rec)
            else:
                conn.execute(
                    "UPDATE assets SET data_uri = ?, hash_type = 'sha256', hash_content = ?,"
                    " size = ?, time_updated = CURRENT_TIMESTAMP WHERE data_uri = ?",
                    (file_uris(rec.destination)[0], rec.sha256, rec.size, old_uri),
                )
                report.moved.append((rec.staging, rec.destination))
    conn.close()
    return report


class CopyWatcher:
    """Background thread: apply new ledger records to the catalog as they appear.

    Checks every ``interval_s`` whether the ledger or the catalog changed (a record can
    arrive before the catalog writer has registered its run's assets), and logs each
    move (SUCCESS) and each failed copy (ERROR) once. ``allow_root(directory)`` is
    called for every destination root before assets move there, so the session's open
    catalog may read from it (:func:`beamline_ls.catalog.allow_reading_from`).
    """

    def __init__(self, settings: Settings, interval_s: float = 1.0,
                 allow_root: Callable[[str], None] | None = None):
        self.settings = settings
        self.interval_s = interval_s
        self.allow_root = allow_root
        self._allowed: set[str] = set()
        self._ledger = CopyLedger.in_directory(settings.frames_dir).path
        self._db = settings.catalog_dir / "catalog.db"
        self._seen: tuple = ()
        self._reported: set[tuple[str, float]] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="copy-watcher", daemon=True)
        self._thread.start()

    def _stamp(self) -> tuple:
        out = []
        for p in (self._ledger, self._db, self._db.with_name(self._db.name + "-wal")):
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def apply_now(self) -> RelocationReport:
        """One pass, now (also what the thread runs when something changed)."""
        with self._lock:
            if self.allow_root is not None:
                ledger = CopyLedger.in_directory(self.settings.frames_dir)
                for root in ledger.destination_roots():
                    if root not in self._allowed:
                        self.allow_root(root)
                        self._allowed.add(root)
            report = point_catalog_at_copies(self.settings)
            for staging, destination in report.moved:
                success(log, "catalog now reads %s from its verified copy %s",
                        Path(staging).name, destination)
            for rec in report.failed_copies + report.missing_copies:
                key = (rec.staging, rec.time)
                if key not in self._reported:
                    self._reported.add(key)
                    why = rec.error if not rec.verified else "the copy is missing or changed"
                    log.error("no verified copy of %s at %s (%s); the catalog keeps reading "
                              "the staging file", rec.staging, rec.destination, why)
            return report

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            stamp = self._stamp()
            if stamp == self._seen or stamp[0] is None or stamp[1] is None:
                continue
            self._seen = stamp
            try:
                self.apply_now()
            except (sqlite3.Error, OSError) as exc:  # busy database: try next change
                self._seen = ()
                log.warning("could not update the catalog from the copy ledger: %s", exc)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5.0)
