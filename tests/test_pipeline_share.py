"""Frames staged locally, copied to a slow destination by the camera IOC, and the
catalog pointing at the verified copy (real IOC, real catalog, real files)."""

import logging
import sqlite3
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
from conftest import wait_for

from beamline_ls.pipeline.copy_ledger import CopyLedger


def _asset_uris(settings):
    with sqlite3.connect(settings.catalog_dir / "catalog.db") as conn:
        return [row[0] for row in conn.execute("SELECT data_uri FROM assets")]


@pytest.fixture
def mirror_to(scope):
    hdf = scope.camera.hdf

    def configure(path, retries=5, backoff=1.0):
        hdf.mirror_retries.set(retries).wait(5)
        hdf.mirror_backoff.set(backoff).wait(5)
        hdf.mirror_path.set(str(path)).wait(5)

    yield configure
    hdf.mirror_path.set("").wait(5)
    hdf.mirror_retries.set(5).wait(5)
    hdf.mirror_backoff.set(1.0).wait(5)


def test_the_catalog_reads_frames_from_the_verified_copy(scope, session, settings,
                                                         mirror_to, share, tmp_path):
    from plans import planar_scan

    mirror_to(share)
    hdf = scope.camera.hdf
    verified_before = int(hdf.mirror_verified.get(use_monitor=False))
    result = session.RE(planar_scan(scope.camera, scope.scanboard, 30, 40.0, 0.002,
                                    md={"sample_name": "share test"}))
    assert result.exit_status == "success"
    staged = hdf.full_file_name.get(use_monitor=False)
    rel = staged.split(str(settings.frames_dir) + "/", 1)[1]
    copy = share / rel
    wait_for(lambda: int(hdf.mirror_verified.get(use_monitor=False)) > verified_before,
              what="the IOC to verify the copy")
    assert copy.is_file()
    assert str(copy) == hdf.mirror_last_copy.get(use_monitor=False)
    record = CopyLedger.in_directory(settings.frames_dir).latest()[staged]
    assert record.verified and record.size == copy.stat().st_size

    session.flush()
    session.copy_watcher.apply_now()
    uris = _asset_uris(settings)
    assert f"file://localhost{copy}" in uris
    assert not any(uri.endswith(staged) for uri in uris), "catalog still reads staging"

    # Clear staging: a data user in a fresh process still loads every frame (from the
    # copy), and they equal what the camera wrote.
    with h5py.File(copy, "r") as f:
        expected = f["/entry/data/data"][...]
    staged_away = tmp_path / "staged-away.h5"
    (settings.frames_dir / rel).rename(staged_away)
    try:
        code = textwrap.dedent(f"""
            import numpy as np
            from beamline_ls import open_catalog
            run = open_catalog({str(settings.data_dir)!r})[{result.run_start_uids[0]!r}]
            frames = run["primary"]["{scope.camera.name}_image"].read()
            np.save({str(tmp_path / 'frames.npy')!r}, np.asarray(frames))
        """)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        np.testing.assert_array_equal(np.load(tmp_path / "frames.npy"), expected)
        # the session's own, already open catalog reads the copy too
        live = session.catalog[result.run_start_uids[0]]["primary"][
            f"{scope.camera.name}_image"].read()
        np.testing.assert_array_equal(np.asarray(live), expected)
    finally:
        staged_away.rename(settings.frames_dir / rel)


def test_a_failing_share_never_stalls_acquisition_and_is_reported(
        scope, session, settings, mirror_to, share, caplog):
    from plans import planar_scan

    blocker = share.parent / "not-a-directory"
    blocker.write_text("a file where the share's directory should be")
    hdf = scope.camera.hdf
    failed_before = int(hdf.mirror_failed.get(use_monitor=False))
    mirror_to(blocker / "share", retries=2, backoff=0.05)
    t0 = time.monotonic()
    result = session.RE(planar_scan(scope.camera, scope.scanboard, 30, 40.0, 0.002))
    elapsed = time.monotonic() - t0
    assert result.exit_status == "success"
    assert elapsed < 20, f"the run took {elapsed:.1f} s"
    staged = hdf.full_file_name.get(use_monitor=False)
    wait_for(lambda: int(hdf.mirror_failed.get(use_monitor=False)) > failed_before,
              what="the IOC to give up on the copy")
    assert "FAILED" in hdf.mirror_message.get(use_monitor=False)
    record = CopyLedger.in_directory(settings.frames_dir).latest()[staged]
    assert record.state == "failed" and record.attempts == 3 and record.error

    session.flush()
    with caplog.at_level(logging.ERROR, logger="beamline_ls.relocation"):
        report = session.copy_watcher.apply_now()
    assert any(r.staging == staged for r in report.failed_copies)
    assert any(staged in m and "staging" in m for m in caplog.messages)
    assert any(uri.endswith(staged) for uri in _asset_uris(settings))
    with h5py.File(staged, "r") as f:  # the staging file is kept, whole
        assert f["/entry/data/data"].shape[0] == 30


def test_text_pvs_can_be_cleared_with_an_empty_string(scope, share):
    hdf = scope.camera.hdf
    for sig, value in ((hdf.mirror_path, str(share)), (hdf.extra_fields, "trigger_time")):
        sig.set(value).wait(5)
        assert sig.get(use_monitor=False) == value
        sig.set("").wait(5)  # "no copies" / "no extra fields"
        assert sig.get(use_monitor=False) == ""
