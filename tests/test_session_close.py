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


def test_a_store_that_fails_every_document_says_so_once_per_run(caplog):
    """A full disk fails every document of a run the same way: logged in full once,
    not once per document (a catalog that filled mid-run wrote 35,000 log lines of
    tracebacks); another failure is logged in full too, and a new run says it again.
    Every failure is still counted for the run's end."""
    import logging

    def store(name, doc):
        if name == "event":  # as SQLAlchemy says it: the statement differs each time
            raise RuntimeError("(sqlite3.OperationalError) database or disk is full\n"
                               f"[SQL: INSERT INTO rows VALUES ({doc['seq_num']})]")
        if name == "stop":
            raise ValueError("stop refused")

    feed = BackgroundCallback(store)
    try:
        with caplog.at_level(logging.DEBUG, logger="beamline_ls.callbacks"):
            for run in range(2):
                feed("start", {"uid": f"run{run}"})
                for i in range(40):
                    feed("event", {"seq_num": i})
                feed("stop", {})
            assert feed.flush(30)
    finally:
        feed.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [(r.getMessage().partition("\n")[0], r.exc_info is not None)
            for r in errors] == [
        ("function failed on a event document: (sqlite3.OperationalError) database or "
         "disk is full", True),
        ("function failed on a stop document: stop refused", True)] * 2
    assert feed.errors == 2 * 41
