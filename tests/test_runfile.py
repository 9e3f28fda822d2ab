"""Issue 6: every run also as one self-describing HDF5 file (live and exported).

Runs real scans against the simulated IOC (conftest fixtures), reads the run files
with plain h5py, and compares them with the catalog and with exported files.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline_ls.runfile import InvalidDocumentError, RunFileWriter, default_run_path
from beamline_ls.runfile.encode import read_attrs
from beamline_ls.runfile.export import export_run
from beamline_ls.runfile.export import main as export_main
from beamline_ls.runfile.runfile import PROVENANCE_ATTRS

META = ("frame_id", "timestamp", "z", "plane", "volume")


class Recorder:
    """Keeps the raw documents the RunEngine emitted (the truth to compare with)."""

    def __init__(self):
        self.docs: list[tuple[str, dict]] = []

    def __call__(self, name, doc):
        self.docs.append((name, doc))

    def of(self, name):
        return [d for n, d in self.docs if n == name]


def _run(session, plan):
    rec = Recorder()
    token = session.RE.subscribe(rec)
    try:
        result = session.RE(plan)
    finally:
        session.RE.unsubscribe(token)
    session.flush()
    start = rec.of("start")[0]
    path = default_run_path(session.settings.data_dir / "runs", start)
    return result, rec, path


@pytest.fixture(scope="module")
def volumetric(scope, session):
    from plans import volumetric_scan

    return _run(session, volumetric_scan(scope.camera, scope.scanboard, 2, 6, 15.0, 70.0, 4.0,
                                         md={"sample_name": "runfile fish"}))


@pytest.fixture(scope="module")
def planar(scope, session):
    from plans import planar_scan

    return _run(session, planar_scan(scope.camera, scope.scanboard, 8, 33.0, 0.004,
                                     frame_rate=50.0, md={"sample_name": "runfile plane"}))


@pytest.fixture(scope="module")
def gated(scope, session):
    from plans import gated_scan

    return _run(session, gated_scan(scope.camera, scope.gating, scope.piezo, [30.0, 50.0],
                                    md={"sample_name": "runfile gated heart"}))


# -- helpers -------------------------------------------------------------------------------
def snapshot(path: Path) -> dict:
    """Everything in a run file that should not depend on how it was written."""
    out = {}
    with h5py.File(path, "r") as f:
        out["/"] = ("group", {k: v for k, v in read_attrs(f).items()
                              if k not in PROVENANCE_ATTRS})

        def visit(name, obj):
            attrs = read_attrs(obj)
            if "/external/" in name:  # relative paths: compare where they lead
                here = path.parent
                attrs["file"] = os.path.normpath(here / attrs["file"])
                for res in attrs["resources"]:
                    res["file"] = os.path.normpath(here / res["file"])
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", attrs, obj.shape, obj.dtype.str, obj[()])
            else:
                out[name] = ("group", attrs)

        f.visititems(visit)
    return out


def assert_same_content(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        ka, kb = a[name], b[name]
        assert ka[:2] == kb[:2], json.dumps([name, ka[1], kb[1]], default=str)[:3000]
        if ka[0] == "dataset":
            assert ka[2:4] == kb[2:4], name
            va, vb = np.asarray(ka[4]), np.asarray(kb[4])
            if va.dtype.kind in "fc":
                assert np.array_equal(va, vb, equal_nan=True), name
            else:
                assert np.array_equal(va, vb), name


def frames_from_catalog(session, uid):
    prim = session.catalog[uid]["primary"]
    return {key: prim[key].read() for key in ["camera_image"] + [f"camera_{m}" for m in META]}


# -- live files ----------------------------------------------------------------------------
def test_a_volumetric_run_file_holds_frames_metadata_and_settings(volumetric, session):
    result, rec, path = volumetric
    uid = result.run_start_uids[0]
    assert path.exists() and path.parent.parent == session.settings.data_dir / "runs"
    cat = frames_from_catalog(session, uid)
    with h5py.File(path, "r") as f:
        assert f.attrs["exit_status"] == "success" and f.attrs["uid"] == uid
        assert f.attrs["sample_name"] == "runfile fish"
        data = f["streams/primary/data"]
        img = data["camera_image"]
        assert img.shape == (2, 6, 256, 256) and img.is_virtual
        for src in img.virtual_sources():  # the camera's own file, by a relative path
            assert not os.path.isabs(src.file_name) and src.file_name.startswith("../../")
        assert np.array_equal(img[()], cat["camera_image"])
        for m in META:
            assert data[f"camera_{m}"].shape == (2, 6)
            assert np.array_equal(data[f"camera_{m}"][()], cat[f"camera_{m}"])
        assert data["camera_z"].attrs["units"] == "um"
        assert json.loads(f["start"].attrs["plan_args"])["n_planes"] == 6
        assert f["start/plan_args"].attrs["n_volumes"] == 2
        config = f["streams/primary/config/camera/data"]
        assert config["camera_cam_trigger_mode"][()].decode() == "External"
        assert "camera_cam_acquire_time" in f["streams/primary/config/camera/timestamps"]


def test_frames_through_the_links_equal_the_catalog_for_a_planar_run(planar, session):
    result, _, path = planar
    cat = frames_from_catalog(session, result.run_start_uids[0])
    with h5py.File(path, "r") as f:
        data = f["streams/primary/data"]
        assert data["camera_image"].shape == (8, 256, 256)
        assert np.array_equal(data["camera_image"][()], cat["camera_image"])
        assert np.array_equal(data["camera_timestamp"][()], cat["camera_timestamp"])
        assert np.abs(data["camera_z"][()] - 33.0).max() < 0.1


@pytest.mark.parametrize("which", ["volumetric", "planar", "gated"])
def test_live_and_exported_files_have_the_same_content(which, request, session, tmp_path):
    result, _, live = request.getfixturevalue(which)
    if which == "gated":  # the gating metadata is reachable from the run file too
        with h5py.File(live, "r") as f:
            data = f["streams/primary/data"]
            assert data["camera_true_phase"].shape == (1, 2)
            assert np.all(np.isfinite(data["camera_trigger_time"][...]))
    (tmp_path / "x").mkdir()
    exported = export_run(session.catalog[result.run_start_uids[0]], tmp_path / "x" / "run.h5")
    assert_same_content(snapshot(live), snapshot(exported))
    with h5py.File(exported, "r") as f:
        assert "(export)" in f.attrs["file_written_by"]


def test_the_run_file_is_nexus_that_silx_plots(volumetric, planar):
    """h5web, silx and DAWN open the file at its NeXus default: the frames as the
    signal with a coordinate per frame axis (z in um per plane; time in s)."""
    from silx.io.nxdata import get_default

    for (_, rec, path), axes in ((volumetric, ["volume", "z", None, None]),
                                 (planar, ["time", None, None])):
        with h5py.File(path, "r") as f:
            assert f.attrs["NX_class"] == "NXroot"
            nx = get_default(f)
            assert nx is not None and nx.is_valid, path
            assert nx.signal_name == "camera_image"
            frames = f["streams/primary/data/camera_image"]
            assert nx.signal.shape == frames.shape
            assert np.array_equal(nx.signal[-1], frames[-1])
            assert nx.axes_dataset_names == axes
            entry = f["entry"]
            assert entry["title"][()].decode().endswith(rec.of("start")[0]["sample_name"])
            assert entry["entry_identifier"][()].decode() == rec.of("start")[0]["uid"]
            if axes[1] == "z":
                z = nx.axes[1]
                assert nx.axes[1].attrs["units"] == "um"
                assert np.allclose(z, np.linspace(15.0, 70.0, 6), atol=2.0), z[()]
            else:
                t = nx.axes[0][()]
                assert t[0] == 0 and np.all(np.diff(t) > 0)
                assert np.allclose(np.diff(t), 1 / 50.0, rtol=0.2), t


def test_every_start_stop_and_descriptor_field_lands_in_the_file(volumetric):
    _, rec, path = volumetric
    (start,), (stop,), descriptors = rec.of("start"), rec.of("stop"), rec.of("descriptor")

    def check_doc(group, doc):
        attrs = read_attrs(group)
        for key, value in doc.items():
            assert key in attrs, f"{group.name}: {key}"
            assert attrs[key] == json.loads(json.dumps(value)), f"{group.name}: {key}"
            if isinstance(value, dict):  # nested dicts also as subgroups
                assert isinstance(group[key], h5py.Group), f"{group.name}/{key}"
                check_doc(group[key], value)

    with h5py.File(path, "r") as f:
        check_doc(f["start"], start)
        assert isinstance(f["start"]["settings"]["camera"], h5py.Group)
        check_doc(f["stop"], stop)
        assert json.loads(f["start"].attrs["document"]) == json.loads(json.dumps(start))
        for desc in descriptors:
            g = f["streams"][desc["name"]]
            stream_attrs = read_attrs(g)
            for key in set(desc) - {"data_keys", "configuration"}:
                assert stream_attrs[key] == json.loads(json.dumps(desc[key])), key
            for key, spec in desc["data_keys"].items():
                got = read_attrs(g["data"][key])
                for field, value in spec.items():
                    assert got[field] == json.loads(json.dumps(value)), (key, field)
            for device, conf in desc["configuration"].items():
                dg = g["config"][device]
                for key, value in conf["data"].items():
                    stored = dg["data"][key][()]
                    stored = stored.decode() if isinstance(stored, bytes) else stored
                    assert np.all(np.asarray(stored) == np.asarray(value)), key
                    assert dg["timestamps"][key][()] == conf["timestamps"][key]
                    for field, v in conf["data_keys"][key].items():
                        assert read_attrs(dg["data"][key])[field] == json.loads(json.dumps(v))


def test_moving_the_whole_data_folder_keeps_the_frames_reachable(volumetric, settings,
                                                                 tmp_path):
    _, _, path = volumetric
    moved = tmp_path / "moved"
    shutil.copytree(settings.data_dir, moved, ignore=shutil.ignore_patterns("catalog", "logs"))
    copy = moved / path.relative_to(settings.data_dir)
    with h5py.File(path, "r") as f:
        original = f["streams/primary/data/camera_image"][()]
        camera_file = f["streams/primary/external/camera_image"].attrs["file"]
    # Mark the COPIED camera file: reading the moved run file must show the mark.
    with h5py.File(copy.parent / camera_file, "r+") as cam:
        cam["/entry/data/data"][0, 0, 0, 0] = 4242
    with h5py.File(copy, "r") as f:
        frames = f["streams/primary/data/camera_image"][()]
    assert frames[0, 0, 0, 0] == 4242
    assert np.array_equal(frames.ravel()[1:], original.ravel()[1:])


FRESH_READER = textwrap.dedent("""
    import json, sys
    for banned in ("beamline_ls", "bluesky", "ophyd", "tiled", "databroker", "event_model"):
        sys.modules[banned] = None   # importing any of them now fails
    import h5py, numpy as np
    with h5py.File(sys.argv[1], "r") as f:
        img = f["streams/primary/data/camera_image"]
        meta = f["streams/primary/data"]
        print(json.dumps({
            "shape": list(img.shape),
            "mean": float(img[1].mean()),
            "z": meta["camera_z"][()].tolist(),
            "volume": meta["camera_volume"][()].tolist(),
            "sample": f.attrs["sample_name"],
            "sample_in_start": f["start"].attrs["sample_name"],
            "plan_args": json.loads(f["start"].attrs["plan_args"]),
            "exit": f["stop"].attrs["exit_status"],
        }))
