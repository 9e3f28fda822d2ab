"""Frame files left open by an IOC that died: make them readable by plain HDF5 again.

Why: a frame file is written in SWMR mode, which marks its superblock "open for
write". A writer that closes the file clears the mark; a writer that is killed leaves
it, and from then on every reader that does not ask for SWMR (plain ``h5py.File(p)``,
h5dump, MATLAB, Fiji) refuses the file ("file is already open for write (may use
<h5clear file> ...)"), although everything flushed is intact. HDF5's own remedy is the
``h5clear -s`` tool; no library call does it. The mark is one byte of the superblock
(format versions 2 and 3, the only ones SWMR writes), guarded by a Jenkins lookup3
checksum, so clearing it is a checked rewrite of that byte and the checksum.

When: at IOC start, for captures the previous IOC left open. Each capture keeps a
disk reserve file beside its data (``pipeline.diskspace``), locked, until it closes: a
reserve file nobody locks is exactly the mark of a capture whose writer is gone (a
SWMR writer holds no lock on the HDF5 file itself, so that cannot tell).
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
from pathlib import Path

log = logging.getLogger(__name__)

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_MASK = 0xFFFFFFFF


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` (byte-wise, as HDF5 computes metadata
    checksums)."""
    n = len(data)
    a = b = c = (0xDEADBEEF + n + initval) & _MASK
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i:i + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[i + 4:i + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[i + 8:i + 12], "little")) & _MASK
        a = (a - c) & _MASK; a ^= _rot(c, 4); c = (c + b) & _MASK      # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 6); a = (a + c) & _MASK      # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 8); b = (b + a) & _MASK      # noqa: E702
        a = (a - c) & _MASK; a ^= _rot(c, 16); c = (c + b) & _MASK     # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 19); a = (a + c) & _MASK     # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 4); b = (b + a) & _MASK      # noqa: E702
        i += 12
        n -= 12
    if n == 0:
        return c
    tail = data[i:i + n] + bytes(12 - n)  # the missing bytes add nothing
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c ^= b; c = (c - _rot(b, 14)) & _MASK   # noqa: E702
    a ^= c; a = (a - _rot(c, 11)) & _MASK   # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _MASK   # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _MASK   # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _MASK    # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _MASK   # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _MASK   # noqa: E702
    return c


def _superblock_offset(f, size: int) -> int | None:
    """Where the superblock starts: 0, 512, 1024, ... (after a user block)."""
    offset = 0
    while offset + len(SIGNATURE) <= size:
        f.seek(offset)
        if f.read(len(SIGNATURE)) == SIGNATURE:
            return offset
        offset = 512 if offset == 0 else offset * 2
    return None


def clear_write_flags(path: str | Path) -> bool:
    """Clear the "open for write" marks a killed SWMR writer left in ``path``'s
    superblock (what ``h5clear -s`` does); True when there were any. Only for a file
    whose writer is gone: a live SWMR writer holds no lock that would show it.

    Refuses (``ValueError``) a file that is not HDF5, whose superblock format has no
    such marks (versions 0 and 1), or whose superblock checksum does not match (the
    file is damaged in a way this must not touch).
    """
    path = Path(path)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        start = _superblock_offset(f, size)
        if start is None:
            raise ValueError(f"{path} is not an HDF5 file")
        f.seek(start + 8)
        version, offsets, _lengths, flags = f.read(4)
        if version not in (2, 3):
            raise ValueError(f"{path}: superblock version {version} has no write marks")
        body = 12 + 4 * offsets  # ... then base, extension, EOF and root addresses
        f.seek(start)
        block = bytearray(f.read(body + 4))
        (stored,) = struct.unpack("<I", block[body:])
        if lookup3(bytes(block[:body])) != stored:
            raise ValueError(f"{path}: superblock checksum does not match; not touched")
        if flags == 0:
            return False
        block[11] = 0
        block[body:] = struct.pack("<I", lookup3(bytes(block[:body])))
        f.seek(start)
        f.write(block)
        f.flush()
        os.fsync(f.fileno())
        return True


def _held(reserve: Path) -> bool:
    """True while a live capture holds ``reserve`` (its lock)."""
    try:
        fd = os.open(reserve, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing drops a lock taken here
    return False


def release_abandoned_captures(root: str | Path) -> list[Path]:
    """At IOC start: every capture under ``root`` whose disk reserve is still there
    was open when the last IOC stopped. Clear the write marks of its files (the
    capture file and its rollovers) and remove the reserve; the files released."""
    released: list[Path] = []
    for directory, _dirs, files in os.walk(root):
        for name in files:
            if not (name.startswith(".") and name.endswith(".reserve")):
                continue
            reserve = Path(directory) / name
            if _held(reserve):
                continue  # a capture another process is writing now
            stem = name[1:-len(".reserve")]
            for data in sorted(Path(directory).glob(f"{stem}*.h5")):
                if data.stem != stem and not data.stem.startswith(f"{stem}_"):
                    continue
                try:
                    if clear_write_flags(data):
                        released.append(data)
                        log.warning("%s was left open by an IOC that stopped without "
                                    "closing it: released, readable by any HDF5 reader "
                                    "(everything flushed before it stopped is there)", data)
                except (OSError, ValueError) as exc:
                    log.error("could not release %s: %s", data, exc)
            reserve.unlink(missing_ok=True)
    return released
