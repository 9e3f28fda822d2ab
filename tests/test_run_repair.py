"""A RunEngine process that dies mid-run leaves its run open and, when it died between
two data keys' StreamDatum requests, with keys of different lengths, which
``run["primary"].read()`` refuses. The next session closes such a run: keys evened up
from the frame file, a stop document that says it failed and why."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
from conftest import PREFIX, private_tmpdir

# a session's run-file writer in a process that dies in the run (no stop, nothing closed)
RUN_FILE_OF_A_PROCESS_THAT_DIES = r"""
import json, os, sys
from beamline_ls.runfile.writer import RunFileWriter
writer = RunFileWriter(sys.argv[1])
for name, doc in json.load(open(sys.argv[2])):
    if name != "stop":
        writer(name, doc)
os._exit(0)
"""

MARK_IN_A_PROCESS_THAT_ENDS = r"""
import json, sys
from beamline_ls.run_repair import RunMarks
marks = RunMarks(sys.argv[1])
start = json.loads(sys.argv[2])
marks("start", start)
if sys.argv[3]:  # its session could not store the run's end, and said why
    marks.note_unstored(start["uid"], sys.argv[3])
"""
UNSTORED = ("run 1 is not fully stored: the catalog writer failed on 2 document(s): "
            "(sqlite3.OperationalError) database or disk is full")


def _replayed_without_its_end(docs, catalog):
    """The run's documents written to ``catalog`` as a RunEngine that died would have:
    without the stop, and with the last StreamDatum of ``camera_timestamp`` cut to half
    its rows (or left out when it has one). Cut, not dropped: a scan whose frames all
    came in one collect (a loaded machine) has only one, and without it the key is
    missing instead of short."""
    from bluesky_tiled_plugins import TiledWriter

    key_of = {d["uid"]: d["data_key"] for n, d in docs if n == "stream_resource"}
    last = max(i for i, (n, d) in enumerate(docs) if n == "stream_datum"
               and key_of[d["stream_resource"]] == "camera_timestamp")
    writer = TiledWriter(catalog, batch_size=1)
    for i, (name, doc) in enumerate(docs):
        if name == "stop":
            continue
        if i == last:
            doc = copy.deepcopy(doc)
            keep = (doc["indices"]["stop"] - doc["indices"]["start"]) // 2
            if keep == 0:
                continue
            doc["indices"]["stop"] = doc["indices"]["start"] + keep
            doc["seq_nums"]["stop"] = doc["seq_nums"]["start"] + keep
        writer(name, doc)


def _replayed_short(docs, catalog, with_stop: bool) -> None:
    """The run's documents written to ``catalog`` without the last rows of every key
    (each key's last StreamDatum cut to half its rows, or left out when it has one
    row and others before it): what the catalog holds when the process that collected
    died before its last collect, or when a write of the last rows failed."""
    from bluesky_tiled_plugins import TiledWriter

    last = {}
    for i, (name, doc) in enumerate(docs):
        if name == "stream_datum":
            last[doc["stream_resource"]] = i
    writer = TiledWriter(catalog, batch_size=1)
    for i, (name, doc) in enumerate(docs):
        if name == "stop" and not with_stop:
            continue
        if i in last.values():
            doc = copy.deepcopy(doc)
            rows = doc["indices"]["stop"] - doc["indices"]["start"]
            if rows == 1 and doc["indices"]["start"] > 0:
                continue
            keep = max(rows // 2, 1)
            doc["indices"]["stop"] = doc["indices"]["start"] + keep
            doc["seq_nums"]["stop"] = doc["seq_nums"]["start"] + keep
        writer(name, doc)


def _catalog_of_its_own(settings, tmp_path):
    """(settings, catalog) of a data directory under ``tmp_path`` whose catalog reads
    the frame files of the module's scan (written under ``settings``)."""
    from beamline_ls.catalog import allow_reading_from, open_embedded_catalog
    from beamline_ls.config import load_settings

    here = load_settings(data_dir=tmp_path / "data", prefix=PREFIX)
    here.ensure_dirs()
    catalog, tree = open_embedded_catalog(here, create=True)
    allow_reading_from(tree, settings.frames_dir)
    return here, catalog


