"""The camera IOC dies in the middle of a scan (kill -9): the user gets the real cause
(the IOC is gone) instead of a stall timeout, with the frames written before, and the
stop document says the same. A private IOC on the spare port; killed by its own PID.
An IOC that only stops answering for a few seconds (the shared one, frozen and thawed
by its PID) is waited for instead."""

from __future__ import annotations

import signal
import threading
import time

import h5py
import pytest
from conftest import private_microscope, wait_for


@pytest.fixture
def doomed(epics, tmp_path):
    with private_microscope(epics, "DOOM:", tmp_path) as microscope:
        yield microscope


def captured_at_least(hdf, n: int, timeout: float = 60.0) -> int | None:
    """Poll (from a thread of the test's own) until the writer has ``n`` frames; the
    count then, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            count = int(hdf.num_captured.get(use_monitor=False))
            if count >= n:
                return count
        except Exception:  # noqa: BLE001 - not connected yet
            pass
        time.sleep(0.02)
    return None


def signal_once_writing(ioc, hdf, sig: int) -> threading.Thread:
    """Send ``sig`` to the IOC (by its PID) once its writer has 50 frames, from a
    thread of its own while the RunEngine runs the scan on this one."""
    def send() -> None:
        captured_at_least(hdf, 50)
        ioc.proc.send_signal(sig)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    return sender


def test_a_killed_ioc_ends_the_scan_with_that_cause(doomed):
    from plans import planar_scan

    ioc, scope, session = doomed
    hdf = scope.camera.hdf

    seen = []

    def kill_when_writing() -> None:
        n = captured_at_least(hdf, 150)
        if n is not None:
            seen.append(n)
        ioc.proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_when_writing, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError) as failed:  # 100000 frames: ends only by the kill
        session.RE(planar_scan(scope.camera, scope.scanboard, 100_000, 40.0, 0.002,
                               frame_rate=200.0))
    killer.join(5)
    message = str(failed.value)
    assert "lost contact with the camera IOC" in message
    assert "DOOM:HDF1:Capture disconnected" in message
    written = int(message.split("it had written ")[1].split(" of 100000 frames")[0])
    assert written > 50  # the count last seen by the plan, not a stale zero
    age = float(message.split("by its last count, ")[1].split(" s earlier")[0])
    assert 0 <= age < 30  # said how old that count is
    session.flush()
    stop = session.catalog[-1].metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "lost contact with the camera IOC" in stop["reason"]
    files = list((ioc.data_dir / "frames").rglob("planar_*.h5"))
    assert len(files) == 1 and str(files[0]) in message
    # the file is flushed at least every 0.5 s (100 frames at 200 frames/s): all
    # frames written until then survive the kill
    with h5py.File(files[0], "r", swmr=True) as f:
        assert f["/entry/data/data"].shape[0] >= seen[0] - 100
        stored = f["/entry/data/data"].shape[0]
    # the dead writer left the file marked open for writing: readers that do not ask
    # for SWMR (plain h5py, h5dump, MATLAB) refuse it ...
    with pytest.raises(OSError, match="already open for write"):
        h5py.File(files[0], "r")
    # ... until the IOC starts again and releases the captures it left open
    ioc.proc.wait(10)
    ioc.start()
    wait_for(lambda: not list(files[0].parent.glob(".*.reserve")), 30,
             "the IOC releasing the capture it left open")
    with h5py.File(files[0], "r") as f:
        assert f["/entry/data/data"].shape[0] == stored
    log = ioc.log_file.read_text()
    assert f"{files[0]} was left open by an IOC that stopped without closing it" in log
    # the catalog holds only frames the file kept (frames the writer had taken but
    # not flushed died with it): every row it advertises reads
    primary = session.catalog[-1]["primary"]
    ids = primary["camera_frame_id"].read()
    assert 0 < len(ids) <= stored
    assert primary["camera_image"].shape[0] == len(ids)
    assert primary["camera_image"][len(ids) - 1].mean() > 0


def test_a_camera_that_fails_mid_scan_ends_it_with_that_cause(scope, session):
    """The camera's acquisition thread dies (the simulated sensor fails after 30
    frames): the scan ends within seconds with the camera's own error and the counts,
    not a stall timeout; the 30 frames are in the file; the next scan works."""
    from plans import planar_scan

    cam, hdf = scope.camera, scope.camera.hdf
    cam.cam.sim_fail_after.set(30).wait(5)
    try:
        t0 = time.monotonic()
        with pytest.raises(RuntimeError) as failed:
            session.RE(planar_scan(cam, scope.scanboard, 300, 40.0, 0.002))
        elapsed = time.monotonic() - t0
    finally:
        cam.cam.sim_fail_after.set(0).wait(5)
    message = str(failed.value)
    assert "the camera stopped with an error" in message
    assert "simulated sensor failure after 30 frames" in message
    assert "30 of 300 frames stored" in message
    assert elapsed < 10.0  # the bound; a stall timeout alone takes 10 s
    session.flush()
    stop = session.catalog[-1].metadata["stop"]
    assert stop["exit_status"] == "fail" and "simulated sensor failure" in stop["reason"]
    with h5py.File(hdf.full_file_name.get(use_monitor=False), "r") as f:
        assert f["/entry/data/data"].shape[0] == 30
    assert session.RE(planar_scan(cam, scope.scanboard, 5, 40.0, 0.002)).exit_status \
        == "success"


def test_an_ioc_that_stops_answering_for_a_while_is_waited_for(ioc, scope, session):
    """A busy IOC is not a dead one. Frozen for 4 s mid-scan (SIGSTOP, as a loaded
    machine can hold a process), longer than the stall probe's 2 s reads but with its
    channels connected, the camera IOC is waited for: the scan does not end as 'lost
    contact'."""
    from plans import planar_scan

    hdf = scope.camera.hdf
    frozen = []

    def freeze_while_writing() -> None:
        captured_at_least(hdf, 20)
        ioc.proc.send_signal(signal.SIGSTOP)
        frozen.append(time.monotonic())
        time.sleep(4.0)
        ioc.proc.send_signal(signal.SIGCONT)
        frozen.append(time.monotonic())

    freezer = threading.Thread(target=freeze_while_writing, daemon=True)
    freezer.start()
    try:
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 200, 40.0, 0.002,
                                        frame_rate=50.0))
    finally:
        freezer.join(10)
        ioc.proc.send_signal(signal.SIGCONT)
    assert len(frozen) == 2, "the IOC was never frozen"
    assert result.exit_status == "success", result.reason
    assert int(hdf.num_captured.get(use_monitor=False)) == 200


