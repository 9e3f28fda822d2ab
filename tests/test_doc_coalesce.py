"""A catalog writer that falls behind catches up by merging what is queued, and a
writer that keeps up sees every document as emitted; nothing is lost or reordered
within a stream either way."""

from __future__ import annotations

import threading

import event_model as em
import pytest
from conftest import wait_for

from beamline_ls.callbacks import BackgroundCallback
from beamline_ls.doc_coalesce import coalesce

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def _documents(collects: int, gap_after: int | None = None):
    """A fly scan's documents as bluesky emits them: per collect, a StreamDatum for
    each of two stream resources (frames, z) and an EventPage of the summary stream."""
    run = em.compose_run()
    docs = [("start", run.start_doc)]
    frames = run.compose_descriptor(name="primary", data_keys={
        k: {"source": "sim", "dtype": "array", "shape": [4, 4], "external": "STREAM:"}
        for k in ("image", "z")})
    summary = run.compose_descriptor(name="summary", data_keys={
        "mean": {"source": "sim", "dtype": "number", "shape": []}})
    docs += [("descriptor", frames.descriptor_doc), ("descriptor", summary.descriptor_doc)]
    resources = {}
    for key in ("image", "z"):
        bundle = run.compose_stream_resource(mimetype="application/x-hdf5",
                                             uri="file://localhost/tmp/x.h5", data_key=key,
                                             parameters={"dataset": key})
        resources[key] = bundle
        docs.append(("stream_resource", bundle.stream_resource_doc))
    start = 0
    for c in range(collects):
        stop = start + 5
        if gap_after is not None and c == gap_after + 1:
            start, stop = start + 1, stop + 1  # a unit missing between two collects
        for key in ("image", "z"):
            docs.append(("stream_datum", resources[key].compose_stream_datum(
                indices={"start": start, "stop": stop},
                seq_nums={"start": start + 1, "stop": stop + 1},
                descriptor=frames.descriptor_doc)))
        docs.append(("event_page", summary.compose_event_page(
            data={"mean": [float(c)]}, timestamps={"mean": [1.0 * c]}, seq_num=[c + 1],
            time=[1.0 * c])))
        start = stop
    docs.append(("stop", run.compose_stop()))
    return docs


def test_a_backlog_becomes_one_document_per_stream_with_every_unit():
    docs = _documents(collects=6)
    merged = coalesce(docs[5:-1]) + [docs[-1]]  # the datums and pages, then the stop
    names = [n for n, _ in merged]
    assert names == ["stream_datum", "stream_datum", "event_page", "stop"]
    image, z, page, _ = (d for _, d in merged)
    assert (image["indices"]["start"], image["indices"]["stop"]) == (0, 30)
    assert (z["indices"]["start"], z["indices"]["stop"]) == (0, 30)
    assert image["stream_resource"] != z["stream_resource"]
    assert page["data"]["mean"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert page["seq_num"] == [1, 2, 3, 4, 5, 6]


def test_documents_other_than_datums_and_pages_stay_where_they_were():
    docs = _documents(collects=2)
    assert coalesce(docs) == coalesce(docs[:5]) + coalesce(docs[5:-1]) + [docs[-1]]
    assert [n for n, _ in coalesce(docs)][:5] == [n for n, _ in docs[:5]]


def test_a_gap_in_a_stream_is_not_papered_over():
    merged = coalesce(_documents(collects=4, gap_after=1)[5:-1])
    ranges = [(d["indices"]["start"], d["indices"]["stop"])
              for n, d in merged if n == "stream_datum"]
    assert ranges == [(0, 10), (11, 21), (0, 10), (11, 21)]


def test_a_writer_that_falls_behind_gets_the_backlog_merged_and_flush_still_waits():
    seen: list[tuple[str, dict]] = []
    release = threading.Event()

    def slow_writer(name, doc):
        if name == "start":
            release.wait(30)  # busy with the first document while the run goes on
        seen.append((name, doc))

    feed = BackgroundCallback(slow_writer, coalesce=coalesce)
    try:
        docs = _documents(collects=5)
        for name, doc in docs:
            feed(name, doc)
        wait_for(lambda: feed.pending == 0, 10, "the worker to take the backlog")
        release.set()
        assert feed.flush(30)
        # everything after the start document was queued when the writer got to it
        assert [n for n, _ in seen] == ["start", "descriptor", "descriptor",
                                        "stream_resource", "stream_resource",
                                        "stream_datum", "stream_datum", "event_page", "stop"]
        image = seen[5][1]
        assert (image["indices"]["start"], image["indices"]["stop"]) == (0, 25)
        assert feed.errors == 0
    finally:
        release.set()
        feed.close()


def test_a_writer_that_keeps_up_sees_every_document_as_emitted():
    seen = []
    feed = BackgroundCallback(lambda name, doc: seen.append((name, doc)), coalesce=coalesce)
    try:
        docs = _documents(collects=3)
        for name, doc in docs:
            feed(name, doc)
            assert feed.flush(10)
        assert seen == docs
    finally:
        feed.close()
