"""Stop a capture cleanly before its disk fills, and keep room to close the file.

Why: HDF5 does not recover from "No space left on device" in the middle of a write:
the metadata it holds in memory no longer matches the file, flushing and closing fail,
and the file is left unreadable, losing every frame, also those written before. So the
writer

1. checks the free space of the file's filesystem before each frame (one ``statvfs``,
   microseconds) and stops when the frame plus ``margin`` (room to write the last
   metadata block and close) no longer fits, and
2. holds a small reserve file on the same filesystem while capturing, deleted when the
   disk fills anyway (another process filled it between two checks), so the metadata
   can still be flushed and the file closed.

The reserve is a hidden file next to the data (``.NAME.reserve``), created exclusively
and never through a symlink, and removed at the end of every capture.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

MiB = 1 << 20
RESERVE_BYTES = 4 * MiB  # freed when the disk fills anyway: room to close the file
MARGIN_BYTES = 4 * MiB  # kept free beyond the next frame: the last metadata and close


class DiskFullError(OSError):
    """The capture's filesystem has no room for the next frame."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return str(self.strerror)


def is_disk_full(exc: BaseException) -> bool:
    """True for an out-of-space error, also as HDF5 reports it (an ``OSError`` whose
    text carries errno 28 rather than its ``errno``)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "errno = 28" in text


def free_bytes(directory: str | Path) -> int:
    """Bytes an unprivileged writer can still use on ``directory``'s filesystem."""
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def _mb(n: int) -> str:
    return f"{n / MiB:.2f} MiB"


def nearest_existing(directory: Path) -> Path:
    """``directory`` or its closest ancestor that exists (where it would be created)."""
    d = Path(directory)
    while not d.exists() and d != d.parent:
        d = d.parent
    return d


def writable(directory: Path) -> bool:
    """Whether files can be created in ``directory`` (a read-only mount says no even
    to root)."""
    return os.access(directory, os.W_OK | os.X_OK)


def not_writable(directory: Path) -> str:
    return f"file path not writable: {directory} (read-only or no permission)"


def capture_problem(directory: str | Path, frame_bytes: int) -> str:
    """Why a capture into ``directory`` would fail at once, or "" (checked when the
    file path is set, so a plan fails before it opens a run): the directory cannot be
    created or written (read-only filesystem, permissions), or its filesystem has no
    room for a frame, the reserve and closing the file."""
    where = nearest_existing(Path(directory))
    if not where.is_dir() or not writable(where):
        return not_writable(where)
    need = RESERVE_BYTES + MARGIN_BYTES + int(frame_bytes)
    free = free_bytes(where)
    if free < need:
        return f"disk full: {_mb(free)} free in {where}, a capture needs at least {_mb(need)}"
    return ""