def test_a_killed_ioc_leaves_every_whole_volume_on_disk_in_the_catalog(doomed):
    """Killed in the middle of a volumetric scan, the IOC had flushed whole volumes the
    plan had not collected yet (it collects every 0.5 s): the catalog must hold every
    whole volume the frame file holds, not only those collected before the kill."""
    import numpy as np

    from plans import volumetric_scan

    ioc, scope, session = doomed
    hdf = scope.camera.hdf

    def kill_after_four_volumes() -> None:
        captured_at_least(hdf, 40)
        time.sleep(0.15)  # the plan hears of the 4th volume; the 5th is under way
        ioc.proc.send_signal(signal.SIGKILL)

    killer = threading.Thread(target=kill_after_four_volumes, daemon=True)
    killer.start()
    with pytest.raises(RuntimeError, match="lost contact with the camera IOC"):
        session.RE(volumetric_scan(scope.camera, scope.scanboard, 40, 10, 10.0, 80.0, 2.0))
    killer.join(5)
    session.flush()
    run = session.catalog[-1]
    assert run.metadata["stop"]["exit_status"] == "fail"
    files = list((ioc.data_dir / "frames").rglob("volumetric_*.h5"))
    assert len(files) == 1
    with h5py.File(files[0], "r", swmr=True) as f:
        stamps = f["/entry/meta/timestamp"][...]
    whole = int(np.all(stamps >= 0, axis=1).sum())
    assert whole >= 4
    assert run["primary"]["camera_image"].shape[:2] == (whole, 10)
    ioc.proc.wait(10)


