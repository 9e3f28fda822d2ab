"""A frame file whose SWMR writer was killed: its "open for write" marks are cleared
exactly as HDF5's own ``h5clear -s`` clears them, and nothing else is touched."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline_ls.pipeline.recovery import clear_write_flags, lookup3

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

# a SWMR writer that dies with its file open (no close, no atexit)
DIES_WRITING = """
import os, sys
import h5py, numpy as np
from beamline_ls.pipeline.hdf5_writer import LIBVER
f = h5py.File(sys.argv[1], "w", libver=LIBVER)
d = f.create_dataset("data", (0, 8, 8), maxshape=(None, 8, 8), chunks=(1, 8, 8),
                     dtype="u2", fletcher32=True)
f.swmr_mode = True
d.resize((5, 8, 8))
d[...] = np.arange(5 * 64, dtype="u2").reshape(5, 8, 8)
d.flush()
f.flush()
os._exit(0)
"""


def _crashed(path: Path) -> Path:
    subprocess.run([sys.executable, "-c", DIES_WRITING, str(path)], check=True, timeout=60)
    return path


def test_lookup3_matches_the_published_test_vectors():
    # Bob Jenkins' lookup3.c driver: hashlittle("", 0, 0) and "Four score and seven
    # years ago" with initval 0 and 1
    assert lookup3(b"") == 0xDEADBEEF
    assert lookup3(b"Four score and seven years ago") == 0x17770551
    assert lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_a_killed_writers_file_is_released_like_h5clear_does_it(tmp_path):
    path = _crashed(tmp_path / "frames.h5")
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(path, "r")
    before = path.read_bytes()
    assert clear_write_flags(path) is True
    with h5py.File(path, "r") as f:  # plain HDF5 reads it, every flushed frame there
        np.testing.assert_array_equal(f["data"][...],
                                      np.arange(5 * 64, dtype="u2").reshape(5, 8, 8))
    after = path.read_bytes()
    changed = [i for i in range(len(before)) if before[i] != after[i]]
    assert changed and max(changed) < 64  # only the superblock
    assert clear_write_flags(path) is False  # nothing left to clear
    h5clear = shutil.which("h5clear")
    if h5clear is None:
        pytest.skip("Debian's hdf5-tools (h5clear) not installed")
    twin = _crashed(tmp_path / "twin.h5")
    subprocess.run([h5clear, "-s", str(twin)], check=True, timeout=60)
    ours = _crashed(tmp_path / "ours.h5")
    clear_write_flags(ours)
    assert ours.read_bytes()[:64] == twin.read_bytes()[:64]  # the same superblock


def test_files_it_must_not_touch_are_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_bytes(b"not an HDF5 file at all" * 10)
    with pytest.raises(ValueError, match="not an HDF5 file"):
        clear_write_flags(text)
    damaged = _crashed(tmp_path / "damaged.h5")
    raw = bytearray(damaged.read_bytes())
    raw[20] ^= 0xFF  # inside the superblock's addresses: its checksum no longer matches
    damaged.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="checksum does not match"):
        clear_write_flags(damaged)
    assert damaged.read_bytes() == bytes(raw)  # left exactly as it was
