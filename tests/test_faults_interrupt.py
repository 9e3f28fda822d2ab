"""One Ctrl-C during a scan pauses it at the next volume boundary, as bluesky's
RunEngine documents for any plan: the scan board finishes the volume in progress and
stops, every frame so far is on disk, and ``RE.resume()`` finishes the scan while
``RE.abort()`` ends it with what was stored. The Ctrl-C is a real SIGINT to this
process, handled by the RunEngine's own handler."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from bluesky.utils import RunEngineInterrupted
from conftest import wait_for

# 5 s of volumes: the Ctrl-C comes after the third (before the tenth), and the pause must
# land (at the next checkpoint, up to ~1 s later) well before the last one even on a
# loaded machine
N_VOLUMES, N_PLANES, RATE = 25, 10, 5.0


@pytest.fixture(autouse=True)
def never_left_paused(session):
    """A failed test must not leave the shared RunEngine paused for the next ones."""
    yield
    if session.RE.state == "paused":
        session.RE.abort("test cleanup")


def when(condition, action, timeout: float = 60.0) -> threading.Thread:
    """Call ``action()`` once ``condition()`` holds (never otherwise), polled from a
    thread of its own while the RunEngine runs the plan on this one. A read that fails
    (a CA get timing out on a loaded machine) counts as not yet: asked again."""
    def run():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                due = condition()
            except Exception:  # noqa: BLE001 - the next poll asks again
                due = False
            if due:
                action()
                return
            time.sleep(0.005)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def ctrl_c_when(condition, timeout: float = 60.0) -> threading.Thread:
    """Send one SIGINT to this process once ``condition()`` holds (never otherwise:
    a SIGINT outside a run would stop the test session itself)."""
    return when(condition, lambda: os.kill(os.getpid(), signal.SIGINT), timeout)


def pause_a_volumetric_scan(scope, session):
    """Run a 5 s volumetric scan, Ctrl-C once after its third volume; return the
    volumes done when it paused and the frame file."""
    from plans import volumetric_scan

    board, hdf = scope.scanboard, scope.camera.hdf
    # on the board's own volume count as its monitor brings it (reset to 0 as this scan
    # starts; a count left from an earlier scan does not change, so does not fire):
    # polling it with gets on a loaded machine missed the 1.4 s window, and the scan
    # ran to its end without a Ctrl-C
    sent = threading.Event()

    def on_count(value, **_):
        if not sent.is_set() and session.RE.state == "running" and 3 <= int(value) < 10:
            sent.set()
            os.kill(os.getpid(), signal.SIGINT)

    token = board.volumes_done.subscribe(on_count, run=False)
    try:
        with pytest.raises(RunEngineInterrupted):
            session.RE(volumetric_scan(scope.camera, board, N_VOLUMES, N_PLANES, 20.0,
                                       60.0, RATE))
    finally:
        board.volumes_done.unsubscribe(token)
    assert sent.is_set()
    assert session.RE.state == "paused"
    assert int(board.paused.get(use_monitor=False)) == 1
    assert int(board.running.get(use_monitor=False)) == 0
    done = int(board.volumes_done.get(use_monitor=False))
    assert 3 <= done < N_VOLUMES
    # the board stopped on a volume boundary: whole volumes, and nothing of the next
    wait_for(lambda: int(hdf.num_captured.get(use_monitor=False)) == done * N_PLANES,
             what=f"{done * N_PLANES} frames captured (have "
                  f"{int(hdf.num_captured.get(use_monitor=False))}, board at "
                  f"{int(board.volumes_done.get(use_monitor=False))})")
    time.sleep(1.0)  # > 5 volume periods: a running board would have added frames
    assert int(hdf.num_captured.get(use_monitor=False)) == done * N_PLANES
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r", swmr=True) as f:  # on disk while paused
        ids = f["/entry/meta/frame_id"][:done].ravel()
        np.testing.assert_array_equal(ids, np.arange(done * N_PLANES))
        assert f["/entry/data/data"][done - 1].shape[0] == N_PLANES
    return done, path


def test_one_ctrl_c_pauses_at_a_volume_boundary_and_resume_finishes_the_scan(scope,
                                                                             session):
    done, path = pause_a_volumetric_scan(scope, session)
    result = session.RE.resume()
    assert result.exit_status == "success", result.reason
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert int(scope.scanboard.volumes_done.get(use_monitor=False)) == N_VOLUMES
    with h5py.File(path, "r") as f:
        ids = f["/entry/meta/frame_id"][...].ravel()
        stamps = f["/entry/meta/timestamp"][...].ravel()
        assert f["/entry/data/data"].shape[:2] == (N_VOLUMES, N_PLANES)
    np.testing.assert_array_equal(ids, np.arange(N_VOLUMES * N_PLANES))
    # one gap, where the pause was; regular planes elsewhere
    gaps = np.diff(stamps)
    k = done * N_PLANES - 1
    assert gaps[k] > 0.5 and np.all(np.delete(gaps, k) < 0.5)


def test_abort_after_a_pause_keeps_what_was_stored(scope, session):
    from plans import planar_scan

    done, path = pause_a_volumetric_scan(scope, session)
    result = session.RE.abort("operator stopped the scan")
    assert result.exit_status == "abort"
    session.flush()
    stop = session.catalog[result.run_start_uids[0]].metadata["stop"]
    assert stop["exit_status"] == "abort"
    assert int(scope.scanboard.running.get(use_monitor=False)) == 0
    wait_for(lambda: int(scope.camera.hdf.capture.get(use_monitor=False)) == 0,
             what="the capture to close")
    with h5py.File(path, "r") as f:
        ids = f["/entry/meta/frame_id"][...].ravel()
    np.testing.assert_array_equal(ids[: done * N_PLANES], np.arange(done * N_PLANES))
    # the catalog holds every volume the file holds, not only those collected before
    # the pause
    frames = session.catalog[result.run_start_uids[0]]["primary"]["camera_image"]
    assert frames.shape[:2] == (ids.size // N_PLANES, N_PLANES), (done, ids.tolist())
    # the microscope is ready for the next scan
    after = session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
    assert after.exit_status == "success"


def test_one_ctrl_c_pauses_a_planar_scan_at_a_frame_boundary(scope, session):
    """The free-running camera stops after the frame in progress; on resume it takes
    the frames left, which follow the earlier ones in the same file."""
    from plans import planar_scan

    n = 250  # 5 s at 50 Hz
    cam, hdf = scope.camera, scope.camera.hdf
    sender = ctrl_c_when(lambda: session.RE.state == "running"
                         and 40 <= int(hdf.num_captured.get(use_monitor=False)) < 150)
    with pytest.raises(RunEngineInterrupted):
        session.RE(planar_scan(cam, scope.scanboard, n, 40.0, 0.002, frame_rate=50.0))
    sender.join(5)
    assert session.RE.state == "paused"
    assert cam.cam.detector_state.get(use_monitor=False) == "Idle"
    wait_for(lambda: int(hdf.num_captured.get(use_monitor=False)) > 0)
    time.sleep(0.5)
    stored = int(hdf.num_captured.get(use_monitor=False))
    time.sleep(1.0)  # 50 frame periods: a running camera would have added frames
    assert int(hdf.num_captured.get(use_monitor=False)) == stored < n
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r", swmr=True) as f:  # on disk while paused
        assert f["/entry/data/data"].shape[0] == stored

    result = session.RE.resume()
    assert result.exit_status == "success", result.reason
    with h5py.File(path, "r") as f:
        data = f["/entry/data/data"]
        stamps = f["/entry/meta/timestamp"][...]
        ids = f["/entry/meta/frame_id"][...].ravel()
        assert data.shape[0] == n
        assert data[n - 1].max() > 0 and data[stored].max() > 0  # no holes
    # the camera's frame numbers go on across the pause: none taken twice (the first
    # frame after resume once got the last one's before the pause)
    np.testing.assert_array_equal(ids, np.arange(n))
    gaps = np.diff(stamps)
    assert np.all(gaps > 0)  # every frame after the one before it
    assert np.sum(gaps > 0.5) == 1  # one pause


@pytest.mark.parametrize("pause", ["one Ctrl-C", "immediate"])
def test_a_pause_as_a_planar_scan_starts_pauses_its_camera(scope, session, pause):
    """A pause while the scan starts (here: as the camera is kicked off). One Ctrl-C
    takes effect at the plan's first checkpoint, before it asks the camera for
    completion; an immediate pause (two Ctrl-C) lands while the camera starts. The
    camera paused only a capture being completed, so it took every frame while the
    RunEngine sat paused. It stops now, and resume takes the frames left."""
    from plans import planar_scan

    n = 250  # 5 s at 50 Hz
    cam, hdf = scope.camera, scope.camera.hdf
    seen: list[str] = []
    kicked = threading.Event()

    def hook(msg) -> None:
        seen.append(msg.command)
        if msg.command == "kickoff" and msg.obj is cam:
            kicked.set()

    # what bluesky's SIGINT handler asks of the RunEngine on a first and a second
    # Ctrl-C, asked directly: a real SIGINT sent at this moment once took no effect
    # before the 5 s scan had ended in CI (no pause was acknowledged)
    sender = when(kicked.is_set, lambda: session.RE.request_pause(
        defer=pause == "one Ctrl-C"))
    previous, session.RE.msg_hook = session.RE.msg_hook, hook
    try:
        with pytest.raises(RunEngineInterrupted):
            session.RE(planar_scan(cam, scope.scanboard, n, 40.0, 0.002, frame_rate=50.0))
    finally:
        session.RE.msg_hook = previous
    sender.join(5)
    assert session.RE.state == "paused"
    assert "complete" not in seen  # paused where it was meant to: before completion
    wait_for(lambda: cam.cam.detector_state.get(use_monitor=False) == "Idle", 30,
             "the camera stopped for the pause")
    time.sleep(0.5)
    stored = int(hdf.num_captured.get(use_monitor=False))
    time.sleep(1.0)  # 50 frame periods: a running camera would have added frames
    assert int(hdf.num_captured.get(use_monitor=False)) == stored < n

    result = session.RE.resume()
    assert result.exit_status == "success", result.reason
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        assert f["/entry/data/data"].shape[0] == n
        np.testing.assert_array_equal(f["/entry/meta/frame_id"][...].ravel(), np.arange(n))


@pytest.fixture
def gating_off(scope, session):
    """After the test, whatever happened: the scan ended, then gating switched off (the
    shared IOC's analyzer must not run on into the next tests)."""
    yield scope.gating
    if session.RE.state == "paused":
        session.RE.abort("test cleanup")
    scope.gating.enable.set("Off").wait(10)


def pause_a_gated_scan(scope, session, planes: list[float], passes: int, least: int,
                       most: int, pause=None, also=lambda: True, subs=()) -> None:
    """Run a gated scan (documents also to ``subs``) and pause it once ``least <=
    frames stored < most`` and ``also()``: with one SIGINT (a Ctrl-C), or by calling
    ``pause()``. Returns with the RunEngine paused."""
    from plans import gated_scan

    hdf = scope.camera.hdf

    def due() -> bool:
        return (session.RE.state == "running"
                and least <= int(hdf.num_captured.get(use_monitor=False)) < most and also())

    sender = when(due, pause, timeout=120) if pause else ctrl_c_when(due, timeout=120)
    with pytest.raises(RunEngineInterrupted):
        session.RE(gated_scan(scope.camera, scope.gating, scope.piezo, planes,
                              frames_per_plane=passes), *subs)
    sender.join(5)
    assert session.RE.state == "paused"


def test_one_ctrl_c_pauses_a_gated_scan_before_the_next_plane(scope, session, gating_off):
    planes, passes = [30.0, 50.0, 70.0], 4
    hdf = scope.camera.hdf
    pause_a_gated_scan(scope, session, planes, passes, 1, 6)
    time.sleep(1.0)
    stored = int(hdf.num_captured.get(use_monitor=False))
    time.sleep(1.5)  # several heartbeats: no gated trigger while paused
    assert int(hdf.num_captured.get(use_monitor=False)) == stored < len(planes) * passes
    result = session.RE.resume()
    assert result.exit_status == "success", result.reason
    assert int(hdf.num_captured.get(use_monitor=False)) == len(planes) * passes


def test_a_gated_movie_aborted_after_a_pause_keeps_every_frame_taken(scope, session,
                                                                     gating_off):
    """One plane, frames one gated trigger apart: a Ctrl-C pauses at the checkpoint
    after the trigger in progress, before its frame is collected; an abort then must
    still put that frame into the catalog, as the file has it."""
    hdf = scope.camera.hdf
    pause_a_gated_scan(scope, session, [50.0], 30, 2, 10)
    result = session.RE.abort("operator ended the movie")
    assert result.exit_status == "abort"
    wait_for(lambda: int(hdf.capture.get(use_monitor=False)) == 0,
             what="the capture to close")
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        stored = f["/entry/data/data"].shape[0]
    session.flush()
    frames = session.catalog[result.run_start_uids[0]]["primary"]["camera_image"]
    assert 2 <= stored < 30
    assert frames.shape[0] == stored


def test_a_gated_stack_aborted_mid_pass_keeps_that_pass_in_the_run(scope, session,
                                                                   gating_off):
    """Four planes, three passes, aborted after an immediate pause (two Ctrl-C, the
    probe's case; one Ctrl-C pauses at the same checkpoint) part-way through a pass: the
    frames of that pass are in the file and must be in the run too, the planes not
    taken as holes (frame_id -1), as for frames lost. (Only whole passes were
    collected: 7 frames on disk left none in the catalog.)"""
    planes, passes = [30.0, 45.0, 60.0, 75.0], 3
    hdf = scope.camera.hdf
    gating = scope.gating
    # counted by the triggers this run fired: the writer's count is the last
    # capture's until this one's first refresh
    starts, fired_before = [], []

    def note_start(name, doc):
        if name == "start":
            starts.append(doc["uid"])
            fired_before.append(int(gating.fired.get(use_monitor=False)))

    def fired() -> int:
        return int(gating.fired.get(use_monitor=False)) - fired_before[0] if starts else 0

    pause_a_gated_scan(scope, session, planes, passes, 0, 10**6,
                       pause=lambda: session.RE.request_pause(defer=False),
                       also=lambda: 5 <= fired() < 7, subs=[note_start])
    result = session.RE.abort("operator ended the stack")
    assert result.exit_status == "abort"
    wait_for(lambda: int(hdf.capture.get(use_monitor=False)) == 0,
             what="the capture to close")
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        on_disk = f["/entry/meta/frame_id"][...]
    taken = on_disk[on_disk >= 0]
    assert 5 <= taken.size < len(planes) * passes and taken.size % len(planes), on_disk
    session.flush()
    run = session.catalog[starts[0]]
    ids = np.asarray(run["primary"]["camera_frame_id"].read())
    assert ids.shape == (-(-taken.size // len(planes)), len(planes))
    np.testing.assert_array_equal(ids, on_disk)
    frames = np.asarray(run["primary"]["camera_image"].read())
    assert all(frames[v, p].max() > 0 for v, p in np.argwhere(ids >= 0))


def test_an_immediate_pause_during_a_gated_trigger_takes_no_plane_twice(scope, session,
                                                                        gating_off):
    """Paused at once while a trigger waits for its heart phase, then held for several
    heartbeats: resume replays that trigger, so it must not have fired meanwhile. One
    trigger per frame asked for, no more."""
    gating, hdf = scope.gating, scope.camera.hdf
    n = 8
    fired_before = []  # at the start document: enabling the gating resets the count

    def count_fired(name, doc):
        if name == "start":
            fired_before.append(int(gating.fired.get(use_monitor=False)))

    pause_a_gated_scan(scope, session, [50.0], n, 2, n - 2,
                       pause=lambda: session.RE.request_pause(defer=False),
                       also=lambda: int(gating.armed.get(use_monitor=False)) > 0,
                       subs=[count_fired])
    time.sleep(1.5)  # several heartbeats
    result = session.RE.resume()
    assert result.exit_status == "success", result.reason
    assert int(gating.fired.get(use_monitor=False)) - fired_before[0] == n
    assert int(hdf.num_captured.get(use_monitor=False)) == n


@pytest.mark.parametrize("then", ["resume", "abort and scan again"])
def test_an_immediate_pause_after_a_trigger_fired_takes_no_plane_twice(scope, session,
                                                                      gating_off, then):
    """Paused at once just after a trigger fired, while its exposure runs (the trigger
    is done only when the exposure is over): its frame was taken, and resume replays
    that trigger. A probe through the queue server found a stack stored as 'success'
    with z = 40 taken twice and its last plane never taken. Every plane once, in
    order; and a run aborted there instead leaves the next scan's first trigger to
    fire as any other."""
    from plans import gated_scan

    gating, hdf = scope.gating, scope.camera.hdf
    planes = [30.0, 40.0, 50.0, 60.0, 70.0]
    fired_at_start: list[int] = []

    def count_fired(name, doc):
        if name == "start":  # enabling the gating resets the count: read it here
            fired_at_start.append(int(gating.fired.get(use_monitor=False)))

    def second_fired() -> bool:  # polled: the IOC publishes the count within 50 ms
        return (session.RE.state == "running" and bool(fired_at_start)
                and int(gating.fired.get(use_monitor=False)) >= fired_at_start[0] + 2)

    sender = when(second_fired, lambda: session.RE.request_pause(defer=False),
                  timeout=120)
    with pytest.raises(RunEngineInterrupted):
        # the longest gated exposure: the trigger stays in flight 50 ms after it fired
        session.RE(gated_scan(scope.camera, gating, scope.piezo, planes, exposure=0.05),
                   count_fired)
    sender.join(5)
    assert session.RE.state == "paused"
    time.sleep(1.0)  # a few heartbeats
    if then == "resume":
        result = session.RE.resume()
    else:
        session.RE.abort("the test scans again")
        fired_at_start.clear()
        result = session.RE(gated_scan(scope.camera, gating, scope.piezo, planes,
                                       exposure=0.05), count_fired)
    assert result.exit_status == "success", result.reason
    assert int(gating.fired.get(use_monitor=False)) - fired_at_start[0] == len(planes)
    assert int(hdf.num_captured.get(use_monitor=False)) == len(planes)
    with h5py.File(Path(hdf.full_file_name.get(use_monitor=False)), "r") as f:
        z = f["/entry/meta/z_um"][...].ravel()
    np.testing.assert_allclose(z, planes, atol=0.5)


@pytest.mark.parametrize("moment", ["starting", "mid-scan"])
def test_an_immediate_pause_resumes_to_every_volume(scope, session, moment):
    """Paused at once, wherever the RunEngine is: while the scan starts (before its
    first checkpoint, where resume used to replay the whole set-up and end 'fail' on
    the board's refusal to prepare while running) or mid-scan (where the replayed wait
    used to end the scan at once, 'success' with the volumes collected so far while
    the board went on). The hardware pauses on a volume boundary, and resume takes
    every volume into the file and the catalog."""
    from plans import volumetric_scan

    board, hdf = scope.scanboard, scope.camera.hdf
    least = 0 if moment == "starting" else 3 * N_PLANES
    # an immediate pause: what a second Ctrl-C asks for
    sender = when(lambda: session.RE.state == "running"
                  and int(board.running.get(use_monitor=False)) == 1
                  and least <= int(hdf.num_captured.get(use_monitor=False)) < 10 * N_PLANES
                  and int(hdf.capture.get(use_monitor=False)),
                  lambda: session.RE.request_pause(defer=False))
    with pytest.raises(RunEngineInterrupted):
        session.RE(volumetric_scan(scope.camera, board, N_VOLUMES, N_PLANES, 20.0, 60.0,
                                   RATE))
    sender.join(5)
    assert session.RE.state == "paused"
    wait_for(lambda: int(board.paused.get(use_monitor=False)) == 1, what="the board paused")
    done = int(board.volumes_done.get(use_monitor=False))
    assert done < N_VOLUMES
    wait_for(lambda: int(hdf.num_captured.get(use_monitor=False)) == done * N_PLANES,
             what=f"{done * N_PLANES} frames captured")

    result = session.RE.resume()
    assert result.exit_status == "success", result.reason
    assert int(board.volumes_done.get(use_monitor=False)) == N_VOLUMES
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        ids = f["/entry/meta/frame_id"][...].ravel()
    np.testing.assert_array_equal(ids, np.arange(N_VOLUMES * N_PLANES))
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    frames = run["primary"]["camera_image"]
    assert frames.shape[:2] == (N_VOLUMES, N_PLANES)


def test_an_immediate_pause_while_a_scan_starts_then_abort_keeps_its_frames(scope,
                                                                            session):
    """Paused at once while the scan starts (camera and board running, the run's
    streams not yet declared), then aborted: every volume the file holds is in the
    run. Before, the run ended with no streams at all and the ~90 frames taken
    meanwhile only in the file."""
    from plans import volumetric_scan

    board, hdf = scope.scanboard, scope.camera.hdf

    def pause_as_the_streams_are_declared(msg) -> None:
        if msg.command == "declare_stream" and not asked:
            asked.append(msg)
            # from another thread, as Ctrl-C's handler asks; it lands during this
            # message, which the RunEngine holds up while frames are taken
            threading.Thread(target=session.RE.request_pause, kwargs={"defer": False},
                             daemon=True).start()
            time.sleep(1.0)

    asked: list = []
    session.RE.msg_hook = pause_as_the_streams_are_declared
    try:
        with pytest.raises(RunEngineInterrupted):
            session.RE(volumetric_scan(scope.camera, board, N_VOLUMES, N_PLANES, 20.0,
                                       60.0, RATE))
    finally:
        session.RE.msg_hook = None
    assert session.RE.state == "paused"
    session.RE.abort()  # as typed at the prompt: no reason given
    session.flush()
    run = session.catalog[-1]
    with h5py.File(Path(hdf.full_file_name.get(use_monitor=False)), "r") as f:
        on_disk = int((f["/entry/meta/frame_id"][...] >= 0).sum())
    assert run.metadata["stop"]["exit_status"] == "abort"
    # the run still says why it ended (bluesky stored an empty reason)
    assert run.metadata["stop"]["reason"] == "aborted at the prompt (abort)"
    assert on_disk >= N_PLANES  # the pause came after frames were taken
    frames = run["primary"]["camera_image"]
    assert frames.shape[0] == -(-on_disk // N_PLANES)  # every volume, whole or cut short
    assert np.asarray(frames[-1]).max() > 0


def test_a_timelapse_pauses_within_its_interval_and_resumes_on_schedule(scope, session):
    """A gated time-lapse spends most of its time waiting between stacks. One Ctrl-C
    there pauses within about a second, not at the end of the interval (a single long
    sleep held the pause until the next plane); an immediate pause there resumes
    without taking the last plane again (it rewound to before that plane's trigger),
    and the next stack still starts on schedule."""
    from plans import gated_timelapse

    planes, interval = [40.0, 60.0], 6.0
    hdf = scope.camera.hdf
    captured = lambda: int(hdf.num_captured.get(use_monitor=False))  # noqa: E731
    try:
        sent: list[float] = []
        sender = when(lambda: session.RE.state == "running" and captured() == 2,
                      lambda: (sent.append(time.monotonic()),
                               os.kill(os.getpid(), signal.SIGINT)), timeout=120)
        with pytest.raises(RunEngineInterrupted):
            session.RE(gated_timelapse(scope.camera, scope.gating, scope.piezo, planes,
                                       n_timepoints=3, interval_s=interval))
        took = time.monotonic() - sent[0]
        sender.join(5)
        assert session.RE.state == "paused" and captured() == 2
        assert took < interval / 2, f"the pause took {took:.1f} s to land"

        # the second stack: paused at once while waiting for the third (the last
        # message the RunEngine took is a sleep)
        last = [""]
        session.RE.msg_hook = lambda msg: last.__setitem__(0, msg.command)
        sender = when(lambda: session.RE.state == "running" and captured() == 4
                      and last[0] == "sleep",
                      lambda: session.RE.request_pause(defer=False), timeout=120)
        with pytest.raises(RunEngineInterrupted):
            session.RE.resume()
        sender.join(5)
        assert session.RE.state == "paused"
        time.sleep(1.0)
        assert captured() == 4
        result = session.RE.resume()
        assert result.exit_status == "success", result.reason
        path = Path(hdf.full_file_name.get(use_monitor=False))
        with h5py.File(path, "r") as f:
            stamps = f["/entry/meta/timestamp"][...].ravel()
        assert stamps.size == 6
        # no frame between the immediate pause and the third stack's scheduled start
        # (a replayed trigger came ~1 s after the resume): two intervals after the
        # first stack's slot, which its first frame follows by less than a second. Not
        # counted from the second stack, which starts late when its new reference
        # took longer than the lead the plan allowed for it (under load, 1.8 s late)
        starts = stamps[::2]
        assert starts[2] - starts[0] > 2 * interval - 1.5, np.diff(stamps).round(2).tolist()
    finally:
        session.RE.msg_hook = None
        if session.RE.state == "paused":
            session.RE.abort()
        scope.gating.enable.set("Off").wait(10)


def test_a_completion_left_waiting_by_a_stopped_run_does_not_name_the_next_runs_file(
        scope):
    """A run stopped while paused leaves its camera completion waiting (its capture
    closed short of its frames). Its monitor callbacks went on reading the IOC: a
    Capture event after the next acquisition was prepared, before that one's file
    opened, made it record the old file (FullFileName_RBV still named it) as the new
    capture's, and the new run's frames were linked to the old run's file in the
    catalog (seen through the queue server: 5 of 40 runs). Preparing the next
    acquisition now ends the old completion, and its callbacks leave the new one alone."""
    from devices import Acquisition
    from plans.common import file_name_for

    cam = scope.camera
    directory, first = file_name_for("stopped")
    cam.prepare(Acquisition(n_frames=5000, file_name=first, trigger_mode="Internal",
                            file_path=directory)).wait(30)
    cam.kickoff().wait(30)
    left = cam.complete()
    wait_for(lambda: int(cam.hdf.num_captured.get(use_monitor=False)) > 5, 30, "frames")
    cam.cam.camera_mode.set("Abort").wait(30)
    wait_for(lambda: int(cam.hdf.capture.get(use_monitor=False)) == 0, 30, "closed")
    assert not left.done  # short of its frames: it waits, as after a stopped run

    _, second = file_name_for("next")
    cam.prepare(Acquisition(n_frames=20, file_name=second, trigger_mode="Internal",
                            file_path=directory)).wait(30)
    assert left.done and not left.success  # ended, naming why
    assert "replaced" in str(left.exception())
    cam.hdf.capture.set(0).wait(30)  # a Capture event before the new file opens
    time.sleep(0.5)  # the old callbacks (if any) have run
    cam.kickoff().wait(30)
    cam.complete().wait(60)
    docs = list(cam.collect_asset_docs())
    uris = {d["uri"] for name, d in docs if name == "stream_resource"}
    assert uris and all(second in uri for uri in uris), uris


def test_a_halted_run_leaves_the_next_scan_told_what_is_still_running(scope, session):
    """``RE.halt()`` (qserver's ``re halt``) skips every cleanup: the board stays paused
    and the camera writing. The next scan is refused before it changes anything,
    naming both; it checked only that the board was running, so with the camera
    stopped by hand the next scan waited for triggers the paused board never sent and
    failed 10 s later on "no trigger reached it"."""
    from plans import planar_scan, volumetric_scan

    pause_a_volumetric_scan(scope, session)
    session.RE.halt()
    board, cam = scope.scanboard, scope.camera
    session.flush()
    assert session.catalog[-1].metadata["stop"]["reason"] == \
        "halted at the prompt (halt): no cleanup ran"
    try:
        with pytest.raises(RuntimeError, match="another scan is using the hardware") as no:
            session.RE(planar_scan(cam, board, 5, 40.0, 0.002))
        assert "the scan board is paused" in str(no.value)
        assert "the camera is writing a file" in str(no.value)
        cam.cam.camera_mode.set("Abort").wait(30)  # the camera stopped by hand only
        wait_for(lambda: int(cam.hdf.capture.get(use_monitor=False)) == 0, 30, "closed")
        with pytest.raises(RuntimeError, match="the scan board is paused"):
            session.RE(volumetric_scan(cam, board, 2, 4, 20.0, 60.0, 2.0))
    finally:
        board.stop_cmd.set(1).wait(30)
        cam.cam.camera_mode.set("Abort").wait(30)
        wait_for(lambda: int(board.paused.get(use_monitor=False)) == 0, 30, "board idle")
    assert session.RE(planar_scan(cam, board, 5, 40.0, 0.002)).exit_status == "success"


def test_a_run_stopped_after_a_pause_has_a_summary_row_for_every_volume(scope, session):
    """The summary row of the last volume before the pause was finished only when a
    later volume began, which never came: a run stopped there had one row fewer than
    volumes (qserver's ``re stop``: 5 rows for 6 volumes, 3 times in 3)."""
    done, _ = pause_a_volumetric_scan(scope, session)
    result = session.RE.stop()
    assert result.exit_status == "success"
    session.flush()
    run = session.catalog[result.run_start_uids[0]]
    # a stopped run is stored as a success (bluesky's rule): its reason tells it from
    # a complete one
    assert run.metadata["stop"]["reason"].startswith("stopped at the prompt (stop)")
    volumes = run["primary"]["camera_image"].shape[0]
    assert volumes == done
    rows = run["summary"].read()
    assert len(rows["time"]) == volumes, rows


LEAVES_PAUSED = """
import runpy, sys, threading, time
from pathlib import Path
from bluesky.utils import RunEngineInterrupted
ns = {}
for f in sorted(Path(sys.argv[1]).glob("*.py")):
    ns = runpy.run_path(str(f), init_globals=ns)
RE, board = ns["RE"], ns["scanboard"]
flying = threading.Event()  # the scan collects: started, its stream declared
RE.msg_hook = lambda msg: flying.set() if msg.command == "collect" else None
def mid_scan():
    return (flying.is_set() and RE.state == "running"
            and 2 <= int(board.volumes_done.get(use_monitor=False)) < 10)
def pause_mid_scan():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if mid_scan():
            RE.request_pause(defer=False)
            return
        time.sleep(0.01)
threading.Thread(target=pause_mid_scan, daemon=True).start()
try:
    RE(ns["volumetric_scan"](ns["camera"], board, 25, 10, 20.0, 60.0, 5.0))
except RunEngineInterrupted:
    print("PAUSED", RE.state, flush=True)
# and the user leaves (Ctrl-D, exit): nothing else is called
"""


SIGNALLED = LEAVES_PAUSED.replace(
    "RE.request_pause(defer=False)", "os.kill(os.getpid(), int(sys.argv[2]))").replace(
    "import runpy, sys", "import os, runpy, sys").replace(
    "# and the user leaves (Ctrl-D, exit): nothing else is called",
    "time.sleep(60)  # at the prompt, as IPython would be\nprint('STILL HERE')")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_session_ended_by_a_signal_stops_the_hardware_and_stores_the_run(
        ioc, prefix, scope, session, sig):
    """SIGTERM (systemd, a scheduler, kill) or SIGHUP (the terminal or SSH connection
    closed) mid-scan: the run pauses at once, the session ends and aborts it on the way
    out, as Ctrl-C and leaving do. (Both ended Python at once: the camera and the
    board went on, the run stayed open with a few of its volumes.)"""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, BEAMLINE_LS_DATA_DIR=str(ioc.data_dir),
               BEAMLINE_LS_PREFIX=prefix)
    out = subprocess.run([sys.executable, "-c", SIGNALLED,
                          str(root / "profile_collection" / "startup"), str(int(sig))],
                         capture_output=True, text=True, timeout=180, env=env)
    said = out.stdout[-2000:] + out.stderr[-3000:]
    assert out.returncode == 128 + sig, said
    assert "PAUSED" in out.stdout and "STILL HERE" not in out.stdout, said
    assert f"{signal.Signals(sig).name}: pausing the run now" in out.stderr, said
    cam, hdf, board = scope.camera.cam, scope.camera.hdf, scope.scanboard
    assert cam.detector_state.get(use_monitor=False) == "Idle"
    assert int(hdf.capture_rbv.get(use_monitor=False)) == 0
    assert int(board.running.get(use_monitor=False)) == 0
    run = session.catalog[-1]
    assert run.metadata["stop"]["exit_status"] == "abort"
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        stored = f["/entry/data/data"].shape[0]
    assert 2 <= stored < N_VOLUMES
    assert run["primary"]["camera_image"].shape[0] == stored


def test_a_session_that_exits_while_paused_leaves_the_hardware_idle(ioc, prefix, scope,
                                                                    session):
    """A user who leaves IPython with the RunEngine paused: the run is aborted on the
    way out, so the camera stops capturing and the board is released, and the run is
    in the catalog as aborted with every frame stored. (The camera went on capturing
    and the board stayed paused; every later scan was refused.)"""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, BEAMLINE_LS_DATA_DIR=str(ioc.data_dir),
               BEAMLINE_LS_PREFIX=prefix)
    out = subprocess.run([sys.executable, "-c", LEAVES_PAUSED,
                          str(root / "profile_collection" / "startup")],
                         capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "PAUSED paused" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]
    assert "aborting the run" in out.stderr
    cam, hdf, board = scope.camera.cam, scope.camera.hdf, scope.scanboard
    assert cam.detector_state.get(use_monitor=False) == "Idle"
    assert int(hdf.capture_rbv.get(use_monitor=False)) == 0
    assert int(board.paused.get(use_monitor=False)) == 0
    assert int(board.running.get(use_monitor=False)) == 0
    run = session.catalog[-1]
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert "session ended" in run.metadata["stop"]["reason"]
    path = Path(hdf.full_file_name.get(use_monitor=False))
    with h5py.File(path, "r") as f:
        stored = f["/entry/data/data"].shape[0]
    assert 2 <= stored < N_VOLUMES
    assert run["primary"]["camera_image"].shape[0] == stored