def test_an_ioc_that_stays_frozen_is_named_as_the_cause(doomed):
    """Frozen for good mid-scan (SIGSTOP; its channels stay connected, so Channel Access
    does not call it gone), the camera IOC is named as the cause, not a bare "no
    progress" (the cause only reached a WARNING before), in bounded time; thawed, it
    answers again and stops its capture when told."""
    from plans import planar_scan

    ioc, scope, session = doomed
    freezer = signal_once_writing(ioc, scope.camera.hdf, signal.SIGSTOP)
    t0 = time.monotonic()
    try:
        with pytest.raises((TimeoutError, RuntimeError)) as failed:
            session.RE(planar_scan(scope.camera, scope.scanboard, 5000, 40.0, 0.002,
                                   frame_rate=100.0))
        elapsed = time.monotonic() - t0
    finally:
        freezer.join(5)
        ioc.proc.send_signal(signal.SIGCONT)
    message = str(failed.value)
    assert "the camera IOC does not answer" in message
    assert "no progress for 10.0 s" in message
    # stall timeout, the collection's last reads, the cleanup's (sent, not awaited)
    assert elapsed < 60.0
    session.flush()
    assert "the camera IOC does not answer" in session.catalog[-1].metadata["stop"]["reason"]
    # thawed, the IOC answers again; the cleanup's Abort never reached it, so it goes
    # on capturing until told to stop, as the next scan's refusal would say
    import epics  # pyepics: fresh channels, as a user's caget/caput

    cam1 = scope.camera.cam.prefix
    wait_for(lambda: epics.caget(f"{cam1}DetectorState_RBV", timeout=2) is not None, 60,
             "the thawed IOC answering")
    assert epics.caput(f"{cam1}CameraMode", "Abort", wait=True, timeout=30)
    hdf1 = scope.camera.hdf.prefix
    wait_for(lambda: epics.caget(f"{hdf1}Capture_RBV", use_monitor=False, timeout=2) == 0,
             30, "the capture closed")


# a session's client: ophyd signals and a motor on the IOC, waiting out an outage
_OUTAGE_CLIENT = """
import sys, time
import devices  # noqa: F401 - what a session imports
from ophyd import EpicsMotor, EpicsSignal

prefix = sys.argv[1]
rate = EpicsSignal(prefix + "scan:VolumeRate", name="rate")
x = EpicsMotor(prefix + "stage:X", name="x")
rate.wait_for_connection(30)
x.wait_for_connection(30)
print("ready", flush=True)
deadline = time.monotonic() + 60
while rate.connected and time.monotonic() < deadline:
    time.sleep(0.05)
print("unresponsive" if not rate.connected else "never lost", flush=True)
while not (rate.connected and x.connected) and time.monotonic() < deadline + 60:
    time.sleep(0.05)
time.sleep(0.5)
rate.put(4.0, wait=True, timeout=10)
x.move(0.5, wait=True, timeout=30)
print("wrote", rate.get(use_monitor=False), round(x.position, 3), flush=True)
"""


