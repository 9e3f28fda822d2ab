"""Copy closed data files from local staging to a second location, and prove the copy.

Why: a high-rate stream written straight to a network share stalls once the OS
buffers fill, so frames are written to local RAM/SSD ("staging") and each closed file
is copied asynchronously, with retries, until both copies are confirmed.

:class:`Mirror` does that copy on one background thread:

- :meth:`Mirror.submit` only records the request and returns at once; it never waits
  for the destination, however slow or hung the share is (memory is bounded by
  ``max_pending`` queued paths).
- a copy goes to a temporary name next to the destination, is fsynced, verified by
  sha256 against the staging file (streamed in chunks), and only then takes its final
  name, without ever replacing an existing file.
- any ``OSError`` or checksum mismatch is retried with exponential backoff; a file that
  still fails is reported (status ``failed``, ERROR log) and its staging copy is kept.
- a file failed that way is not given up: a share that is down for minutes (a server
  restart) must not leave files uncopied for good. It is tried again, once, as soon as
  any copy to the same destination succeeds (the share answers again), and the oldest
  such file every ``probe_every_s`` (60 s); a try that fails again is only logged
  (INFO), a success is reported like any verified copy. A file that fails again just
  after a copy succeeded fails for its own reasons (too large for the space left): it
  waits for the probe only, so that small copies going through do not copy it again
  and again.
- an existing destination file with different content is never overwritten: the file
  is refused and reported. One with the same content counts as verified.
- the staging copy is deleted only when ``delete_staging_after_verify=True`` and the
  copy was verified.
- nothing is written outside ``destination_root``: a symlink inside it that leads
  elsewhere makes the copy fail (never retried) instead of being followed.
- memory stays bounded for an IOC that runs for months: finished files leave the
  working set; the last ``keep_finished`` stay inspectable, totals are counters.

The copy step is injectable (``copy_func``) so tests can make the share fail, hang or
corrupt data deterministically.
"""

from __future__ import annotations

import collections
import hashlib
import heapq
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from beamline_ls.log import success

log = logging.getLogger(__name__)

CHUNK_BYTES = 4 * 1024 * 1024

PENDING = "pending"
COPYING = "copying"
VERIFIED = "verified"
FAILED = "failed"

CopyFunc = Callable[[Path, Path], None]
VerifiedHook = Callable[[Path, Path], None]
FinishedHook = Callable[["FileStatus"], None]


class ChecksumMismatch(Exception):
    """The copy read back differs from the staging file (retried like an OSError)."""


class DestinationConflict(Exception):
    """A different file already exists at the destination (never retried)."""


class OutsideDestination(Exception):
    """The destination resolves outside the destination root (never retried)."""


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _check_confined(directory: Path, root: Path) -> None:
    """Raise :class:`OutsideDestination` if ``directory`` (or, while it does not exist
    yet, its nearest existing ancestor) resolves outside ``root`` (itself resolved).
    Above a root that does not exist yet, no symlink may have appeared since."""
    probe = directory
    while not probe.exists() and probe != probe.parent and not probe.is_symlink():
        probe = probe.parent
    real = Path(os.path.realpath(probe))
    confined = _inside(real, root) if _inside(probe, root) else real == probe
    if not confined:
        raise OutsideDestination(f"{probe} leads to {real}, outside the destination root "
                                 f"{root}; not followed")


@dataclass
class FileStatus:
    """Where one submitted file stands; a snapshot is returned by :meth:`Mirror.file_status`."""

    staging: str
    destination: str
    state: str = PENDING
    attempts: int = 0
    last_error: str = ""
    size: int = 0
    sha256: str = ""
    submitted_at: float = field(default_factory=time.time)
    finished_at: float = 0.0
    retryable: bool = False  # failed for a cause that can pass (I/O, checksum, full queue)
    rounds: int = 0  # times tried again after it had failed
    probe_only: bool = False  # failed again when the destination worked: no wake-ups
    woken: bool = False  # this try was sent because another copy succeeded