""")


def test_a_fresh_process_reads_the_file_with_only_h5py_and_numpy(volumetric, tmp_path):
    _, rec, path = volumetric
    out = subprocess.run([sys.executable, "-c", FRESH_READER, str(path)], capture_output=True,
                         text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    data = json.loads(out.stdout.strip().splitlines()[-1])
    assert data["shape"] == [2, 6, 256, 256]
    assert data["mean"] > 100  # real frames, not the fill value of a broken link
    assert data["volume"] == [[0] * 6, [1] * 6]
    assert np.abs(np.array(data["z"]) - np.array(rec.of("start")[0]["plane_z_um"])).max() < 1
    assert data["sample"] == data["sample_in_start"] == "runfile fish"
    assert data["plan_args"]["n_volumes"] == 2 and data["exit"] == "success"


# -- failures ------------------------------------------------------------------------------
FOLLOWER = textwrap.dedent("""
    import json, sys, h5py
    with h5py.File(sys.argv[1], "r", locking=False) as f:
        print(json.dumps({"exit": f.attrs["exit_status"], "stop": "stop" in f,
                          "shape": list(f["streams/primary/data/camera_image"].shape)}))
""")


class DatumWatch:
    """Remembers the start document and whether a StreamDatum has been emitted."""

    def __init__(self):
        self.start: dict | None = None
        self.datum = False

    def __call__(self, name, doc):
        if name == "start":
            self.start = doc
        elif name == "stream_datum":
            self.datum = True


def _fail_after_first_datum(plan, session, watch, peeks):
    """Forward ``plan``; once a StreamDatum was emitted, read the live run file from
    another process, then throw an error into the plan (as a failing device would)."""
    reply, exc, injected = None, None, False
    while True:
        try:
            msg = plan.throw(exc) if exc is not None else plan.send(reply)
        except StopIteration as stop:
            return stop.value
        exc = None
        try:
            reply = yield msg
        except GeneratorExit:
            plan.close()
            raise
        except BaseException as err:
            exc = err
            continue
        if watch.datum and not injected:
            injected = True
            session.flush()
            path = default_run_path(session.settings.data_dir / "runs", watch.start)
            out = subprocess.run([sys.executable, "-c", FOLLOWER, str(path)],
                                 capture_output=True, text=True, timeout=60)
            peeks.append(out.stdout + out.stderr)
            exc = RuntimeError("injected failure after kickoff")


def test_a_run_failing_after_kickoff_leaves_a_consistent_file(scope, session):
    from plans import volumetric_scan

    watch, peeks = DatumWatch(), []
    token = session.RE.subscribe(watch)
    try:
        # long enough (50 s) that the failure, thrown once the follower has read the
        # file, always lands mid-run: 12 volumes (3 s) were all taken by then on a
        # loaded CI machine
        plan = volumetric_scan(scope.camera, scope.scanboard, 200, 6, 15.0, 70.0, 4.0,
                               md={"sample_name": "failing"})
        with pytest.raises(RuntimeError, match="injected failure"):
            session.RE(_fail_after_first_datum(plan, session, watch, peeks))
    finally:
        session.RE.unsubscribe(token)
    session.flush()
    follower = json.loads(peeks[0].strip().splitlines()[-1])
    assert follower["exit"] == "running" and not follower["stop"]  # read while running
    assert follower["shape"][0] >= 1
    path = default_run_path(session.settings.data_dir / "runs", watch.start)
    cat = session.catalog[watch.start["uid"]]["primary"]["camera_image"].read()
    with h5py.File(path, "r") as f:
        assert f.attrs["exit_status"] == "fail" == f["stop"].attrs["exit_status"]
        assert "injected failure" in f["stop"].attrs["reason"]
        img = f["streams/primary/data/camera_image"]
        assert 1 <= img.shape[0] < 200 and img.shape[1:] == (6, 256, 256)
        assert np.array_equal(img[()], cat)
        ids = f["streams/primary/data/camera_frame_id"][()]
    # whole volumes, then the volume the failure cut short (its planes never taken are
    # holes, -1, as in the frame file)
    assert np.all(ids[:-1] >= 0)
    n = int(np.count_nonzero(ids[-1] >= 0))
    assert n >= 1 and np.all(ids[-1][:n] >= 0) and np.all(ids[-1][n:] == -1), ids[-1]


def _pausing_plan(det):
    import bluesky.plan_stubs as bps

    yield from bps.open_run(md={"sample_name": "paused then aborted"})
    yield from bps.trigger_and_read([det])
    yield from bps.pause()
    yield from bps.trigger_and_read([det])
    yield from bps.close_run()


def test_an_aborted_run_file_says_aborted_and_why(session, tmp_path):
    from bluesky.utils import RunEngineInterrupted
    from conftest import plain_detector
    det = plain_detector()

    rec = Recorder()
    token = session.RE.subscribe(rec)
    try:
        with pytest.raises(RunEngineInterrupted):
            session.RE(_pausing_plan(det))
        session.RE.abort(reason="operator saw the fish move")
    finally:
        session.RE.unsubscribe(token)
    session.flush()
    start = rec.of("start")[0]
    path = default_run_path(session.settings.data_dir / "runs", start)
    with h5py.File(path, "r") as f:
        assert f.attrs["exit_status"] == "abort" == f["stop"].attrs["exit_status"]
        assert f.attrs["reason"] == "operator saw the fish move"
        assert f["streams/primary/data/det"].shape == (1,)
        assert f["streams/primary/timestamps/det"].shape == (1,)
        assert f["streams/primary/seq_num"][()].tolist() == [1]
    exported = export_run(session.catalog[start["uid"]], tmp_path / "aborted.h5")
    assert_same_content(snapshot(path), snapshot(exported))


# -- validation and the command line ------------------------------------------------------
def test_an_invalid_document_is_refused_with_a_clear_error(tmp_path):
    writer = RunFileWriter(tmp_path)
    with pytest.raises(InvalidDocumentError, match=r"invalid start document .*'time'"):
        writer("start", {"uid": "abc"})
    with pytest.raises(InvalidDocumentError, match=r"stream_datum.*indices"):
        writer("stream_datum", {"uid": "x", "stream_resource": "y", "descriptor": "z",
                                "seq_nums": {"start": 1, "stop": 2}})
    with pytest.raises(InvalidDocumentError, match="unknown document type"):
        writer("bogus", {})
    assert not list(tmp_path.rglob("*.h5"))
    writer("start", {"uid": "abcdef0123", "time": 1.0e9, "scan_id": 7})
    writer("stop", {"uid": "s1", "time": 1.0e9 + 1, "run_start": "abcdef0123",
                    "exit_status": "success"})
    (made,) = tmp_path.rglob("*.h5")
    assert made.name == "7-abcdef01.h5"


def test_export_command_finds_runs_and_refuses_to_overwrite(planar, session, tmp_path,
                                                            caplog):
    from beamline_ls.cli import main as cli_main

    result, rec, _ = planar
    uid, scan_id = result.run_start_uids[0], rec.of("start")[0]["scan_id"]
    target = tmp_path / "planar.h5"
    data_dir = str(session.settings.data_dir)
    assert cli_main(["export", str(scan_id), "--catalog", data_dir, "--to", str(target)]) == 0
    with h5py.File(target, "r") as f:
        assert f.attrs["uid"] == uid
    before = target.stat().st_mtime_ns
    assert export_main([uid[:8], "--catalog", data_dir, "--to", str(target)]) == 2
    assert "exists" in caplog.text and target.stat().st_mtime_ns == before
    assert export_main([uid[:8], "--catalog", data_dir, "--to", str(target),
                        "--overwrite"]) == 0
    with h5py.File(target, "r") as f:
        assert f.attrs["uid"] == uid
    assert export_main(["nosuchrun", "--catalog", data_dir, "--to",
                        str(tmp_path / "none.h5")]) == 2
    assert not (tmp_path / "none.h5").exists()
    # a mistyped folder is refused, not made
    caplog.clear()
    assert export_main([uid[:8], "--catalog", data_dir, "--to",
                        str(tmp_path / "typo" / "dir" / "planar.h5")]) == 2
    assert "typo/dir is not a directory" in caplog.text
    assert not (tmp_path / "typo").exists()


def test_a_run_file_copied_alone_is_refused_naming_its_missing_frame_files(volumetric,
                                                                           tmp_path):
    from beamline_ls.runfile import embed_frames, open_run_file

    _, _, path = volumetric
    with open_run_file(path) as f:  # in its data folder: every frame file is there
        assert f["streams/primary/data/camera_image"][0].any()
    alone = tmp_path / "mailed" / path.name
    alone.parent.mkdir()
    shutil.copy2(path, alone)
    with h5py.File(alone, "r") as f:
        frame_file = f["streams/primary/external/camera_image"].attrs["file"]
    with pytest.raises(FileNotFoundError, match="--embed") as err:
        open_run_file(alone)
    assert Path(frame_file).name in str(err.value)
    before = alone.read_bytes()
    with pytest.raises(FileNotFoundError, match="missing"):
        embed_frames(alone)
    assert alone.read_bytes() == before  # refused before changing anything


def test_plain_h5py_shows_a_run_file_without_its_frame_files_as_unmistakably_missing(
        volumetric, tmp_path):
    """HDF5 itself cannot fail on a missing source file, so what plain h5py (and h5web,
    silx) read there must not look like frames: white, not black, and said so."""
    _, _, path = volumetric
    alone = tmp_path / "mailed" / path.name
    alone.parent.mkdir()
    shutil.copy2(path, alone)
    with h5py.File(path, "r") as f:  # in its data folder, for comparison
        real = f["streams/primary/data/camera_image"][0]
    with h5py.File(alone, "r") as f:
        image = f["streams/primary/data/camera_image"]
        read = image[0]
        note = image.attrs["missing_frames_read_as"]
        nx_signal = f["entry/data/camera_image"][0]
    top = np.iinfo(read.dtype).max
    assert (real < top).any()
    assert (read == top).all(), "a missing frame file must not read as plausible frames"
    assert (nx_signal == top).all()  # the NeXus view NeXus readers plot, likewise
    assert str(top) in note and "missing" in note


def test_export_embed_writes_a_file_that_carries_its_frames(volumetric, session, tmp_path):
    from silx.io.nxdata import get_default

    from beamline_ls.runfile import open_run_file

    result, _, _ = volumetric
    uid = result.run_start_uids[0]
    target = tmp_path / "export" / "embedded.h5"
    target.parent.mkdir()
    assert export_main([uid, "--catalog", str(session.settings.data_dir), "--to",
                        str(target), "--embed"]) == 0
    alone = tmp_path / "elsewhere" / "embedded.h5"  # nothing beside it
    alone.parent.mkdir()
    shutil.move(target, alone)
    expected = frames_from_catalog(session, uid)
    with open_run_file(alone) as f:
        virtual = []
        f.visititems(lambda n, o: virtual.append(n)
                     if isinstance(o, h5py.Dataset) and o.is_virtual else None)
        assert virtual == []
        data = f["streams/primary/data"]
        assert np.array_equal(data["camera_image"][()], expected["camera_image"])
        for m in META:
            assert np.array_equal(data[f"camera_{m}"][()], expected[f"camera_{m}"]), m
        assert data["camera_image"].fletcher32
        assert "missing_frames_read_as" not in data["camera_image"].attrs
        nx = get_default(f)
        assert nx.is_valid and nx.signal.shape == expected["camera_image"].shape


def test_export_names_frame_files_that_are_missing_or_damaged(scope, session, tmp_path,
                                                              caplog):
    """Export says when the frames it links to are gone (exit 1, the file named); with
    --embed a missing or damaged frame file fails naming the file and what to do."""
    from beamline_ls.pipeline.hdf5_writer import DATA_PATH
    from beamline_ls.runfile.verify import virtual_sources
    from plans import planar_scan

    result, _, path = _run(session, planar_scan(scope.camera, scope.scanboard, 6, 33.0,
                                                0.004, frame_rate=50.0))
    uid, data_dir = result.run_start_uids[0], str(session.settings.data_dir)
    (frame_file,) = virtual_sources(path)
    original = frame_file.read_bytes()
    aside = frame_file.with_name(frame_file.name + ".aside")
    try:
        frame_file.rename(aside)
        caplog.clear()
        assert export_main([uid, "--catalog", data_dir, "--to", str(tmp_path / "a.h5")]) == 1
        assert f"frame file {frame_file} is missing" in caplog.text
        assert "1 frame file(s) it reads are missing" in caplog.text
        caplog.clear()
        assert export_main([uid, "--catalog", data_dir, "--to", str(tmp_path / "b.h5"),
                            "--embed"]) == 2
        assert str(frame_file) in caplog.text and "Restore them" in caplog.text
        assert not (tmp_path / "b.h5").exists()
        aside.rename(frame_file)
        with h5py.File(frame_file, "r") as f:  # damage the first frame's chunk
            offset = f[DATA_PATH].id.get_chunk_info(0).byte_offset
        with open(frame_file, "r+b") as f:
            f.seek(offset + 64)
            f.write(bytes(64))
        caplog.clear()
        assert export_main([uid, "--catalog", data_dir, "--to", str(tmp_path / "c.h5"),
                            "--embed"]) == 2
        assert f"frame file {frame_file} is damaged" in caplog.text
    finally:
        if aside.exists():
            aside.rename(frame_file)
        frame_file.write_bytes(original)
