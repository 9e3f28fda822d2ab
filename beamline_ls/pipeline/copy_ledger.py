"""The copy ledger: where each staged data file ended up, readable by other processes.

The camera IOC copies closed frame files from fast staging to a slow destination (see
:mod:`beamline_ls.pipeline.mirror`). The catalog lives elsewhere (the RunEngine
session, or a data user's process), so the outcome of every copy is appended, one JSON
object per line, to ``<frames dir>/mirror-ledger.jsonl``. Appending whole lines is
atomic enough for one writer; readers skip a torn last line and read it next time.

Fields: ``staging``, ``destination``, ``destination_root``, ``state``, ``sha256``,
``size``, ``attempts``, ``error``, ``time``, ``retryable`` (a failure whose cause can
pass: the copy is tried again). ``state`` is ``queued`` when the file is
handed to the copier (so an IOC that stops before copying it resumes it when it starts
again), then ``verified`` or ``failed``; the newest record of a file is its state.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

LEDGER_NAME = "mirror-ledger.jsonl"
QUEUED = "queued"


@dataclass(frozen=True)
class CopyRecord:
    """The final outcome of copying one staged file."""

    staging: str
    destination: str
    destination_root: str
    state: str
    sha256: str = ""
    size: int = 0
    attempts: int = 0
    error: str = ""
    time: float = 0.0
    retryable: bool = False

    @property
    def verified(self) -> bool:
        return self.state == "verified"

    @property
    def failed(self) -> bool:
        return self.state == "failed"


class CopyLedger:
    """Append-only JSONL file of :class:`CopyRecord` (one writer, any readers)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def in_directory(cls, frames_dir: str | Path) -> CopyLedger:
        return cls(Path(frames_dir) / LEDGER_NAME)

    def append(self, record: CopyRecord) -> None:
        """Add a record and fsync it: the catalog relies on a record surviving a crash."""
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # never through a symlink planted at the name: it could lead anywhere
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                         | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())

    def records(self) -> list[CopyRecord]:
        """Every complete record, oldest first (missing file: none yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        out = []
        for n, line in enumerate(text.splitlines(keepends=True), 1):
            if not line.endswith("\n"):
                break  # a line still being written
            try:
                out.append(CopyRecord(**json.loads(line)))
            except (ValueError, TypeError) as exc:
                log.warning("%s line %d is not a copy record (%s); skipped", self.path, n, exc)
        return out

    def latest(self) -> dict[str, CopyRecord]:
        """The newest record per staging file (a failed copy may be retried later)."""
        return {r.staging: r for r in self.records()}

    def destination_roots(self) -> list[str]:
        """Every destination root that holds a verified copy (for readable storage)."""
        roots: dict[str, None] = {}
        for r in self.records():
            if r.verified:
                roots[r.destination_root] = None
        return list(roots)
