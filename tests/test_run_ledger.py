"""A run's end says what the catalog really holds: a writer that recovered from a
locked database is not reported as a lost run, and rows that never arrived are named."""

from __future__ import annotations

import logging
import sqlite3
import threading

import event_model as em
import h5py
import numpy as np
import pytest
from bluesky.plans import count
from conftest import plain_detector, wait_for

from beamline_ls.config import load_settings
from beamline_ls.run_ledger import RunLedger
from beamline_ls.session import make_session

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline

det = plain_detector()


@pytest.fixture(scope="module")
def own_session(tmp_path_factory):
    """A session with its own data directory: the test locks its catalog database."""
    s = make_session(load_settings(data_dir=tmp_path_factory.mktemp("ledger"),
                                   prefix="LEDGER:"), progress_bar=False, run_files=False)
    yield s
    s.close()


def _hold_lock(db, locked: threading.Event, release: threading.Event) -> None:
    """Another process's view: an exclusive transaction on the catalog database."""
    con = sqlite3.connect(str(db), isolation_level=None, timeout=30)
    try:
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(60)
        con.execute("COMMIT")
    finally:
        con.close()


def test_a_run_the_writer_completed_after_a_locked_database_is_not_reported_lost(
        own_session, caplog):
    RE, feed = own_session.RE, own_session.catalog_feed
    RE(count([det], 2))  # the catalog has its tables and a run
    errors_before = feed.errors
    locked, release = threading.Event(), threading.Event()
    db = own_session.settings.catalog_dir / "catalog.db"

    def fault(name, doc):  # lock the database once the run is under way
        if name == "event" and doc["seq_num"] == 3 and not locked.is_set():
            # once the first events are stored (the run's event table exists): on a
            # loaded machine the writer may lag, and a lock that falls on the table's
            # creation is another fault (the table half made, every later write a
            # conflict, the run rightly reported lost)
            assert feed.flush(30), "the catalog writer did not catch up"
            threading.Thread(target=_hold_lock, args=(db, locked, release),
                             daemon=True).start()
            assert locked.wait(30), "could not lock the catalog database"

    def unlock_after_a_failure():  # held until a write has failed on it (~5 s busy wait)
        wait_for(lambda: feed.errors > errors_before, timeout=60,
                 what="a catalog write failing on the locked database")
        release.set()

    token = RE.subscribe(fault, "event")
    unlocker = threading.Thread(target=unlock_after_a_failure, daemon=True)
    unlocker.start()
    try:
        with caplog.at_level(logging.WARNING, logger="beamline_ls.session"):
            result = RE(count([det], 20, delay=0.1))
    finally:
        RE.unsubscribe(token)
        release.set()
    unlocker.join(5)
    assert feed.errors > errors_before  # the fault did happen
    assert result.exit_status == "success"
    run = own_session.catalog[result.run_start_uids[0]]
    assert run["primary"]["det"].read().shape == (20,)  # every event is in the catalog
    assert any("reading the run back finds it complete" in r.getMessage()
               for r in caplog.records)


def _fly_run(frames_file):
    """A fly scan's documents: 6 frames of 'image' in two StreamDatums, and an
    event stream of 4 events in two EventPages."""
    with h5py.File(frames_file, "w") as f:
        f["image"] = np.arange(6 * 16, dtype=np.uint16).reshape(6, 4, 4)
    run = em.compose_run()
    docs = [("start", run.start_doc)]
    prim = run.compose_descriptor(name="primary", data_keys={"image": {
        "source": "sim", "dtype": "array", "dtype_numpy": "<u2", "shape": [4, 4],
        "external": "STREAM:"}})
    summ = run.compose_descriptor(name="summary", data_keys={
        "mean": {"source": "sim", "dtype": "number", "shape": []}})
    docs += [("descriptor", prim.descriptor_doc), ("descriptor", summ.descriptor_doc)]
    res = run.compose_stream_resource(
        mimetype="application/x-hdf5", uri=f"file://localhost{frames_file}",
        data_key="image", parameters={"dataset": "image", "chunk_shape": [1, 4, 4]})
    docs.append(("stream_resource", res.stream_resource_doc))
    for start, stop in ((0, 3), (3, 6)):
        docs.append(("stream_datum", res.compose_stream_datum(
            indices={"start": start, "stop": stop}, descriptor=prim.descriptor_doc)))
    for seq in ((1, 2), (3, 4)):
        docs.append(("event_page", summ.compose_event_page(
            data={"mean": [1.0, 2.0]}, timestamps={"mean": [1.0, 2.0]},
            seq_num=list(seq), time=[1.0, 2.0])))
    docs.append(("stop", run.compose_stop()))
    return run.start_doc["uid"], docs


def test_the_read_back_names_the_rows_and_events_the_catalog_lacks(own_session):
    uid, docs = _fly_run(own_session.settings.frames_dir / "ledger.h5")
    ledger = RunLedger()
    assert [docs[5][0], docs[7][0]] == ["stream_datum", "event_page"]
    for i, (name, doc) in enumerate(docs):
        ledger(name, doc)
        if i not in (5, 7):  # the second StreamDatum and EventPage never arrive
            own_session.catalog_feed(name, doc)
    assert own_session.catalog_feed.flush(30)
    assert ledger.shortfalls(own_session.catalog, uid) == [
        "3 of 6 rows of 'primary/image'", "2 of 4 events of 'summary'"]

    complete = RunLedger()
    for name, doc in docs:
        complete(name, doc)
    assert complete.shortfalls(own_session.catalog, "no-such-run") == []  # not tracked
    complete("start", {"uid": "never-written", "time": 0})
    assert complete.shortfalls(own_session.catalog, "never-written") == [
        "the whole run"]
