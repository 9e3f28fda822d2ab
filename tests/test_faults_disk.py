"""A disk that fills during a capture, on a real (small) tmpfs.

What a user must get: the capture ends with a reason that says the disk is full and how
many frames were stored and lost; every frame written before is readable, bit exact;
the counts are in the file; no reserve file is left; and the next capture works once
space is freed, without restarting anything. Mounting needs root (CI runs as root).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline_ls.frame import Frame
from beamline_ls.pipeline import diskspace
from beamline_ls.pipeline.diskspace import DiskFullError
from beamline_ls.pipeline.recorder import Recorder

SHAPE = (256, 256)  # 128 KiB frames


def mount_tmpfs(where: Path, size_mb: int, options: str = "") -> Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where.mkdir(parents=True, exist_ok=True)
    opts = f"size={size_mb}m,mode=0755" + (f",{options}" if options else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return where


def unmount(where: Path) -> None:
    # lazy: a process that still holds a file open must not keep the test from ending
    subprocess.run(["umount", "-l", str(where)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", 16)
    yield disk
    unmount(disk)


def image(k: int) -> np.ndarray:
    """A frame whose every pixel says which frame it is (checks bit-exact storage)."""
    rng = np.random.default_rng(k)
    return rng.integers(0, 65535, SHAPE, dtype=np.uint16)


def frame(k: int) -> Frame:
    return Frame(image(k), k, 0.01 * k, 0.001, 40.0)


def wait_until(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem has no space left (another program filling
    the disk)."""
    path = directory / "filler.bin"
    block = b"\0" * (1 << 16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, block)
    except OSError as exc:
        assert diskspace.is_disk_full(exc)
    finally:
        os.close(fd)
    return path


