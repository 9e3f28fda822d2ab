"""The concurrence log: events with ns timestamps per stage, and where time went."""

import csv
import threading
import time

import pytest

from beamline_ls.pipeline import concurrence
from beamline_ls.pipeline.concurrence import ConcurrenceLog, summarize


def test_events_from_several_threads_are_saved_in_time_order_with_their_thread(tmp_path):
    log = ConcurrenceLog(capacity=100)

    def camera():
        for fid in range(5):
            log.record("camera frame", frame_id=fid)
            time.sleep(0.002)

    t = threading.Thread(target=camera, name="camera")
    t.start()
    t.join()
    for fid in range(5):
        log.record("write end", queue_depth=4 - fid, frame_id=fid)
    path = log.save(tmp_path / "c.csv")
    rows = list(csv.DictReader(open(path)))
    assert len(rows) == 10 and len(log) == 0  # saving clears the memory
    assert {r["thread"] for r in rows[:5]} == {"camera"}
    assert [int(r["frame_id"]) for r in rows[:5]] == list(range(5))
    stamps = [int(r["t_ns"]) for r in rows]
    assert stamps == sorted(stamps)
    assert all(stamps[i + 1] - stamps[i] >= 2_000_000 for i in range(4))  # 2 ms sleeps


def test_saving_never_follows_a_symlink_planted_at_the_name(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    data = tmp_path / "data"
    data.mkdir()
    (data / "run.concurrence.csv").symlink_to(outside)
    log = ConcurrenceLog(capacity=10)
    log.record("write end", frame_id=0)
    with pytest.raises(OSError):
        log.save(data / "run.concurrence.csv")
    assert outside.read_text() == "precious\n"


def test_a_full_log_counts_what_it_could_not_keep():
    log = ConcurrenceLog(capacity=3)
    for i in range(5):
        log.record("e", frame_id=i)
    assert len(log) == 3 and log.overflow == 2


def test_summary_gives_per_stage_latency_and_queue_depth(tmp_path):
    path = tmp_path / "c.csv"
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["t_ns", "pid", "thread", "event", "queue_depth", "frame_id"])
        for fid in range(100):
            t0 = fid * 10_000_000
            out.writerow([t0, 1, "camera", "ring push", fid % 7, fid])
            out.writerow([t0 + 3_000_000, 1, "recorder", "write start", -1, fid])
            out.writerow([t0 + 5_000_000, 1, "recorder", "write end", -1, fid])
    s = summarize(path)
    assert s["ring push -> write start"]["p50_ms"] == pytest.approx(3.0)
    assert s["write start -> write end"]["max_ms"] == pytest.approx(2.0)
    assert s["ring push -> write start"]["n"] == 100
    assert s["ring push queue depth"]["max"] == 6


def test_recording_is_off_unless_enabled():
    assert concurrence.active() is None
    concurrence.record("ignored")  # no log, no error
    log = concurrence.enable(capacity=10)
    try:
        concurrence.record("kept", frame_id=1)
        assert len(log) == 1
    finally:
        assert concurrence.disable() is log
    assert concurrence.active() is None


def test_the_camera_ioc_saves_a_log_of_every_frame_when_asked(scope, session):
    from plans import planar_scan

    hdf = scope.camera.hdf
    before = hdf.concurrence_file.get(use_monitor=False)
    hdf.concurrence_log.set("On").wait(5)
    try:
        result = session.RE(planar_scan(scope.camera, scope.scanboard, 40, 40.0, 0.002))
    finally:
        hdf.concurrence_log.set("Off").wait(5)
    assert result.exit_status == "success"
    data_file = hdf.full_file_name.get(use_monitor=False)
    deadline = time.monotonic() + 10
    while hdf.concurrence_file.get(use_monitor=False) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    path = hdf.concurrence_file.get(use_monitor=False)
    assert path.endswith(".concurrence.csv") and path[: -len(".concurrence.csv")] in data_file
    rows = list(csv.DictReader(open(path)))
    frames = {}
    for r in rows:
        frames.setdefault(int(r["frame_id"]), []).append(r["event"])
    assert set(frames) >= set(range(40))
    for fid in range(40):
        assert frames[fid][:2] == ["camera frame", "ring push"], frames[fid]
        assert "write end" in frames[fid]
    s = summarize(path)
    assert s["camera frame -> ring push"]["n"] == 40
    assert s["write start -> write end"]["p50_ms"] > 0