def test_a_session_writes_again_once_an_unresponsive_ioc_answers(doomed, epics):
    """An IOC silent for longer than EPICS_CA_CONN_TMO (frozen here; a network outage
    or an overloaded host does the same) makes libca call the circuit unresponsive and
    drop the channels' access rights; when it answers again, the session's ophyd
    signals and motors write again without a restart (they raised ReadOnlyError
    before). The client waits 2 s before calling a silent IOC unresponsive instead of
    30, to keep the test short."""
    import os
    import subprocess
    import sys

    ioc, _, _ = doomed
    env = {**os.environ, "EPICS_CA_CONN_TMO": "2"}
    client = subprocess.Popen([sys.executable, "-c", _OUTAGE_CLIENT, "DOOM:"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "ready"
        ioc.proc.send_signal(signal.SIGSTOP)
        try:
            said = client.stdout.readline().strip()
        finally:
            ioc.proc.send_signal(signal.SIGCONT)
        assert said == "unresponsive"
        out, err = client.communicate(timeout=120)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait(30)
    assert client.returncode == 0, err[-2000:]
    assert out.split() == ["wrote", "4.0", "0.5"]


def test_a_scan_on_a_camera_that_did_not_open_says_why_it_did_not(epics, tmp_path):
    """An sCMOS named in the TOML whose vendor library is not installed (this machine
    has no DCAM-API): the IOC serves anyway, and a scan failed with "capture refused:
    roi (...) does not fit the 0x0 sensor", the camera's own reason only in its
    StatusMessage_RBV. The scan must say the camera did not open and why."""
    import epics as pyepics

    from plans import planar_scan

    config = tmp_path / "ioc.toml"
    config.write_text('[hardware.camera]\nbackend = "pylablib"\nsdk = "dcam"\n')
    with private_microscope(epics, "NOCAM:", tmp_path / "data", config=config,
                            roi=None) as (_, scope, session):
        # a stock client (and ADCore's screens) sees areaDetector's "not there" state
        state = pyepics.caget("NOCAM:cam1:DetectorState_RBV", as_string=True, timeout=10)
        with pytest.raises(RuntimeError) as no_roi:
            scope.camera.set_centered_roi(128)
        starts: list[dict] = []
        session.RE.subscribe(lambda name, doc: starts.append(doc) if name == "start"
                             else None)
        with pytest.raises(RuntimeError) as failed:
            session.RE(planar_scan(scope.camera, scope.scanboard, 5, 40.0, 0.002))
    assert state == "Disconnected", state
    for said in (str(no_roi.value), str(failed.value)):
        assert "camera did not open" in said and "dcamapi.dll" in said, said
    assert "0x0 sensor" not in str(failed.value), str(failed.value)
    # refused before a run was opened: nothing in the catalog for a scan that never was
    assert "no run was started" in str(failed.value), str(failed.value)
    assert starts == []


def test_a_signal_destroyed_while_its_rights_are_read_keeps_its_channel_until_then(
        ioc, prefix, monkeypatch):
    """The rights read at a reconnection (above) asks libca about the channel from
    ophyd's dispatcher thread; a session destroying its devices at that moment cleared
    the channel under it, and the test process died of a segmentation fault in CI.
    Here the read is held open: the destroy must wait for it, not free the channel."""
    from ophyd import EpicsSignal

    from devices import ca_recovery

    sig = EpicsSignal(f"{prefix}scan:VolumeRate", name="rate")
    sig.wait_for_connection(30)
    pv = sig._read_pv
    inside, go, seen = threading.Event(), threading.Event(), []
    real = ca_recovery._rights_now

    def held_open(channel):
        inside.set()
        go.wait(30)
        seen.append(channel.chid)
        return real(channel)

    monkeypatch.setattr(ca_recovery, "_rights_now", held_open)
    reader = threading.Thread(target=sig._pv_connected, args=(pv.pvname, True, pv),
                              daemon=True)
    reader.start()
    assert inside.wait(30)
    destroyer = threading.Thread(target=sig.destroy, daemon=True)
    destroyer.start()
    destroyer.join(1.0)
    waited = destroyer.is_alive()
    go.set()
    reader.join(30)
    destroyer.join(30)
    assert waited, "the channel was released while its rights were being read"
    assert seen and seen[0] is not None  # the read saw a live channel
    assert not destroyer.is_alive() and not reader.is_alive()


def test_a_stopped_ioc_says_it_cut_an_open_capture_and_then_that_it_does_not_answer(
        doomed):
    """The IOC stopped (SIGTERM) during a capture with NumCapture 0 (until stopped: what
    ophyd's HDF5 plugin stages): WriteMessage and WriteStatus say so, as they do for a
    capture of a fixed count. It was reported as a normal finish ("wrote 194 frames",
    Write OK), because no frame of an open-ended capture counts as lost. A plan
    started on the stopped IOC then failed on "scanboard_flyback_settle is not
    connected" and nothing more."""
    from plans import volumetric_scan

    ioc, scope, session = doomed
    cam, hdf = scope.camera.cam, scope.camera.hdf
    said: list[tuple[str, str]] = []
    hdf.write_message.subscribe(lambda value, **_: said.append(("message", value)),
                                run=False)
    hdf.write_status.subscribe(lambda value, **_: said.append(("status", value)),
                               run=False)
    hdf.file_path.set(hdf.data_root.get()).wait(10)
    hdf.file_name.set("until_stopped").wait(10)
    hdf.num_capture.set(0).wait(10)
    cam.image_mode.set("Continuous").wait(10)
    cam.acquire_period.set(0.2).wait(10)  # the writer waits for each frame: none queued
    hdf.capture.put(1, use_complete=False)
    wait_for(lambda: hdf.capture.get(use_monitor=False) == 1, 10, "capture started")
    cam.acquire.put("Acquire", use_complete=False)
    assert captured_at_least(hdf, 5) is not None
    ioc.stop()
    messages = [v for k, v in said if k == "message"]
    assert any("the camera IOC was stopped during the capture" in m for m in messages), said
    assert ("status", "Write error") in said, said

    with pytest.raises(Exception, match="its IOC does not answer") as failed:
        session.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 4, 20.0, 60.0, 2.0))
    assert "is not connected" in str(failed.value)  # which signal, as ophyd says