@pytest.fixture(scope="module")  # read only: one scan serves every test here
def scan_documents(scope, session):
    from plans import volumetric_scan

    docs = []
    session.RE(volumetric_scan(scope.camera, scope.scanboard, 3, 4, 10.0, 40.0, 2.0),
               lambda name, doc: docs.append((name, copy.deepcopy(doc))))
    return docs


@pytest.mark.parametrize("ended", ["died", "unstored"])
def test_a_run_left_open_by_a_dead_process_is_closed_readable_and_marked_failed(
        scan_documents, settings, tmp_path, ended):
    """``unstored``: the process lived to the run's end, but the end did not reach
    the catalog (a full disk); the run is closed later with that cause, not as if
    its process had died."""
    from beamline_ls.catalog import allow_reading_from, open_embedded_catalog
    from beamline_ls.config import load_settings
    from beamline_ls.run_repair import RunMarks, close_abandoned_runs
    from beamline_ls.session import make_session

    scan_documents = copy.deepcopy(scan_documents)  # shared by the module's tests
    here = load_settings(data_dir=tmp_path / "data", prefix=PREFIX)
    here.ensure_dirs()
    catalog, tree = open_embedded_catalog(here, create=True)
    allow_reading_from(tree, settings.frames_dir)  # the frame files of the real scan
    _replayed_without_its_end(scan_documents, catalog)
    start = scan_documents[0][1]
    run = catalog[start["uid"]]
    # the fault, as a crash leaves it
    assert run["primary"]["camera_timestamp"].shape[0] < run["primary"]["camera_image"].shape[0]
    with pytest.raises(ValueError, match="different left-most dimensions"):
        run["primary"].read()

    # marked by this process, which lives: not touched
    marks = RunMarks(here.state_dir / "open-runs")
    marks("start", start)
    assert close_abandoned_runs(catalog, marks) == []
    assert catalog[start["uid"]].metadata.get("stop") is None
    marks("stop", {"run_start": start["uid"]})  # let go of it

    # its run file, as the dead process left it: "running"
    dumped = tmp_path / "docs.json"
    dumped.write_text(json.dumps(scan_documents, default=lambda o: o.tolist()))
    died = subprocess.run([sys.executable, "-c", RUN_FILE_OF_A_PROCESS_THAT_DIES,
                           str(here.runs_dir), str(dumped)],
                          capture_output=True, text=True, timeout=120,
                          env=private_tmpdir(tmp_path))
    assert died.returncode == 0, died.stderr
    (run_file,) = here.runs_dir.rglob("*.h5")
    with h5py.File(run_file, "r") as f:
        assert f.attrs["exit_status"] == "running"

    # marked by a process that has ended: the next session closes it
    writer = subprocess.run([sys.executable, "-c", MARK_IN_A_PROCESS_THAT_ENDS,
                             str(here.state_dir / "open-runs"),
                             json.dumps({"uid": start["uid"], "time": start["time"]}),
                             UNSTORED if ended == "unstored" else ""],
                            capture_output=True, text=True, timeout=120)
    assert writer.returncode == 0, writer.stderr
    make_session(here, progress_bar=False, run_files=False).close()

    run = catalog[start["uid"]]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail"
    if ended == "unstored":
        assert stop["reason"].startswith("the run ended, but its end could not be stored "
                                         f"in the catalog ({UNSTORED}; process ")
    else:
        assert "ended without closing the run" in stop["reason"]
    assert stop["num_events"]["primary"] == 3
    # the summary stream is counted too (it was left out: only streams of frames were)
    assert stop["num_events"]["summary"] == len(run["summary"].read()["time"]) > 0
    data = run["primary"].read()
    assert data["camera_image"].shape[:2] == (3, 4)
    assert data["camera_timestamp"].shape == (3, 4)
    path = [d for n, d in scan_documents if n == "stream_resource"][0]["uri"]
    with h5py.File(path.removeprefix("file://localhost"), "r", swmr=True) as f:
        np.testing.assert_array_equal(data["camera_timestamp"].values,
                                      f["/entry/meta/timestamp"][:12].reshape(3, 4))
        np.testing.assert_array_equal(data["camera_image"].values,
                                      f["/entry/data/data"][:12].reshape(data["camera_image"].shape))
    assert not list((here.state_dir / "open-runs").glob("*.json"))
    # and its run file says the same (it said "running" for good)
    with h5py.File(run_file, "r") as f:
        assert f.attrs["exit_status"] == "fail"
        assert f.attrs["reason"] == stop["reason"]
        assert json.loads(f["stop"].attrs["document"])["uid"] == stop["uid"]
        assert f["entry"].attrs["NX_class"] == "NXentry"


