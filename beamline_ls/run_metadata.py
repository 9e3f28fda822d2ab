"""``RE.md`` shared by every RunEngine on one data directory.

An IPython session, the queue server's worker and a script may run at once on the
same data directory. bluesky's ``PersistentDict`` caches its keys in each process and
rewrites the directory on exit, so two of them overwrite each other's ``scan_id`` (two
runs with the same number) and fail on files the other removed. Here every read and
write goes to one SQLite file (``<data dir>/state/runengine-md.sqlite``), and the
next ``scan_id`` is taken in one write transaction, so numbers stay unique across
processes.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"RE.md values must be JSON-like (they go into start documents); "
                    f"got {type(value).__name__}")


def _use_wal(db: sqlite3.Connection, timeout: float) -> None:
    """Switch ``db`` to write-ahead logging, waiting up to ``timeout`` s for others.

    Why a loop: SQLite answers a journal-mode change that meets another connection's
    lock with "database is locked" at once, without its busy timeout (seen in CI:
    three processes opening a new state database together, one failed at start).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class SharedRunMetadata(MutableMapping):
    """A ``MutableMapping`` for ``RE.md`` that reads and writes through to SQLite."""

    def __init__(self, path: str | Path, *, legacy_dir: str | Path | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection, used by the RE and user threads
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        _use_wal(self._db, timeout=30.0)
        self._db.execute("CREATE TABLE IF NOT EXISTS md (key TEXT PRIMARY KEY, value TEXT)")
        if legacy_dir is not None:
            self._import_legacy(Path(legacy_dir))

    def _import_legacy(self, directory: Path) -> None:
        """Carry ``scan_id`` and the rest over from bluesky's PersistentDict once."""
        if not directory.is_dir() or "__imported_persistentdict__" in self:
            return
        from bluesky.utils import PersistentDict

        old = dict(PersistentDict(str(directory)))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for key, value in old.items():
                    self._db.execute("INSERT OR IGNORE INTO md VALUES (?, ?)",
                                     (key, json.dumps(value, default=_jsonable)))
                self._db.execute("INSERT OR REPLACE INTO md VALUES (?, ?)",
                                 ("__imported_persistentdict__", json.dumps(str(directory))))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    # -- MutableMapping ------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM md WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(key)
        return json.loads(row[0])

    def __setitem__(self, key: str, value: Any) -> None:
        text = json.dumps(value, default=_jsonable)
        with self._lock, self._stored(f"RE.md[{key!r}]"):
            self._db.execute("INSERT OR REPLACE INTO md VALUES (?, ?)", (key, text))

    @contextlib.contextmanager
    def _stored(self, what: str) -> Iterator[None]:
        """A write that cannot be stored (disk full, read-only) fails as an OSError
        naming the store, before any run starts on a number nobody kept."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            raise OSError(f"cannot store {what} in {self.path}: {exc}") from exc

    def __delitem__(self, key: str) -> None:
        with self._lock:
            gone = self._db.execute("DELETE FROM md WHERE key = ?", (key,)).rowcount
        if not gone:
            raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            keys = [k for (k,) in self._db.execute("SELECT key FROM md ORDER BY key")]
        return iter(k for k in keys if not k.startswith("__"))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM md WHERE key = ?",
                                    (key,)).fetchone() is not None

    def __deepcopy__(self, memo: dict) -> dict[str, Any]:
        """A snapshot: the RunEngine deep-copies its metadata into each start document."""
        return {key: json.loads(json.dumps(value)) for key, value in self.items()}

    def __repr__(self) -> str:
        return f"SharedRunMetadata({str(self.path)!r}, {dict(self)!r})"

    # -- scan ids ------------------------------------------------------------------------
    def next_scan_id(self, md: Any = None) -> int:
        """The RunEngine's ``scan_id_source``: increments ``scan_id`` in one write
        transaction, so two processes never get the same number."""
        with self._lock, self._stored("the next scan_id"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT value FROM md WHERE key = 'scan_id'").fetchone()
                scan_id = (json.loads(row[0]) if row else 0) + 1
                self._db.execute("INSERT OR REPLACE INTO md VALUES ('scan_id', ?)",
                                 (json.dumps(scan_id),))
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return scan_id

    def close(self) -> None:
        with self._lock:
            self._db.close()