def test_an_ioc_stopped_mid_scan_ends_it_saying_so_with_its_file_closed(doomed):
    """SIGTERM (a service manager, Ctrl-C in the IOC's terminal) while a scan writes:
    the IOC closes the capture while its clients are still connected and says why,
    so the scan ends with that cause and what the file holds. It ended on "lost
    contact" with advice to wait for a restart or clear the file with h5clear,
    although the IOC had closed it cleanly."""
    from plans import planar_scan

    ioc, scope, session = doomed
    stopper = signal_once_writing(ioc, scope.camera.hdf, signal.SIGTERM)
    with pytest.raises((RuntimeError, TimeoutError)) as failed:
        session.RE(planar_scan(scope.camera, scope.scanboard, 5000, 40.0, 0.002,
                               frame_rate=100.0))
    stopper.join(5)
    message = str(failed.value)
    assert "the camera IOC was stopped during the capture" in message, message
    assert "h5clear" not in message
    ioc.proc.wait(30)
    path = message.split("capture: ")[1].split(" was closed")[0]
    written = int(message.split("closed with ")[1].split(" of ")[0])
    with h5py.File(path, "r") as f:  # a plain reader: no SWMR mark left to clear
        assert f["/entry/data/data"].shape[0] >= written >= 50


def test_a_board_whose_ioc_dies_after_its_kickoff_leaves_the_cause_to_the_camera(doomed):
    """The IOC dies between the scan board's kickoff and the plan's first ``complete``
    (CI caught it so: the kill came while the plan declared its stream). ``complete``
    read the board's mode from the dead IOC, and that read's "Get failed" became the
    scan's error in place of the camera's report of the lost contact and the frames
    written. It must hand back a status without asking the IOC."""
    ioc, scope, _ = doomed
    board = scope.scanboard
    for signal_, value in ((board.mode, "Volumetric"), (board.num_volumes, 1000),
                           (board.volume_rate, 5.0)):
        signal_.set(value).wait(10)
    board.kickoff().wait(30)
    ioc.proc.send_signal(signal.SIGKILL)
    ioc.proc.wait(10)
    wait_for(lambda: not board.connected, 30, "the client noticing the IOC is gone")
    status = board.complete()  # raised "Get failed" from the dead IOC
    assert not status.done  # 1000 volumes at 5 Hz: the scan was still under way
    assert board.complete() is status


