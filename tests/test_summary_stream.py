"""The capture summary (issue 15, item 3): fly scans store frames as stream assets
and emit no Events, so the camera IOC summarises what it wrote, a row per volume (per
block of 100 planar frames), and plans collect the rows into a ``summary`` Event
stream that LiveTable, BestEffortCallback and ``.v1`` ``table()`` show."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest

from beamline_ls.frame import Frame
from beamline_ls.pipeline.summary import CaptureSummary, frame_sum


def _frame(value: int, z: float, shape=(8, 8)) -> Frame:
    image = np.full(shape, value, np.uint16)
    image[0, 0] = value + 10  # the maximum sits in one pixel
    return Frame(image=image, frame_id=0, timestamp=0.0, z_um=z)


def test_rows_hold_each_volume_and_lost_frames_only_shrink_their_count():
    s = CaptureSummary(frames_per_row=3)
    for position, (value, z) in enumerate([(100, 10.0), (200, 20.0), (300, 30.0),
                                           (400, 11.0), (500, 31.0)]):
        if position == 4:
            position = 5  # the frame at 4 was lost: volume 1 has two frames
        s.add(position, _frame(value, z))
        # a row is out once its volume's last plane is stored (nothing more can come
        # to it), not only when the next volume begins: the last volume before a
        # pause is in the table while paused, and in a run stopped there
        assert s.finished == (position >= 2) + (position >= 5)
    s.add(6, _frame(600, 12.0))  # volume 2 begins
    s.add(7, _frame(700, 22.0))  # ... and is cut short: its row comes at the close
    assert s.finished == 2
    s.close()
    assert s.finished == 3
    rows = s.rows()
    index, frames, z_min, z_max, mean, peak = (rows[:, i] for i in (0, 2, 3, 4, 5, 6))
    assert index.tolist() == [0.0, 1.0, 2.0]
    assert frames.tolist() == [3.0, 2.0, 2.0]
    assert (z_min.tolist(), z_max.tolist()) == ([10.0, 11.0, 12.0], [30.0, 31.0, 22.0])
    assert mean.tolist() == pytest.approx([200 + 10 / 64, 450 + 10 / 64, 650 + 10 / 64])
    assert peak.tolist() == [310.0, 510.0, 710.0]


def test_the_sum_is_exact_for_a_full_frame_of_saturated_pixels():
    image = np.full((2048, 2048), 65535, np.uint16)
    assert frame_sum(image) == 65535 * 2048 * 2048


@pytest.fixture(scope="module")
def watched_run(scope, session):
    """One volumetric run (5 volumes of 6 planes) watched live by a LiveTable of the
    summary stream and a BestEffortCallback (plots only), as in the IPython profile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bluesky.callbacks import LiveTable
    from bluesky.callbacks.best_effort import BestEffortCallback

    from plans import volumetric_scan

    plt.close("all")
    bec = BestEffortCallback()
    bec.disable_table()
    fields = ["camera_summary_volume", "camera_summary_mean", "camera_summary_max"]
    table = LiveTable(fields, stream_name="summary", default_prec=1)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        result = session.RE(volumetric_scan(scope.camera, scope.scanboard, 5, 6, 20.0, 60.0,
                                            4.0), [table, bec])
    session.flush()
    assert result.exit_status == "success"
    plotted = {ax.get_ylabel(): line.get_data() for num in plt.get_fignums()
               for ax in plt.figure(num).axes for line in ax.lines}
    plt.close("all")
    yield session.catalog[result.run_start_uids[0]], out.getvalue(), plotted


