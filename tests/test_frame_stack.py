"""The catalog reads frames straight from the frame files (FrameStack): every selection
a client can send gives what numpy gives on the frames laid out as the catalog says."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from tiled.ndslice import NDSlice

from beamline_ls.frame_stack import FrameStack

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

DATASET = "/entry/data/data"


def write_parts(tmp_path, counts, frame=(6, 5), seed=0):
    """Frame files of ``counts`` frames each (random uint16) and their frames end to end."""
    rng = np.random.default_rng(seed)
    files, parts = [], []
    for i, n in enumerate(counts):
        data = rng.integers(0, 4096, (n, *frame), dtype=np.uint16)
        path = tmp_path / f"part{i}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset(DATASET, data=data, chunks=(1, *frame))
        files.append(path)
        parts.append(data)
    return files, np.concatenate(parts)


SELECTIONS = [
    (), (Ellipsis,), (1,), (-1,), (0, 4), (1, -2), (slice(None), 3),
    (slice(1, None), slice(1, 4)), (slice(None, None, -1),), (Ellipsis, 2),
    (1, slice(4, 0, -2), slice(None, None, 2), slice(None, None, -1)), (0, 1, 2, 3),
    (slice(3, 3),), (slice(None), slice(2, 3), 0, slice(1, 4, 2)),
]


@pytest.mark.parametrize("selection", SELECTIONS, ids=repr)
def test_a_selection_of_volumes_across_files_reads_as_numpy_does(tmp_path, selection):
    # 11 frames in three files; the run's structure is 2 volumes x 5 planes: a live
    # file holds a frame more than the catalog has recorded, and that one is not served
    files, frames = write_parts(tmp_path, [4, 4, 3])
    stack = FrameStack(files, DATASET, (2, 5, 6, 5))
    assert stack.fits()
    expected = frames[:10].reshape(2, 5, 6, 5)[selection]
    got = stack.read(NDSlice(*selection))
    assert got.dtype == np.uint16
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_a_flat_run_reads_any_frame_of_the_files(tmp_path):
    files, frames = write_parts(tmp_path, [7, 5])
    stack = FrameStack(files, DATASET, (12, 6, 5))
    for i in (0, 6, 7, 11, -1):
        assert np.array_equal(stack.read(NDSlice(i)), frames[i])
    assert np.array_equal(stack.read(NDSlice(slice(5, 9))), frames[5:9])  # across files


def test_files_that_do_not_hold_the_structure_are_left_to_tiled(tmp_path):
    files, _ = write_parts(tmp_path, [4, 4])
    assert not FrameStack(files, DATASET, (2, 5, 6, 5)).fits()  # 8 frames of 10
    assert not FrameStack(files, DATASET, (8, 5, 6)).fits()  # frames shaped otherwise
    assert not FrameStack(files, DATASET, (8, 30)).fits()


def test_a_missing_frame_file_is_an_error_when_opened(tmp_path):
    files, _ = write_parts(tmp_path, [4, 4])
    files[1].unlink()
    with pytest.raises(OSError, match="part1.h5|No such file"):
        FrameStack(files, DATASET, (8, 6, 5))