def test_a_scan_start_the_ioc_never_answers_fails_naming_it_in_bounded_time(
        doomed, monkeypatch):
    """The IOC freezes as a scan starts (SIGSTOP; a hung vendor SDK or a file open on
    a dead network share is the same to the client: the put's answer never comes).
    The camera's kickoff (file open, camera start) and the board's prepare waited for
    that answer without end: the scan hung, and the queue behind it, with no word on
    why. Each now fails within its deadline, naming the silent IOC and what it had
    not done; so do the settings a plan puts before it starts anything."""
    import plans.common
    from devices import Acquisition
    from plans.common import file_name_for, set_settings

    monkeypatch.setattr(plans.common, "SETTINGS_TIMEOUT_S", 3.0)  # 30 s by default
    ioc, scope, session = doomed
    cam, board = scope.camera, scope.scanboard
    cam.setup_timeout = 3.0  # 60 s by default: room for a real camera to arm
    directory, name = file_name_for("frozen")
    cam.prepare(Acquisition(n_frames=50, file_name=name, trigger_mode="Internal",
                            file_path=directory)).wait(30)
    board.mode.set("Volumetric").wait(10)
    ioc.proc.send_signal(signal.SIGSTOP)
    try:
        started, prepared = cam.kickoff(), board.prepare(timeout=3.0)
        for status in (started, prepared):
            with pytest.raises(TimeoutError) as failed:
                status.wait(30)  # its own deadline ends it, not this bound
            assert "IOC does not answer" in str(failed.value), failed.value
        assert f"did not open the capture's file {name}" in str(started.exception())
        assert "did not prepare the scan" in str(prepared.exception())
        with pytest.raises(TimeoutError, match="did not take DOOM:scan:VolumeRate = 4.0"):
            session.RE(set_settings(board.volume_rate, 4.0))
    finally:
        ioc.proc.send_signal(signal.SIGCONT)
    # thawed, the puts it had not answered are done late: the file opened by the
    # late Capture is closed when asked, and the camera was never started
    wait_for(lambda: int(cam.hdf.capture_rbv.get(use_monitor=False)) == 1, 30,
             "the late capture open")
    cam.hdf.capture.set(0).wait(30)
    assert cam.cam.detector_state.get(use_monitor=False) == "Idle"


def test_a_plan_started_on_a_frozen_ioc_says_the_ioc_does_not_answer(doomed):
    """An IOC frozen before the plan starts (SIGSTOP; its channels stay connected): the
    plan's first read times out, and the user is told the IOC is there but silent,
    not only ophyd's "Failed to read ... within 5.00 sec"; thawed, scans work again."""
    from devices import ReadTimeoutError
    from plans import volumetric_scan

    ioc, scope, session = doomed
    cam, board = scope.camera, scope.scanboard
    ioc.proc.send_signal(signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        with pytest.raises(ReadTimeoutError,
                           match=r"DOOM:.*its IOC is connected but does not answer"):
            session.RE(volumetric_scan(cam, board, 2, 5, 20.0, 60.0, 4.0))
        assert time.monotonic() - t0 < 60.0
    finally:
        ioc.proc.send_signal(signal.SIGCONT)
    result = session.RE(volumetric_scan(cam, board, 2, 5, 20.0, 60.0, 4.0))
    assert result.exit_status == "success", result.reason


def test_a_session_started_with_no_ioc_says_which_prefix_and_how_to_start_it(epics):
    """The profile connecting its devices when no IOC serves the prefix: the error
    leads with what to do (ophyd alone lists some 70 unconnected PVs)."""
    from devices import connect_microscope

    with pytest.raises(TimeoutError) as failed:
        connect_microscope("NOBODY:", timeout=1.0)
    message = str(failed.value)
    assert message.startswith("camera: its IOC did not answer within 1 s (prefix 'NOBODY:'")
    assert "beamline-ls ioc --prefix NOBODY:" in message and "BEAMLINE_LS_PREFIX" in message