def sha256_file(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> str:
    """Hex sha256 of a file, read in chunks so memory stays bounded for any file size."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_bytes)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def copy_and_fsync(src: Path, dst: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Stream ``src`` into a new file ``dst`` (mode ``x``) and fsync it before returning.

    The fsync matters on a share: without it a "finished" copy may still sit in the
    client's cache, and the checksum would be read from that cache, not the server.
    """
    with open(src, "rb") as fin, open(dst, "xb") as fout:
        while True:
            block = fin.read(chunk_bytes)
            if not block:
                break
            fout.write(block)
        fout.flush()
        os.fsync(fout.fileno())


def _fsync_dir(path: Path) -> None:
    """Persist a rename (best effort: some filesystems cannot open directories)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _place_without_overwrite(tmp: Path, dst: Path) -> None:
    """Give ``tmp`` the name ``dst`` atomically, failing if ``dst`` exists.

    ``os.link`` refuses an existing name atomically; shares without hard links fall
    back to an existence check then ``os.replace`` (a narrow race, only with another
    writer of the same destination name).
    """
    try:
        os.link(tmp, dst)
    except FileExistsError as exc:
        raise DestinationConflict(f"{dst} appeared during the copy") from exc
    except OSError:
        if dst.exists():
            raise DestinationConflict(f"{dst} appeared during the copy") from None
        os.replace(tmp, dst)
    else:
        tmp.unlink()
    _fsync_dir(dst.parent)


class Mirror:
    """Copy closed files from ``staging_root`` to the same relative path under
    ``destination_root`` on a background thread, verifying and retrying.

    Parameters
    ----------
    retries:
        Further attempts after the first one (so ``retries + 1`` attempts in all).
    backoff_s, max_backoff_s:
        Delay before retry n is ``min(backoff_s * 2**(n-1), max_backoff_s)``. Other
        files are copied while one waits for its retry.
    verify:
        Compare sha256 of the staging file and the copy before naming the copy.
    delete_staging_after_verify:
        Remove the staging file once its copy is verified (off by default).
    on_verified:
        Called as ``on_verified(staging_path, destination_path)`` on the mirror thread
        after a verified copy (e.g. to point the catalog at the copy). Exceptions are
        logged, not raised.
    on_finished:
        Called with a snapshot of the file's :class:`FileStatus` once it is final
        (``verified`` or ``failed``), after ``on_verified``; e.g. to record the outcome
        in a ledger other processes read. Exceptions are logged, not raised.
    copy_func:
        ``copy_func(src, tmp_dst)`` writes the copy; defaults to :func:`copy_and_fsync`.
    max_pending:
        Most files queued or waiting for a retry at once; beyond it ``submit`` refuses
        (the file is reported ``failed``, the staging copy stays) instead of growing.
    keep_finished:
        How many finished files :meth:`file_status` and :meth:`status` still list.
    probe_every_s:
        While files that failed for a cause that can pass wait, the oldest is tried
        again this often; a verified copy sends every one of them that has not failed
        since a copy succeeded.
    """

    def __init__(
        self,
        staging_root: str | Path,
        destination_root: str | Path,
        retries: int = 5,
        backoff_s: float = 1.0,
        verify: bool = True,
        *,
        max_backoff_s: float = 60.0,
        delete_staging_after_verify: bool = False,
        on_verified: VerifiedHook | None = None,
        on_finished: FinishedHook | None = None,
        copy_func: CopyFunc | None = None,
        max_pending: int = 10_000,
        keep_finished: int = 1000,
        probe_every_s: float = 60.0,
    ):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if backoff_s < 0 or max_backoff_s < 0:
            raise ValueError("backoff must be >= 0")
        self.staging_root = Path(staging_root).resolve()
        self.destination_root = Path(os.path.realpath(destination_root))
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.verify = verify
        self.delete_staging_after_verify = delete_staging_after_verify
        self.on_verified = on_verified
        self.on_finished = on_finished
        self.copy_func: CopyFunc = copy_func or copy_and_fsync
        self.max_pending = max_pending
        self.keep_finished = keep_finished
        self.probe_every_s = probe_every_s
        # failed for a cause that can pass, oldest first: tried again later
        self._parked: collections.OrderedDict[str, FileStatus] = collections.OrderedDict()
        self._next_probe: float | None = None
        self._files: dict[str, FileStatus] = {}  # pending or copying
        self._finished: collections.OrderedDict[str, FileStatus] = collections.OrderedDict()
        self._totals = {VERIFIED: 0, FAILED: 0, "bytes_verified": 0}
        self._heap: list[tuple[float, int, str]] = []  # (due time, order, staging key)
        self._order = itertools.count()
        self._active = 0  # files pending or copying
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="mirror", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- caller side
    def destination_for(self, path: str | Path) -> Path:
        """Where the copy of a staging file goes (``ValueError`` if not under staging)."""
        src = Path(path).resolve()
        try:
            return self.destination_root / src.relative_to(self.staging_root)
        except ValueError:
            raise ValueError(f"{src} is not under the staging root {self.staging_root}") from None

    def submit(self, path: str | Path) -> FileStatus:
        """Queue a closed file under ``staging_root`` for copying; returns at once.

        Raises ``ValueError`` for a path outside ``staging_root`` or not a regular
        file (a caller bug), ``RuntimeError`` after :meth:`close`. Submitting a file
        that is already pending or copying returns its current status.
        """
        src = Path(path).resolve()
        destination = self.destination_for(src)
        if not src.is_file():
            raise ValueError(f"{src} is not a regular file")
        key = str(src)
        with self._cond:
            if self._closing:
                raise RuntimeError("mirror is closed")
            current = self._files.get(key)
            if current is not None and current.state in (PENDING, COPYING):
                return _copy(current)
            self._unpark(key)  # sent again by hand: not also by a wake-up
            st = FileStatus(staging=key, destination=str(destination))
            if self._active >= self.max_pending:
                st.state = FAILED
                st.last_error = f"mirror queue full ({self.max_pending} files pending)"
                st.finished_at = time.time()
                st.retryable = True
                self._retire(st)
                self._park(st)
                log.error("not mirroring %s: %s; the staging copy is kept", key, st.last_error)
                return _copy(st)
            self._finished.pop(key, None)
            self._files[key] = st
            self._active += 1
            heapq.heappush(self._heap, (time.monotonic(), next(self._order), key))
            self._cond.notify_all()
            return _copy(st)

    def file_status(self, path: str | Path) -> FileStatus | None:
        """Snapshot of one file's status (None if never submitted)."""
        key = str(Path(path).resolve())
        with self._cond:
            st = self._files.get(key) or self._finished.get(key)
            return _copy(st) if st else None

    def status(self) -> dict[str, object]:
        """Summary: counts per state and verified bytes since the start, and the failed
        files (with their errors) among the last ``keep_finished`` finished."""
        with self._cond:
            counts = {PENDING: 0, COPYING: 0, VERIFIED: self._totals[VERIFIED],
                      FAILED: self._totals[FAILED]}
            for st in self._files.values():
                counts[st.state] += 1
            return {
                **counts,
                "submitted": sum(counts.values()),
                "bytes_verified": self._totals["bytes_verified"],
                "failures": {s.staging: s.last_error for s in self._finished.values()
                             if s.state == FAILED},
                "running": self._thread.is_alive(),
            }

    def _retire(self, st: FileStatus) -> None:
        """Move a final status out of the working set (call with the lock held)."""
        self._files.pop(st.staging, None)
        self._totals[st.state] += 1
        if st.state == VERIFIED:
            self._totals["bytes_verified"] += st.size
        self._finished[st.staging] = st
        self._finished.move_to_end(st.staging)
        while len(self._finished) > self.keep_finished:
            self._finished.popitem(last=False)

    def _park(self, st: FileStatus) -> None:
        """Keep a failed file to try again later (call with the lock held)."""
        self._parked[st.staging] = st
        if self._next_probe is None:
            self._next_probe = time.monotonic() + self.probe_every_s

    def _unpark(self, key: str) -> FileStatus | None:
        """Take a failed file out of those waiting to be tried again, and out of the
        failed count (call with the lock held); None if it was not waiting."""
        old = self._parked.pop(key, None)
        if old is not None:
            self._finished.pop(key, None)
            self._totals[FAILED] -= 1
        if not self._parked:
            self._next_probe = None
        return old

    def _requeue(self, keys: list[str], woken: bool = False) -> int:
        """Queue failed files again, once each (call with the lock held); returns how
        many went. A file whose staging copy is gone stays failed."""
        sent = 0
        for key in keys:
            if self._active >= self.max_pending:
                break
            if not os.path.isfile(key):
                self._parked.pop(key)  # stays failed, as reported
                log.warning("not copying %s again: the staging file is gone", key)
                continue
            old = self._unpark(key)
            self._files[key] = FileStatus(staging=key, destination=old.destination,
                                          rounds=old.rounds + 1, last_error=old.last_error,
                                          probe_only=old.probe_only, woken=woken)
            self._active += 1
            heapq.heappush(self._heap, (time.monotonic(), next(self._order), key))
            sent += 1
        if not self._parked:
            self._next_probe = None  # the last ones may have had no staging file
        if sent:
            self._cond.notify_all()
        return sent

    @property
    def waiting_to_retry(self) -> int:
        """Failed files that will be tried again (the destination may come back)."""
        with self._cond:
            return len(self._parked)

    @property
    def in_flight(self) -> int:
        """Files pending or being copied (cheap: a counter, not a scan of all files)."""
        with self._cond:
            return self._active

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until no file is pending or copying; False if ``timeout`` ran out."""
        with self._cond:
            return self._cond.wait_for(lambda: self._active == 0, timeout)

    def close(self, timeout: float | None = None) -> bool:
        """Stop accepting files, wait up to ``timeout`` for the queue, stop the thread.

        Returns True when everything submitted was finished (verified or failed).
        Files still pending stay ``pending`` in :meth:`status` (their staging copies
        are untouched); a copy that hangs is abandoned on its daemon thread.
        """
        done = self.wait(timeout)
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(0 if not done else timeout)
        if not done:
            log.error("mirror closed with %d file(s) not yet copied", self._active)
        return done

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------- mirror thread
    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closing:
                        return
                    now = time.monotonic()
                    if self._next_probe is not None and now >= self._next_probe:
                        self._next_probe = now + self.probe_every_s
                        self._requeue([next(iter(self._parked))])  # the oldest
                    if self._heap and self._heap[0][0] <= now:
                        _, _, key = heapq.heappop(self._heap)
                        st = self._files.get(key)
                        if st is None or st.state != PENDING:
                            continue  # an entry left by a file that was sent again
                        st.state = COPYING
                        st.attempts += 1
                        break
                    due = [d for d in (self._heap[0][0] if self._heap else None,
                                       self._next_probe) if d is not None]
                    self._cond.wait(max(min(due) - now, 0.0) if due else None)
            try:
                self._attempt(st)
            except Exception as exc:  # every failure is reported below
                self._failed_attempt(st, exc)
            else:
                self._verified(st)

    def _attempt(self, st: FileStatus) -> None:
        """One copy attempt; raises on failure, returns when the copy is verified."""
        src, dst = Path(st.staging), Path(st.destination)
        st.size = src.stat().st_size
        src_sha = sha256_file(src) if self.verify else ""
        st.sha256 = src_sha
        _check_confined(dst.parent, self.destination_root)
        if dst.is_symlink():
            raise OutsideDestination(f"{dst} is a symlink; not followed, not replaced")
        if dst.exists():
            if self.verify and sha256_file(dst) == src_sha:
                log.info("%s already holds an identical copy", dst)
                return
            raise DestinationConflict(f"{dst} exists and differs from {src}; not overwritten")
        dst.parent.mkdir(parents=True, exist_ok=True)
        _check_confined(dst.parent, self.destination_root)  # raced by a new symlink?
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
        try:
            self.copy_func(src, tmp)
            if self.verify:
                copy_sha = sha256_file(tmp)
                if copy_sha != src_sha:
                    raise ChecksumMismatch(
                        f"sha256 of copy {copy_sha[:12]}... != staging {src_sha[:12]}...")
            _place_without_overwrite(tmp, dst)
        finally:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass

    def _failed_attempt(self, st: FileStatus, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        retryable = isinstance(exc, OSError | ChecksumMismatch)
        with self._cond:
            st.last_error = error
            if retryable and st.rounds:  # tried again after failing: once, quietly
                st.state = FAILED
                st.finished_at = time.time()
                st.retryable = True
                st.probe_only = st.probe_only or st.woken
                self._retire(st)
                self._park(st)
                log.info("copy of %s still fails: %s; tried again after the next copy to "
                         "%s that succeeds, or in %.3g s", st.staging, error,
                         self.destination_root, self.probe_every_s)
                self._active -= 1
                self._cond.notify_all()
                return
            if retryable and st.attempts <= self.retries:
                delay = min(self.backoff_s * 2 ** (st.attempts - 1), self.max_backoff_s)
                st.state = PENDING
                heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order),
                                            st.staging))
                log.warning("copy of %s failed (attempt %d of %d): %s; retrying in %.3g s",
                            st.staging, st.attempts, self.retries + 1, error, delay)
                return
            st.state = FAILED
            st.finished_at = time.time()
            st.retryable = retryable
            self._retire(st)
            if retryable:
                self._park(st)
            # report before waking waiters: whoever waits sees the failure already logged
            log.error("mirroring %s to %s failed after %d attempt(s): %s; staging copy "
                      "kept%s", st.staging, st.destination, st.attempts, error,
                      f", tried again once a copy to {self.destination_root} succeeds "
                      f"or in {self.probe_every_s:.3g} s" if retryable else "")
            final = _copy(st)
        self._finish(final)

    def _finish(self, final: FileStatus) -> None:
        """Run the ``on_finished`` hook, then wake waiters: whoever waits for the queue
        sees every outcome already reported."""
        if self.on_finished is not None:
            try:
                self.on_finished(final)
            except Exception:  # a hook bug must not stop the mirror
                log.exception("on_finished hook failed for %s", final.staging)
        with self._cond:
            self._active -= 1
            self._cond.notify_all()

    def _verified(self, st: FileStatus) -> None:
        src, dst = Path(st.staging), Path(st.destination)
        success(log, "mirrored %s to %s (%d bytes, %s, attempt %d)", src, dst, st.size,
                "sha256 verified" if self.verify else "not verified", st.attempts)
        if self.delete_staging_after_verify and self.verify:
            try:
                src.unlink()
            except OSError as exc:
                log.warning("could not delete staging copy %s: %s", src, exc)
        if self.on_verified is not None:
            try:
                self.on_verified(src, dst)
            except Exception:  # a hook bug must not stop the mirror
                log.exception("on_verified hook failed for %s", src)
        with self._cond:
            st.state = VERIFIED
            st.last_error = ""
            st.finished_at = time.time()
            self._retire(st)
            final = _copy(st)
            if self._parked:  # the destination answers: what failed goes again
                n = self._requeue([k for k, p in self._parked.items() if not p.probe_only],
                                  woken=True)
                if n:
                    log.info("a copy to %s succeeded: copying %d file(s) again that had "
                             "failed", self.destination_root, n)
        self._finish(final)


def _copy(st: FileStatus) -> FileStatus:
    return FileStatus(**vars(st))