def assert_readable(path: Path, written: int, lost: int) -> None:
    with h5py.File(path, "r") as f:
        data = f["/entry/data/data"]
        ids = f["/entry/meta/frame_id"][...]
        attrs = dict(f["entry"].attrs)
        assert data.shape[0] == written
        assert ids.tolist() == list(range(written))
        for k in (0, written // 2, written - 1):
            np.testing.assert_array_equal(data[k], image(k))
    assert attrs["frames_written"] == written
    assert attrs["frames_lost"] == lost
    assert "disk full" in attrs["error"]


def test_a_flush_that_meets_a_full_disk_loses_no_frame_number_once_room_is_made(
        small_disk):
    """Another program fills the disk while the writer is idle; its next flush (the
    frames' metadata block) fails. Under CI load the capture's own idle flush met the
    full disk: the flush had forgotten the rows of the datasets it had written, the
    close failed ("Can't broadcast (0,) -> (10,)"), and even a flush that HDF5 then
    called successful left the frame numbers unwritten. With room made (the capture
    gives back its reserve), closing stores every row."""
    from beamline_ls.pipeline.hdf5_writer import FrameFileWriter

    writer = FrameFileWriter(small_disk / "run.h5", SHAPE, flush_every=1000)
    for k in range(10):
        writer.write(frame(k))
    filler = fill(small_disk)
    with pytest.raises(Exception, match="No space left on device"):  # noqa: B017
        writer.flush()
    os.truncate(filler, filler.stat().st_size - (2 << 20))  # room to close in
    writer.close({"frames_written": 10, "frames_lost": 0, "error": "disk full"})
    assert_readable(small_disk / "run.h5", 10, 0)


def test_a_capture_larger_than_the_disk_stops_cleanly_and_keeps_every_frame(small_disk):
    n = 300  # 37.5 MiB of frames on a 16 MiB disk
    rec = Recorder(buffer_frames=n)
    rec.start(small_disk / "run.h5", SHAPE, n_frames=n)
    for k in range(n):
        rec.submit(frame(k))
    wait_until(lambda: not rec.capturing)
    st = rec.status
    assert st.error.startswith("disk full")
    assert 20 < st.frames_written < n
    assert st.frames_lost == n - st.frames_written
    assert f"{st.frames_written} of {n} frames stored, {st.frames_lost} lost" in st.error
    assert_readable(small_disk / "run.h5", st.frames_written, st.frames_lost)
    assert sorted(p.name for p in small_disk.iterdir()) == ["run.h5"]  # no reserve left

    (small_disk / "run.h5").unlink()  # space freed: the next capture just works
    rec.start(small_disk / "next.h5", SHAPE, n_frames=20)
    for k in range(20):
        rec.submit(frame(k))
    wait_until(lambda: not rec.capturing)
    assert rec.status.error == "" and rec.status.frames_written == 20


def test_a_disk_filled_by_someone_else_mid_write_still_leaves_a_readable_file(
        small_disk, monkeypatch):
    """The free-space check cannot see a disk filled between the check and the write;
    then HDF5 itself fails, and the reserve is what lets the file close readable."""
    monkeypatch.setattr(diskspace.SpaceGuard, "check", lambda self: None)
    n = 100
    rec = Recorder(buffer_frames=n)
    rec.start(small_disk / "run.h5", SHAPE, n_frames=n)
    for k in range(10):
        rec.submit(frame(k))
    wait_until(lambda: rec.status.frames_written == 10)
    filler = fill(small_disk)
    for k in range(10, n):
        rec.submit(frame(k))
    wait_until(lambda: not rec.capturing)
    st = rec.status
    assert st.error.startswith("disk full: no space left in")
    assert st.frames_written >= 10
    assert_readable(small_disk / "run.h5", st.frames_written, n - st.frames_written)

    filler.unlink()
    (small_disk / "run.h5").unlink()
    rec.start(small_disk / "next.h5", SHAPE, n_frames=5)
    for k in range(5):
        rec.submit(frame(k))
    wait_until(lambda: not rec.capturing)
    assert rec.status.error == "" and rec.status.frames_written == 5


def test_a_capture_on_a_full_disk_is_refused_before_any_file_exists(small_disk):
    fill(small_disk)
    with pytest.raises(DiskFullError, match="disk full: .* free in .*needs at least"):
        Recorder().start(small_disk / "run.h5", SHAPE, n_frames=10)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin"]


def test_a_capture_on_a_small_read_only_disk_is_refused_for_what_it_is(tmp_path):
    """A 1 MiB read-only disk: too small and not writable. The refusal said "disk
    full", which sends the user to delete files instead of remounting."""
    disk = mount_tmpfs(tmp_path / "ro", 1, "ro")
    try:
        with pytest.raises(PermissionError, match="file path not writable: .*read-only"):
            Recorder().start(disk / "run.h5", SHAPE, n_frames=10)
    finally:
        unmount(disk)


def day_directory(scope) -> Path:
    """Where today's scans write: the plans' date directory in the IOC's data root."""
    from plans.common import file_name_for

    return Path(scope.camera.hdf.data_root.get(use_monitor=False)) / file_name_for("x")[0]


@pytest.fixture
def full_day_directory(scope):
    """A 16 MiB disk mounted where today's scans write; earlier files there are
    hidden only while it is mounted."""
    disk = mount_tmpfs(day_directory(scope), 16)
    yield disk
    unmount(disk)


@pytest.fixture
def read_only_day_directory(scope):
    disk = mount_tmpfs(day_directory(scope), 16, "ro")
    yield disk
    unmount(disk)


def test_a_scan_into_a_read_only_directory_fails_before_it_opens_a_run(
        scope, session, read_only_day_directory):
    from plans import planar_scan

    session.flush()
    runs = len(session.catalog)
    with pytest.raises(RuntimeError) as failed:
        session.RE(planar_scan(scope.camera, scope.scanboard, 10, 40.0, 0.002))
    assert f"file path not writable: {read_only_day_directory}" in str(failed.value)
    session.flush()
    assert len(session.catalog) == runs  # no empty failed run left behind


def test_a_scan_that_fills_the_disk_fails_with_the_real_cause(scope, session,
                                                             full_day_directory):
    """Through the real IOC and plan: the exception and the stop document say the
    disk is full and what was stored and lost; the file holds every stored frame;
    WriteStatus/LostFrames tell EPICS clients; the next scan works once space is freed."""
    from plans import planar_scan

    cam, hdf = scope.camera, scope.camera.hdf
    n = 300  # 128 KiB frames: ~37 MiB
    with pytest.raises(RuntimeError) as failed:
        session.RE(planar_scan(cam, scope.scanboard, n, 40.0, 0.002))
    message = str(failed.value)
    session.flush()
    stop = session.catalog[-1].metadata["stop"]
    stored = int(hdf.num_captured.get(use_monitor=False))
    lost = int(hdf.lost_frames.get(use_monitor=False))

    assert "disk full" in message and f"{stored} of {n} frames stored" in message
    assert stop["exit_status"] == "fail" and "disk full" in stop["reason"]
    assert hdf.write_status.get(use_monitor=False) == "Write error"
    assert "disk full" in hdf.write_message.get(use_monitor=False)
    assert 20 < stored < n and lost == n - stored
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        assert f["/entry/data/data"].shape[0] == stored
        assert (f["/entry/meta/frame_id"][...] >= 0).all()
        assert f["entry"].attrs["frames_lost"] == lost

    path.unlink()
    result = session.RE(planar_scan(cam, scope.scanboard, 10, 40.0, 0.002))
    assert result.exit_status == "success"
    assert hdf.write_status.get(use_monitor=False) == "Write OK"
    assert int(hdf.lost_frames.get(use_monitor=False)) == 0


def test_a_run_the_catalog_cannot_store_fails_loudly(scope, small_disk, prefix):
    """The data directory's disk is full (another program filled it): the scan itself
    raises with the real error instead of ending 'success' into nothing, as it opens
    its run (before anything is acquired), naming the stores and the space left."""
    from beamline_ls.config import load_settings
    from beamline_ls.session import make_session
    from plans import planar_scan

    session = make_session(load_settings(data_dir=small_disk / "data", prefix=prefix),
                           progress_bar=False, run_files=False)
    try:
        session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        filler = fill(small_disk)
        stored = len(session.catalog)
        captured = int(scope.camera.hdf.num_captured.get(use_monitor=False))
        with pytest.raises(RuntimeError) as failed:
            session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        message = str(failed.value)
        assert message.startswith("no run was started: the run's scan_id and marks "
                                  f"cannot be written: {small_disk / 'data'}"), message
        assert "MiB free, a run needs at least 8 MiB" in message
        assert f"the catalog cannot be written: {small_disk / 'data' / 'catalog'}" in message
        assert len(session.catalog) == stored  # no run that ended in nothing
        assert int(scope.camera.hdf.num_captured.get(use_monitor=False)) == captured
        assert scope.camera.cam.detector_state.get(use_monitor=False) == "Idle"
        filler.unlink()
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        assert result.exit_status == "success"
        ids = [session.catalog[uid].start["scan_id"] for uid in list(session.catalog)]
        assert len(ids) == len(set(ids)) == stored + 1
    finally:
        session.close()


def test_room_held_past_a_files_end_is_written_after_the_disk_fills(small_disk):
    """What keeps HDF5 off a full disk (`RoomPastEnd`): the blocks held past the end
    take writes after another program filled the disk, without showing in the file's
    size; topping the room up then says the disk is full; release gives the unused
    blocks back."""
    from beamline_ls.pipeline.diskspace import MiB, RoomPastEnd

    path = small_disk / "file.h5"
    path.write_bytes(b"h" * 4096)
    room = RoomPastEnd(path, 2 * MiB)
    room.hold()
    assert path.stat().st_size == 4096
    filler = fill(small_disk)
    with open(path, "ab") as f:  # as HDF5 appends its next objects
        f.write(b"m" * MiB)
        f.flush()
        os.fsync(f.fileno())
    with pytest.raises(DiskFullError):
        room.hold()
    free_before = diskspace.free_bytes(small_disk)
    room.release()
    assert path.stat().st_size == 4096 + MiB
    assert diskspace.free_bytes(small_disk) - free_before >= MiB - 64 * 1024
    filler.unlink()


@contextlib.contextmanager
def session_on_a_small_disk(tmp_path: Path, prefix: str, store: str, size_mb: int):
    """A session whose ``store`` (a Settings directory: ``runs_dir``, ``catalog_dir``)
    is a ``size_mb`` tmpfs; yields ``(settings, disk, session, filled, fill_the_disk)``:
    subscribed, ``fill_the_disk`` fills that disk at the next descriptor (another
    program filling it while the run writes) and appends the filler to ``filled``."""
    from beamline_ls.config import load_settings
    from beamline_ls.session import make_session

    settings = load_settings(data_dir=tmp_path / "data", prefix=prefix)
    settings.ensure_dirs()
    disk = mount_tmpfs(getattr(settings, store), size_mb)
    session = make_session(settings, progress_bar=False)
    filled: list[Path] = []

    def fill_the_disk(name: str, doc: dict) -> None:
        if name == "descriptor" and not filled:
            filled.append(fill(disk))

    try:
        yield settings, disk, session, filled, fill_the_disk
    finally:
        session.close()
        unmount(disk)


def test_a_disk_filled_under_a_run_file_leaves_it_closed_and_the_run_in_the_catalog(
        scope, tmp_path, prefix):
    """Another program fills the run files' disk while a scan writes its run file.
    Before, HDF5 crashed the whole session (segmentation fault in the run file's
    flush, the RunEngine with it). Now the scan ends with the cause and the command
    that writes the file again, the catalog has every frame, the run file reads back
    marked incomplete with the cause, and once there is room that command makes it
    whole; the next scan's file is written as usual."""
    from beamline_ls.cli import main as cli_main
    from plans import planar_scan

    with session_on_a_small_disk(tmp_path, prefix, "runs_dir", 9) as (
            settings, disk, session, filled, fill_the_disk):
        session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        token = session.RE.subscribe(fill_the_disk)
        with pytest.raises(RuntimeError) as failed:
            session.RE(planar_scan(scope.camera, scope.scanboard, 300, 100.0, 0.002))
        session.RE.unsubscribe(token)
        message = str(failed.value)
        run = session.catalog[-1]
        scan_id = run.metadata["start"]["scan_id"]
        path = next(disk.rglob(f"{scan_id}-*.h5"))
        assert "the run file stopped being written: disk full" in message, message
        command = f"beamline-ls export {scan_id} --to {path} --overwrite"
        assert command in message
        assert run["primary"]["camera_image"].shape[0] == 300  # the run itself is whole
        with h5py.File(path, "r") as f:
            assert f.attrs["exit_status"] == "incomplete"
            assert "disk full" in f.attrs["reason"]

        export = command.split()[1:] + ["--catalog", str(settings.data_dir)]
        assert cli_main(export) == 2  # still full: refused, the incomplete file kept
        with h5py.File(path, "r") as f:
            assert f.attrs["exit_status"] == "incomplete"
        filled[0].unlink()
        assert cli_main(export) == 0
        with h5py.File(path, "r") as f:
            assert f.attrs["exit_status"] == "success"
            assert f["streams/primary/data/camera_image"].shape[0] == 300
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        assert result.exit_status == "success"
        session.flush()
        with h5py.File(next(disk.rglob(f"{scan_id + 1}-*.h5")), "r") as f:
            assert f.attrs["exit_status"] == "success"


def test_a_run_the_catalogs_full_disk_cut_short_is_closed_once_storing_works_again(
        scope, tmp_path, prefix):
    """Another program fills the catalog's disk while a scan runs: the scan ends with
    the real cause, saying what the catalog lacks. Once there is room, the next scan
    is stored, and the run cut short is closed as failed with that cause; before, it
    showed in the catalog as running until another session started."""
    from plans import planar_scan, volumetric_scan

    with session_on_a_small_disk(tmp_path, prefix, "catalog_dir", 12) as (
            settings, disk, session, filled, fill_the_disk):
        session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        token = session.RE.subscribe(fill_the_disk)
        with pytest.raises(RuntimeError) as failed:
            session.RE(volumetric_scan(scope.camera, scope.scanboard, 10, 10, 20.0, 60.0,
                                       5.0))
        session.RE.unsubscribe(token)
        message = str(failed.value)
        assert "failed to reach the catalog" in message and "disk is full" in message
        uid = message.split()[1]
        assert session.catalog[uid].metadata.get("stop") is None  # its end was lost

        filled[0].unlink()
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
        assert result.exit_status == "success"
        stop = session.catalog[uid].metadata["stop"]
        assert stop["exit_status"] == "fail"
        assert "its end could not be stored in the catalog" in stop["reason"]
        assert "disk is full" in stop["reason"]
        assert not (settings.state_dir / "open-runs" / f"{uid}.json").exists()


@pytest.mark.parametrize("initialised", [False, True])
def test_an_ioc_on_a_read_only_data_directory_is_refused_in_one_line(tmp_path, initialised):
    """``beamline-ls ioc`` on a read-only data directory, empty or one a session had
    set up: one line naming the folder and the cause, exit status 2 (it printed a
    Python traceback of the first write)."""
    import sys

    disk = mount_tmpfs(tmp_path / "ro", 4, "" if initialised else "ro")
    try:
        if initialised:
            for sub in ("frames", "catalog", "state"):
                (disk / sub).mkdir()
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EPICS_")}
        out = subprocess.run([sys.executable, "-m", "beamline_ls.cli", "ioc", "--data-dir",
                              str(disk), "--prefix", "ROTEST:"],
                             capture_output=True, text=True, timeout=120, env=env)
    finally:
        unmount(disk)
    said = out.stderr.strip()
    assert out.returncode == 2, said
    assert "Traceback" not in said, said
    expected = (f"{disk}/frames is not writable (a read-only file system)" if initialised
                else f"{disk}/frames cannot be created (Read-only file system)")
    assert said.endswith(expected), said
    assert len(said.splitlines()) == 1, said


def test_a_session_on_a_read_only_data_directory_a_session_had_set_up_says_so(tmp_path):
    """A session (the profile) started on a data directory remounted read-only after
    an earlier session: refused naming the folder and the cause (it failed with
    sqlite's "unable to open database file" from the scan-id store)."""
    import sys

    from beamline_ls.config import load_settings
    from beamline_ls.session import make_session

    disk = mount_tmpfs(tmp_path / "ro", 16)
    try:
        # an earlier session set it up (in a process of its own: its catalog keeps
        # its files open until the process ends)
        subprocess.run([sys.executable, "-c", "import sys; from beamline_ls.config import "
                        "load_settings; from beamline_ls.session import make_session; "
                        "make_session(load_settings(data_dir=sys.argv[1])).close()",
                        str(disk)], check=True, timeout=120, capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(RuntimeError) as refused:
            make_session(load_settings(data_dir=disk))
    finally:
        unmount(disk)
    assert str(refused.value) == (f"the data directory {disk} cannot be used: "
                                  f"{disk}/catalog is not writable (a read-only file system)")


def test_stores_on_a_read_only_disk_are_named_before_a_run_opens(tmp_path):
    """What the session checks as a plan opens its run: every store it writes during
    the run, each named with why it cannot be written."""
    from beamline_ls.config import load_settings
    from beamline_ls.store_check import store_problems

    disk = mount_tmpfs(tmp_path / "ro", 16)
    try:
        settings = load_settings(data_dir=disk)
        settings.ensure_dirs()
        assert store_problems(settings) == []
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        problems = store_problems(settings)
    finally:
        unmount(disk)
    assert problems == [
        f"the run's scan_id and marks cannot be written: {settings.state_dir} is "
        "read-only or not permitted",
        f"the catalog cannot be written: {settings.catalog_dir} is read-only or not "
        "permitted",
        f"the run files cannot be written: {disk} is read-only or not permitted"]
