"""Closing a session: documents queued before the close are stored, and closing or
flushing again after it (the profile closes its session at exit too) returns at once
instead of waiting out a writer thread that has already ended."""

from __future__ import annotations

import pytest

from beamline_ls.callbacks import BackgroundCallback

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def test_a_closed_writer_has_processed_what_was_queued_and_flush_says_so():
    seen = []
    feed = BackgroundCallback(lambda name, doc: seen.append(doc["n"]), name="test-writer")
    for n in range(100):
        feed("event", {"n": n})
    feed.close()
    assert seen == list(range(100))
    assert feed.flush(timeout=30) is True


def test_a_session_closed_twice_stores_its_run_once(tmp_path):
    from bluesky.plans import count
    from conftest import plain_detector
    det = plain_detector()

    from beamline_ls.config import load_settings
    from beamline_ls.session import make_session

    session = make_session(load_settings(data_dir=tmp_path, prefix="CLOSE:"),
                           progress_bar=False)
    (uid,) = session.RE(count([det], 3)).run_start_uids
    session.close()
    session.close()
    assert session.catalog[uid].metadata["stop"]["exit_status"] == "success"
    assert len(session.catalog[uid]["primary"].read()["det"]) == 3