def test_rows_the_files_got_after_the_process_died_join_the_closed_run(
        scan_documents, settings, tmp_path):
    """The session died before its last collect while the IOC finished the capture:
    the files hold every volume, the catalog had the run without the last ones. The
    next session closes it with every volume its files hold (they stayed in the frame
    file only, 4 of 20 volumes in the catalog against 20 on disk)."""
    from beamline_ls.run_repair import RunMarks, close_abandoned_runs

    docs = copy.deepcopy(scan_documents)
    here, catalog = _catalog_of_its_own(settings, tmp_path)
    _replayed_short(docs, catalog, with_stop=False)
    start = docs[0][1]
    short = catalog[start["uid"]]["primary"]["camera_image"].shape[0]
    assert short < 3

    marks = RunMarks(here.state_dir / "open-runs")
    ended = subprocess.run([sys.executable, "-c", MARK_IN_A_PROCESS_THAT_ENDS,
                            str(marks.directory),
                            json.dumps({"uid": start["uid"], "time": start["time"]}), ""],
                           capture_output=True, text=True, timeout=120)
    assert ended.returncode == 0, ended.stderr
    assert close_abandoned_runs(catalog, marks) == [start["uid"]]
    run = catalog[start["uid"]]
    assert run.metadata["stop"]["num_events"]["primary"] == 3
    data = run["primary"].read()
    path = [d for n, d in docs if n == "stream_resource"][0]["uri"]
    with h5py.File(path.removeprefix("file://localhost"), "r", swmr=True) as f:
        np.testing.assert_array_equal(data["camera_frame_id"].values,
                                      f["/entry/meta/frame_id"][:12].reshape(3, 4))
        np.testing.assert_array_equal(data["camera_image"].values,
                                      f["/entry/data/data"][:12].reshape(
                                          data["camera_image"].shape))


def test_a_stored_success_is_marked_failed_when_its_session_found_rows_missing(
        scan_documents, settings, tmp_path):
    """The catalog took the stop ("success") but not the last collect's rows (a write
    that failed mid-run, the disk full for a moment): the session raised and noted why
    in the run's mark; once storing works, the run says failed with that cause, its
    rows what its files hold (it said success of a run the catalog did not hold)."""
    from beamline_ls.run_repair import RunMarks

    docs = copy.deepcopy(scan_documents)
    here, catalog = _catalog_of_its_own(settings, tmp_path)
    _replayed_short(docs, catalog, with_stop=True)
    start, stored = docs[0][1], docs[-1][1]
    assert catalog[start["uid"]].metadata["stop"]["exit_status"] == "success"

    marks = RunMarks(here.state_dir / "open-runs")
    marks("start", start)
    marks.note_unstored(start["uid"], "run 1 is not fully stored: primary lacks rows")
    assert marks.close_unstored(catalog) == [start["uid"]]
    run = catalog[start["uid"]]
    stop = run.metadata["stop"]
    assert stop["exit_status"] == "fail" and "primary lacks rows" in stop["reason"]
    assert (stop["uid"], stop["time"]) == (stored["uid"], stored["time"])
    assert stop["num_events"]["primary"] == 3
    assert run["primary"].read()["camera_image"].shape[:2] == (3, 4)


def test_a_mark_that_cannot_be_written_does_not_stop_the_run(tmp_path, caplog):
    """The state directory is unusable (here: a file took its place): the run goes on,
    and the log says a crash in it would not be cleaned up."""
    from beamline_ls.run_repair import RunMarks

    marks = RunMarks(tmp_path / "open-runs")
    (tmp_path / "open-runs").rmdir()
    (tmp_path / "open-runs").write_text("not a directory")
    marks("start", {"uid": "u1", "time": 0.0})
    marks("stop", {"run_start": "u1"})
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"]
    assert "the next session would not close it" in caplog.records[0].getMessage()
