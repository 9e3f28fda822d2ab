"""A frame file removed (or replaced) while the capture writes it.

HDF5 keeps writing into a file whose name was unlinked, without any error, and the
frames vanish with the last handle. What a user must get: the capture fails, names the
file that went away and counts its frames as lost, not stored; files of the capture
that are still there keep their frames; and the count of whole volumes (what the
catalog may reference) stops before the first file that went away.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from test_faults_disk import wait_until

from beamline_ls.frame import Frame
from beamline_ls.pipeline.recorder import Recorder

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

SHAPE = (32, 32)


def frame(k: int) -> Frame:
    return Frame(np.full(SHAPE, k, np.uint16), k, 0.01 * k, 0.001, 40.0)


def capture(path: Path, n: int, planes: int, per_file: int, at: int, action) -> Recorder:
    """Capture ``n`` frames; ``action()`` runs once the writer stored ``at`` frames,
    before the next is offered."""
    rec = Recorder(buffer_frames=n)
    rec.start(path, SHAPE, n_frames=n, planes_per_volume=planes, max_frames_per_file=per_file)
    for k in range(n):
        if k == at:
            wait_until(lambda: rec.status.frames_written >= at)
            action()
        rec.submit(frame(k))
    wait_until(lambda: not rec.capturing)
    return rec


def test_a_file_deleted_mid_capture_fails_it_and_its_frames_count_as_lost(tmp_path):
    path = tmp_path / "run.h5"
    rec = capture(path, 40, 0, 0, 20, path.unlink)
    st = rec.status
    assert str(path) in st.error and "removed while being written" in st.error
    assert st.frames_written == 0
    assert st.frames_lost == 40
    assert "0 of 40 frames stored, 40 lost" in st.error
    assert st.complete_units == 0
    assert not path.exists()


def test_a_replaced_file_is_seen_though_its_name_still_exists(tmp_path):
    """Someone moves the file away and a new file takes its name: the name exists, but
    the frames written are not in it."""
    path = tmp_path / "run.h5"

    def replace() -> None:
        path.rename(tmp_path / "moved.h5")
        path.write_bytes(b"not the capture")

    st = capture(path, 20, 0, 0, 10, replace).status
    assert "removed while being written" in st.error
    assert st.frames_written == 0


def test_files_of_a_rolled_capture_that_remain_keep_their_frames(tmp_path):
    """Four files of two 5-plane volumes each; the second is deleted while written:
    the first keeps its two volumes, the whole volumes end before the gone file."""
    path = tmp_path / "run.h5"
    second = tmp_path / "run_001.h5"
    rec = capture(path, 40, 5, 10, 15, second.unlink)
    st = rec.status
    assert str(second) in st.error
    assert str(path) + "," not in st.error  # only the gone file is named
    assert st.frames_written == 30  # 40 written, 10 of them into the gone file
    assert st.frames_lost == 10
    assert st.complete_units == 2
    assert path.exists() and (tmp_path / "run_002.h5").exists()


def test_a_capture_whose_file_stays_succeeds(tmp_path):
    """The check does not fail a capture that nothing touched (files rolled over and
    handed on included)."""
    handed: list[Path] = []
    lock = threading.Lock()
    rec = Recorder(buffer_frames=40)
    rec.start(tmp_path / "run.h5", SHAPE, n_frames=40, planes_per_volume=5,
              max_frames_per_file=10,
              on_file_closed=lambda p: lock.acquire() and (handed.append(p), lock.release()))
    for k in range(40):
        rec.submit(frame(k))
    wait_until(lambda: not rec.capturing)
    assert rec.status.error == ""
    assert rec.status.frames_written == 40 and rec.status.complete_units == 8
    assert len(handed) == 4
