"""A data directory copied elsewhere (an analysis disk) or moved still reads through its
catalog: frames come from the copy, never from where they were written."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from test_run_ledger import _fly_run

from beamline_ls.catalog import open_catalog
from beamline_ls.config import load_settings
from beamline_ls.session import make_session

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def test_a_moved_data_directory_reads_its_frames_in_their_new_place(tmp_path):
    here = tmp_path / "acquisition"
    session = make_session(load_settings(data_dir=here, prefix="MOVED:"),
                           progress_bar=False, run_files=False)
    try:
        uid, docs = _fly_run(session.settings.frames_dir / "fly.h5")
        for name, doc in docs:
            session.catalog_feed(name, doc)
        assert session.catalog_feed.flush(30)
        written = session.catalog[uid]["primary"]["image"].read()
        means = session.catalog[uid]["summary"].read()["mean"].values.tolist()
    finally:
        session.close()

    there = tmp_path / "analysis-disk" / "lightsheet"
    shutil.copytree(here, there)
    shutil.rmtree(here)  # moved: nothing is left where the catalog says the files are
    run = open_catalog(there)[uid]
    assert np.array_equal(run["primary"]["image"].read(), written)
    assert run["primary"]["image"][4].sum() == written[4].sum()
    # the event streams too, read by a process that never saw the old place: their
    # tables are in the catalog's own storage, which it recorded under the old
    # directory (every read and export of them failed)
    import subprocess
    import sys

    script = ("import sys; from beamline_ls import open_catalog\n"
              "run = open_catalog(sys.argv[1])[sys.argv[2]]\n"
              "print(run['summary'].read()['mean'].values.tolist())\n")
    done = subprocess.run([sys.executable, "-c", script, str(there), uid],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(means) == "[1.0, 2.0, 1.0, 2.0]"


def test_a_script_that_opens_the_catalog_prints_nothing_of_its_own(tmp_path):
    """A data user's script that opens the embedded catalog and reads it leaves its
    stdout and stderr to the script: no server banner, no log lines at exit."""
    import subprocess
    import sys

    open_catalog(tmp_path, create=True)
    script = ("from beamline_ls import open_catalog\n"
              f"cat = open_catalog({str(tmp_path)!r})\n"
              "print(len(cat))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "0\n"
    assert done.stderr == ""
