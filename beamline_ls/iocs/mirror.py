"""Copies of closed frame files to a slow destination, as ``HDF1:Mirror...`` PVs.

The camera writes to fast local staging (the IOC's data root). When ``HDF1:MirrorPath``
names a destination root (a network share), each file is queued for copying the
moment its capture closes: copied on a background thread with retries, verified by
sha256, never overwriting (:class:`beamline_ls.pipeline.mirror.Mirror`). Acquisition
never waits for the share. Every outcome is appended to the copy ledger, which the
RunEngine session reads to point the catalog at the verified copy
(:mod:`beamline_ls.relocation`), and shown here:

- ``MirrorQueued_RBV``: files waiting or being copied
- ``MirrorVerified_RBV`` / ``MirrorFailed_RBV``: copies finished either way (a file
  that failed for a cause that can pass, such as a share that is down, is tried again
  once a copy to the share succeeds, every minute meanwhile, and when the IOC starts
  again; copied then, it counts in both)
- ``MirrorMessage_RBV``: the latest outcome, ``MirrorLastCopy_RBV``: latest copy path

The IOC runs with rights a remote client should not borrow, so ``MirrorPath`` may
only name one of the deployment's ``mirror_roots`` (or a directory under one); the
copier never follows a symlink out of it. A file is recorded ``queued`` in the ledger
before it is handed to the copier, so copies an IOC did not finish before it stopped
are resumed when it starts again. One copier thread runs per destination with work.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from caproto.server import pvproperty

from beamline_ls.iocs.alarms import RecordAlarms
from beamline_ls.iocs.text import text_pv
from beamline_ls.pipeline.copy_ledger import QUEUED, CopyLedger, CopyRecord
from beamline_ls.pipeline.mirror import FAILED, VERIFIED, FileStatus, Mirror

log = logging.getLogger(__name__)


def _string(name: str, read_only: bool = False, doc: str = ""):
    return text_pv(name, read_only=read_only, max_length=1024, doc=doc)


class MirrorGroup(RecordAlarms):
    """Copy closed files from ``staging_root`` to ``MirrorPath`` (empty: no copies)."""

    mirror_path = _string("MirrorPath", doc="absolute destination root; empty: no copies")
    retries = pvproperty(name="MirrorRetries", value=5, lower_ctrl_limit=0,
                         upper_ctrl_limit=100, doc="attempts after the first")
    backoff = pvproperty(name="MirrorBackoff", value=1.0, units="s", precision=3,
                         lower_ctrl_limit=0.0, upper_ctrl_limit=600.0,
                         doc="delay before the first retry (doubles, at most 60 s)")
    queued = pvproperty(name="MirrorQueued_RBV", value=0, read_only=True)
    verified = pvproperty(name="MirrorVerified_RBV", value=0, read_only=True)
    failed = pvproperty(name="MirrorFailed_RBV", value=0, read_only=True)
    message = _string("MirrorMessage_RBV", read_only=True)
    last_copy = _string("MirrorLastCopy_RBV", read_only=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._mirrors: dict[str, Mirror] = {}
        self._lock = threading.Lock()
        self._outcomes: collections.deque[FileStatus] = collections.deque()
        self.configure(Path.cwd())

    def configure(self, staging_root: Path, default_path: str | Path | None = None,
                  allowed_roots: Sequence[str | Path] = ()) -> None:
        """Set the staging directory (the camera's data root), the initial MirrorPath
        (the deployment's ``mirror_dir``) and the roots MirrorPath may name; called by
        the camera group that owns this."""
        self.staging_root = Path(staging_root).resolve()
        self.ledger = CopyLedger.in_directory(self.staging_root)
        self._default_path = str(default_path or "")
        self.allowed_roots = [Path(r).resolve() for r in allowed_roots]

    def check_destination(self, value: str) -> Path:
        """The resolved destination root for a MirrorPath value, or ``ValueError``
        saying why it is refused (touches the filesystem: call off the event loop)."""
        path = Path(value)
        if not path.is_absolute():
            raise ValueError(f"MirrorPath must be an absolute directory (got {value!r})")
        resolved = path.resolve()
        if resolved == self.staging_root or self.staging_root in resolved.parents \
                or resolved in self.staging_root.parents:
            raise ValueError(f"MirrorPath {value} overlaps the staging directory "
                             f"{self.staging_root}")
        if not self.allowed_roots:
            raise ValueError("this IOC has no mirror roots: list the allowed destinations "
                             "in mirror_roots in the deployment's TOML")
        if not any(resolved == r or r in resolved.parents for r in self.allowed_roots):
            where = f" (it resolves to {resolved})" if str(resolved) != value else ""
            roots = ", ".join(str(r) for r in self.allowed_roots)
            raise ValueError(f"MirrorPath {value}{where} is not under a mirror root of this "
                             f"IOC ({roots}); add it to mirror_roots in the deployment's TOML")
        return resolved

    def _mirror_for(self, root: str) -> Mirror:
        """The copier of one destination; idle copiers of other destinations end, so
        threads stay bounded however often MirrorPath changes."""
        with self._lock:  # the recorder's thread and the startup resume both submit
            mirror = self._mirrors.get(root)
            if mirror is None:
                for other, idle in list(self._mirrors.items()):
                    if idle.in_flight == 0 and idle.waiting_to_retry == 0:
                        idle.close(0)
                        del self._mirrors[other]
                mirror = Mirror(self.staging_root, root,
                                on_finished=functools.partial(self._record, root))
                self._mirrors[root] = mirror
        mirror.retries = int(self.retries.value)
        mirror.backoff_s = float(self.backoff.value)
        return mirror

    def submit(self, path: Path) -> None:
        """Queue a closed file for copying (returns at once; no-op without MirrorPath)."""
        root = self.mirror_path.value.strip()
        if root:
            self._queue(root, Path(path))

    def _queue(self, root: str, path: Path) -> None:
        """Record the file as queued in the ledger, then hand it to the copier."""
        try:
            mirror = self._mirror_for(root)
            destination = mirror.destination_for(path)
            self.ledger.append(CopyRecord(staging=str(Path(path).resolve()),
                                          destination=str(destination),
                                          destination_root=root, state=QUEUED,
                                          time=time.time()))
            mirror.submit(path)
        except (ValueError, RuntimeError, OSError) as exc:  # not a staged file; ledger
            log.error("cannot copy %s to %s: %s", path, root, exc)
            self._record(root, FileStatus(staging=str(path), destination=root, state=FAILED,
                                          last_error=str(exc), finished_at=time.time()))

    def resume_queued(self) -> int:
        """Hand the copier every file the ledger still lists as queued (a previous run
        of the IOC stopped before copying it) or as failed for a cause that can pass (the
        share was down); returns how many were resumed. A file
        whose staging copy is gone, or whose destination is no longer allowed, is
        recorded as failed, with why."""
        resumed = 0
        for rec in self.ledger.latest().values():
            if rec.state != QUEUED and not (rec.failed and rec.retryable):
                continue
            why = ""
            if not Path(rec.staging).is_file():
                why = "the staging file is gone"
            else:
                try:
                    self.check_destination(rec.destination_root)
                except ValueError as exc:
                    why = str(exc)
            if why:
                log.error("not resuming the copy of %s: %s", rec.staging, why)
                self._record(rec.destination_root, FileStatus(
                    staging=rec.staging, destination=rec.destination, state=FAILED,
                    last_error=f"not resumed: {why}", finished_at=time.time()))
                continue
            self._queue(rec.destination_root, Path(rec.staging))
            resumed += 1
        if resumed:
            log.warning("resumed %d copies a previous run of this IOC left queued or "
                        "failed", resumed)
        return resumed

    def _record(self, root: str, st: FileStatus) -> None:
        """Copier thread: put the outcome in the ledger first, then on the PVs."""
        try:
            self.ledger.append(CopyRecord(
                staging=st.staging, destination=st.destination, destination_root=root,
                state=st.state, sha256=st.sha256, size=st.size, attempts=st.attempts,
                error=st.last_error, time=st.finished_at, retryable=st.retryable))
        except OSError as exc:  # staging disk trouble: the PVs still say what happened
            log.error("could not record the copy of %s in %s: %s", st.staging,
                      self.ledger.path, exc)
        self._outcomes.append(st)

    def pending(self) -> int:
        return sum(m.in_flight for m in list(self._mirrors.values()))

    def close(self, timeout: float = 0.0) -> None:
        """Stop the copiers; files not yet copied stay queued in the ledger."""
        for mirror in list(self._mirrors.values()):
            mirror.close(timeout)

    @mirror_path.putter
    async def mirror_path(self, instance, value):
        value = value.strip()
        if not value:
            return value
        try:  # resolving may wait on a share: off the event loop
            return str(await asyncio.to_thread(self.check_destination, value))
        except ValueError as exc:
            await self.message.write(f"MirrorPath refused: {exc}"[:1000])
            log.error("MirrorPath refused: %s", exc)
            raise

    @queued.startup
    async def queued(self, instance, async_lib):
        if self._default_path:
            await self.mirror_path.write(self._default_path)
        await asyncio.to_thread(self.resume_queued)
        while True:
            while self._outcomes:
                st = self._outcomes.popleft()
                if st.state == VERIFIED:
                    await self.verified.write(self.verified.value + 1)
                    await self.last_copy.write(st.destination)
                    text = f"verified {Path(st.staging).name} -> {st.destination}"
                else:
                    await self.failed.write(self.failed.value + 1)
                    text = f"FAILED {Path(st.staging).name}: {st.last_error}"
                await self.message.write(text[:1000])
            n = self.pending()
            if n != self.queued.value:
                await self.queued.write(n)
            await asyncio.sleep(0.2)
