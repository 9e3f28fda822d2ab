"""The NeXus view of a run file is written whole even when its frame files cannot be
read at the stop (an IOC that died with them open for SWMR writing)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest

from beamline_ls.runfile.nexus import write_nexus

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

# a writer that dies with its file open for SWMR writing: HDF5's flags stay set, and
# a plain reader is refused ("file is already open for write/SWMR write")
DIES_WRITING = textwrap.dedent("""
    import os, sys
    import h5py, numpy as np
    f = h5py.File(sys.argv[1], "w", libver="latest")
    f.create_dataset("z", data=np.linspace(10, 20, 6).reshape(2, 3), maxshape=(None, 3))
    f.create_dataset("data", data=np.ones((2, 3, 4, 4), "u2"), maxshape=(None, 3, 4, 4))
    f.swmr_mode = True
    f.flush()
    os._exit(0)
""")


def test_a_frame_file_left_open_by_a_dead_writer_leaves_a_whole_nexus_view(
        tmp_path, caplog):
    frames = tmp_path / "frames.h5"
    subprocess.run([sys.executable, "-c", DIES_WRITING, str(frames)], check=True)
    try:
        h5py.File(frames, "r").close()
        raise AssertionError("the frame file should be flagged open (no test otherwise)")
    except OSError:
        pass
    run_file = tmp_path / "run.h5"
    with h5py.File(run_file, "w") as f:
        data = f.create_group("streams/primary/data")
        f.create_group("streams/primary/external/camera_image")
        for key, name, shape, dtype in (("camera_image", "data", (2, 3, 4, 4), "u2"),
                                        ("camera_z", "z", (2, 3), "f8")):
            layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
            layout[...] = h5py.VirtualSource(str(frames), name, shape=shape)
            data.create_virtual_dataset(key, layout, fillvalue=0)
        with caplog.at_level(logging.WARNING, logger="beamline_ls.runfile.nexus"):
            write_nexus(f, {"uid": "u", "plan_name": "volumetric_scan", "time": 1.0},
                        {"time": 2.0, "exit_status": "fail"})
    with h5py.File(run_file, "r") as f:
        nx = f["entry/data"]
        assert nx.attrs["signal"] == "camera_image"
        assert list(nx.attrs["axes"]) == ["volume", "plane", ".", "."]
        assert np.array_equal(nx["plane"][()], np.arange(3))
        assert f["entry/title"][()] == b"volumetric_scan"
    assert "camera_z read from the frame files failed" in caplog.text