def test_a_volumetric_run_has_a_summary_row_per_volume_matching_its_stored_frames(
        watched_run):
    run, _, _ = watched_run
    summary = run["summary"].read()
    assert summary["camera_summary_volume"].values.tolist() == [0, 1, 2, 3, 4]
    assert summary["camera_summary_frames"].values.tolist() == [6] * 5
    frames = run["primary"]["camera_image"].read()  # (volumes, planes, y, x) from the file
    z = np.asarray(run["primary"]["camera_z"].read())
    np.testing.assert_allclose(summary["camera_summary_mean"].values,
                               frames.reshape(5, -1).mean(axis=1), rtol=1e-12)
    peaks = frames.reshape(5, -1).max(axis=1)
    assert summary["camera_summary_max"].values.tolist() == peaks.tolist()
    np.testing.assert_allclose(summary["camera_summary_z_min"].values, z.min(axis=1))
    np.testing.assert_allclose(summary["camera_summary_z_max"].values, z.max(axis=1))
    t = np.asarray(summary["time"].values, dtype=float)
    start, stop = run.metadata["start"]["time"], run.metadata["stop"]["time"]
    assert np.all(np.diff(t) >= 0) and start <= t[0] and t[-1] <= stop
    # each row's readings carry when its volume was acquired (its last exposure's end),
    # not when the writer finished it (the Event's own time is when bluesky collected it)
    measured = np.asarray(run["summary"]["ts_camera_summary_mean"].read(), dtype=float)
    last = np.asarray(run["primary"]["camera_timestamp"].read(), dtype=float).max(axis=1)
    exposure = np.asarray(run["primary"]["camera_exposure"].read(), dtype=float).max(axis=1) \
        if "camera_exposure" in run["primary"] else np.full(last.shape, 0.05)
    assert np.all(measured > last) and np.all(measured <= last + exposure + 1e-6), \
        measured - last


def test_live_table_prints_a_row_per_volume_as_they_come(watched_run):
    run, printed, _ = watched_run
    lines = printed.splitlines()
    assert any("camera_summary_mean" in line for line in lines), printed
    rows = [line.split("|")[1:-1] for line in lines
            if line.startswith("|") and line.split("|")[1].strip().isdigit()]
    summary = run["summary"].read()
    assert [int(r[2]) for r in rows] == [0, 1, 2, 3, 4]  # seq_num, time, volume, mean, max
    assert [float(r[3]) for r in rows] == pytest.approx(
        summary["camera_summary_mean"].values.tolist(), abs=0.051)


def test_best_effort_callback_plots_the_summary_against_the_volume(watched_run):
    run, _, plotted = watched_run
    x, y = plotted["camera_summary_mean"]
    assert list(x) == [0, 1, 2, 3, 4]  # against the volume, not time
    assert list(y) == pytest.approx(run["summary"].read()["camera_summary_mean"].values.tolist())


def test_the_legacy_v1_table_and_events_show_the_summary(watched_run, session):
    run, _, _ = watched_run
    header = session.catalog.v1[run.metadata["start"]["uid"]]
    assert header.table("summary")["camera_summary_volume"].tolist() == [0, 1, 2, 3, 4]
    events = list(header.events(stream_name="summary"))
    assert [e["data"]["camera_summary_volume"] for e in events] == [0, 1, 2, 3, 4]


def test_a_planar_run_has_a_row_per_block_of_100_frames(scope, session):
    from plans import planar_scan

    result = session.RE(planar_scan(scope.camera, scope.scanboard, 250, 40.0, 0.002))
    session.flush()
    summary = session.catalog[result.run_start_uids[0]]["summary"].read()
    assert summary["camera_summary_block"].values.tolist() == [0, 1, 2]
    assert summary["camera_summary_frames"].values.tolist() == [100, 100, 50]



def test_the_legacy_v1_table_reads_the_frame_streams_metadata_from_its_files(
        watched_run, session):
    """The frame stream's fields live in the frame files (it has no Events), so
    databroker's v1 ``table()`` leaves them out unless filled, as for any external
    field: with ``fill=True`` and the scalar fields named, a row per volume holds
    each frame's z, id and volume, the same as the v2 stream (images left unread)."""
    run, _, _ = watched_run
    header = session.catalog.v1[run.metadata["start"]["uid"]]
    assert len(header.table()) == 0  # every field is external: nothing unfilled
    fields = ["camera_z", "camera_frame_id", "camera_volume"]
    table = header.table(fields=fields, fill=True)
    primary = run["primary"].read(variables=fields)
    assert len(table) == primary["camera_z"].shape[0] == 5
    for name in fields:
        np.testing.assert_array_equal(np.stack(table[name].to_list()), primary[name].values)
    assert np.all(np.diff(np.stack(table["camera_z"].to_list()), axis=1) > 0)  # the planes