class SpaceGuard:
    """Free-space check and reserve for one capture writing into ``directory``."""

    def __init__(self, directory: str | Path, name: str, frame_bytes: int,
                 margin_bytes: int = MARGIN_BYTES, reserve_bytes: int = RESERVE_BYTES
                 ) -> None:
        self.directory = Path(directory)
        self.frame_bytes = int(frame_bytes)
        self.margin_bytes = int(margin_bytes)
        self.reserve_bytes = int(reserve_bytes)
        self.reserve_path = self.directory / f".{name}.reserve"
        self._held = False
        self._fd: int | None = None  # the reserve, open and locked while held

    def open(self) -> None:
        """Take the reserve; refuse (`DiskFullError`) when it and one frame do not fit."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if not writable(self.directory):  # the cause before the room
            raise PermissionError(not_writable(self.directory))
        need = self.reserve_bytes + self.frame_bytes + self.margin_bytes
        free = free_bytes(self.directory)
        if free < need:
            raise DiskFullError(f"disk full: {_mb(free)} free in {self.directory}, a capture "
                                f"needs at least {_mb(need)} to start")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.reserve_path, flags, 0o600)
        except FileExistsError:  # left by a process that died: it is ours to reuse
            if self.reserve_path.is_symlink():
                raise
            self.reserve_path.unlink()
            fd = os.open(self.reserve_path, flags, 0o600)
        try:
            os.posix_fallocate(fd, 0, self.reserve_bytes)
        except OSError as exc:
            os.close(fd)
            self.reserve_path.unlink(missing_ok=True)
            if is_disk_full(exc):
                raise DiskFullError(f"disk full: no room for the {_mb(self.reserve_bytes)} "
                                    f"reserve in {self.directory}") from exc
            raise
        # held locked while the capture is open: a reserve nobody locks marks a capture
        # whose writer died (`pipeline.recovery` releases its files at IOC start)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._fd = fd
        self._held = True

    def check(self) -> None:
        """Raise `DiskFullError` when the next frame and the margin no longer fit."""
        free = free_bytes(self.directory)
        if free < self.frame_bytes + self.margin_bytes:
            raise DiskFullError(
                f"disk full: {_mb(free)} left in {self.directory}, the next frame and "
                f"closing the file need {_mb(self.frame_bytes + self.margin_bytes)}")

    def release(self) -> None:
        """Give the reserve back (room to close the file); safe to call again."""
        if not self._held:
            return
        self._held = False
        try:
            self.reserve_path.unlink(missing_ok=True)
        except OSError as exc:
            log.error("could not remove the disk reserve %s: %s", self.reserve_path, exc)
        finally:
            if self._fd is not None:
                os.close(self._fd)  # and its lock
                self._fd = None


# -- room held past the end of a file another library writes ---------------------------
_FALLOC_FL_KEEP_SIZE = 0x01  # <linux/falloc.h>
_FALLOC_FL_PUNCH_HOLE = 0x02
_fallocate_fn = None


def _fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """Linux ``fallocate(2)`` with a mode (``os.posix_fallocate`` takes none)."""
    global _fallocate_fn
    if _fallocate_fn is None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.fallocate64
        fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        fn.restype = ctypes.c_int
        _fallocate_fn = fn
    if _fallocate_fn(fd, mode, offset, length) != 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class RoomPastEnd:
    """Disk blocks held just past the end of a file that HDF5 writes, so its next
    writes, and closing it, cannot meet a full disk.

    Why: HDF5 does not survive "No space left on device" in its metadata writes.
    Measured on a run file whose tmpfs another process filled while a descriptor was
    being written: objects failed to close with only "Can't decrement id ref count"
    on stderr, and the next flush crashed the whole Python process (segmentation
    fault). A free-space check before each write cannot close that race; blocks the
    file already owns can. ``fallocate(FALLOC_FL_KEEP_SIZE)`` gives the file ``room``
    bytes past its end without changing its size; HDF5's writes at the end land in
    them. `hold` tops the room up before each write and raises `DiskFullError` when
    the disk cannot give it, while what is held still lets the file be closed.
    `release` punches the unused blocks out again.

    Where the filesystem has no ``fallocate`` (some network filesystems), `hold` falls
    back to checking the free space, which leaves the race open.
    """

    def __init__(self, path: str | Path, room: int) -> None:
        self.path = Path(path)
        self.room = int(room)
        self.supported = True
        self._fd: int | None = os.open(self.path, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))

    def hold(self) -> None:
        """Hold ``room`` bytes past the file's current end; `DiskFullError` if the disk
        has not got them."""
        if self._fd is None:
            raise ValueError(f"the room past the end of {self.path} was released")
        if self.supported:
            end = os.fstat(self._fd).st_size
            try:
                _fallocate(self._fd, _FALLOC_FL_KEEP_SIZE, end, self.room)
                return
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
                    self.supported = False
                    log.info("%s: no fallocate on this filesystem; checking free space "
                             "before each write instead", self.path)
                elif is_disk_full(exc):
                    raise DiskFullError(f"disk full: no room for the next "
                                        f"{_mb(self.room)} of {self.path}") from exc
                else:
                    raise
        free = free_bytes(self.path.parent)
        if free < self.room:
            raise DiskFullError(f"disk full: {_mb(free)} left in {self.path.parent}, "
                                f"{self.path.name} needs {_mb(self.room)} to go on")

    def release(self) -> None:
        """Give the unused blocks past the end back, once the file is closed; safe to
        call again. Two ways, as filesystems differ: tmpfs frees them by punching a
        hole past the end, ext4 ignores that and frees them when the file is truncated
        to its own size."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if self.supported:
                end = os.fstat(fd).st_size
                with contextlib.suppress(OSError):
                    _fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, end,
                               self.room * 4)
                os.ftruncate(fd, end)
        except OSError as exc:
            log.warning("could not give back the disk room held past %s: %s", self.path,
                        exc)
        finally:
            os.close(fd)
