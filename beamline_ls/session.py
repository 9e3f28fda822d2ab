"""Build the RunEngine a user works with: catalog writer, run-file writer (one HDF5
file per run, see ``beamline_ls.runfile``), persisted metadata, progress bars and
(optionally) live tables/plots. Used by the IPython profile, the
demo and tests alike, so all of them record runs the same way."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from beamline_ls.callbacks import BackgroundCallback
from beamline_ls.catalog import allow_reading_from, open_embedded_catalog
from beamline_ls.config import Settings
from beamline_ls.doc_coalesce import coalesce
from beamline_ls.run_ledger import RunLedger
from beamline_ls.run_metadata import SharedRunMetadata
from beamline_ls.run_repair import RunMarks, close_abandoned_runs

log = logging.getLogger(__name__)


@dataclass
class Session:
    RE: Any
    catalog: Any
    settings: Settings
    tiled_writer: Any
    bec: Any = None
    catalog_feed: BackgroundCallback | None = None
    run_file_writer: Any = None
    run_file_feed: BackgroundCallback | None = None
    copy_watcher: Any = None
    publisher: Any = None  # bluesky's 0MQ Publisher when settings.zmq_publish is set
    publisher_token: int | None = None  # its RunEngine subscription
    kafka: Any = None  # KafkaPublisher when settings.kafka is set
    kafka_token: int | None = None
    store_timeout_s: float = 60.0  # how long a run's end waits for the writers
    ledger: RunLedger | None = None  # what each run emitted (read-back after failures)
    marks: RunMarks | None = None  # open runs' marks (a run not stored keeps its cause)
    _reported: dict[str, int] = field(default_factory=dict)  # errors already raised
    _closed: bool = False
    #: the RunEngine subscription of `check_stored`, a bound method: bluesky holds it
    #: by weak reference, whose clean-up at interpreter exit printed "Exception ignored
    #: in _BoundMethodProxy._destroy" after every session; `close` lets it go in time
    _check_token: int | None = None

    @property
    def closed(self) -> bool:
        """Whether `close` has begun (the session is on its way out)."""
        return self._closed

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until the catalog and the run files hold every document emitted so far.

        Raises when documents failed to reach either since the last flush: each
        failure is reported once, so one bad run does not fail every later flush.
        """
        problems = self._new_failures(timeout)
        if problems:
            raise RuntimeError("; ".join(problems))

    def _new_failures(self, timeout: float, uid: str | None = None) -> list[str]:
        """Wait for both writers; describe failures not reported before (and mark them).
        ``uid``: the run that just ended, checked in the catalog when its writer failed."""
        problems = []
        for feed, where in ((self.run_file_feed, "the run files"),
                            (self.catalog_feed, "the catalog")):
            if feed is None:
                continue
            if not feed.flush(timeout):
                raise TimeoutError(f"writer for {where} still busy after {timeout} s")
            new = feed.errors - self._reported.get(where, 0)
            if new <= 0:
                continue
            self._reported[where] = feed.errors
            cause = f"{type(feed.last_error).__name__}: {feed.last_error}"
            if feed is self.catalog_feed and uid is not None and self.ledger is not None:
                missing = self._read_back(uid)
                if missing is not None and not missing:
                    log.warning("%d catalog request(s) failed during run %s (last: %s), "
                                "but reading the run back finds it complete", new, uid,
                                cause)
                    continue
                if missing:
                    problems.append(f"{new} document(s) failed to reach {where}, which "
                                    f"lacks {', '.join(missing)} (read back); last "
                                    f"error: {cause}")
                    continue
            problems.append(f"{new} document(s) failed to reach {where}; last error: "
                            f"{cause}")
        return problems

    def _read_back(self, uid: str) -> list[str] | None:
        """What the catalog lacks of run ``uid``; None when it cannot be read back."""
        try:
            return self.ledger.shortfalls(self.catalog, uid)
        except Exception as exc:  # noqa: BLE001 - the write failure is reported instead
            log.warning("could not read run %s back from the catalog: %s", uid, exc)
            return None

    def check_stored(self, name: str, doc: dict) -> None:
        """RunEngine subscriber: a run is finished only once it is stored. At its stop
        document, wait for the catalog and run-file writers and raise if any document
        failed to reach them, so the run fails loudly at the prompt (the stop document
        itself has gone out already) instead of a later, unrelated ``flush``.

        When catalog requests failed during the run, the run is read back from the
        catalog (`RunLedger.shortfalls`): the error then says which streams, events
        and rows are missing, and a run the writer completed after all (it resends
        what it could not write) is not reported as lost, only logged."""
        if name != "stop":
            return
        uid = doc["run_start"]
        try:
            problems = self._new_failures(self.store_timeout_s, uid)
        finally:
            if self.ledger is not None:
                self.ledger.forget(uid)
        if problems:
            said = f"run {uid} is not fully stored: " + "; ".join(problems)
            if self.marks is not None:
                self.marks.note_unstored(uid, said)
            raise RuntimeError(said)
        if self.marks is not None:  # storing works (again): earlier failures are closed
            self.marks.close_unstored(self.catalog, self.settings.runs_dir)
        if doc.get("exit_status") == "fail":
            # a plan that keeps what it took (frames dropped or never triggered: holes
            # in the run) returns normally; its RunEngineResult says "success" (the
            # plan raised nothing), so the stop document's verdict is said here
            log.warning("run %s stored as failed: %s", uid, doc.get("reason") or
                        "no reason given")

    def abort_paused_run(self) -> None:
        """A session closed (or a Python that exits) with its RunEngine paused: the run
        is aborted first, so its cleanup stops the hardware and what was stored goes
        into the catalog. Left paused, the camera kept capturing and the board stayed
        paused with no one to resume them, and every later scan, from any session,
        was refused as "hardware in use"."""
        if self.RE.state != "paused":
            return
        log.warning("the session ends with the RunEngine paused: aborting the run (its "
                    "hardware is stopped; what was stored is kept)")
        try:
            self.RE.abort("the session ended while the run was paused")
        except Exception as exc:  # noqa: BLE001 - the run's own failure: said, then close
            log.error("aborting the paused run failed: %s", exc)

    def close(self) -> None:
        """Flush and stop the catalog and run-file writer threads, close the 0MQ
        publisher, deliver what is queued for Kafka. Closing again does nothing (the
        profile also closes at exit). A run left paused is aborted first."""
        if self._closed:
            return
        self._closed = True
        self.abort_paused_run()
        if self.publisher is not None:
            from beamline_ls.zmq_stream import close_publisher

            self.RE.unsubscribe(self.publisher_token)  # a later run must not send to it
            close_publisher(self.publisher)
            self.publisher = None
        if self.kafka is not None:
            self.RE.unsubscribe(self.kafka_token)
            self.kafka.close()
            self.kafka = None
        if self.copy_watcher is not None:
            self.copy_watcher.close()
        if self.catalog_feed is not None:
            self.catalog_feed.flush()
            self.catalog_feed.close()
        if self.run_file_feed is not None:
            self.run_file_feed.flush()
            self.run_file_feed.close()
            self.run_file_writer.close()
        if self._check_token is not None:
            self.RE.unsubscribe(self._check_token)
            self._check_token = None
        if isinstance(self.RE.md, SharedRunMetadata):
            # let go of the shared store; a RunEngine used after close keeps a copy
            store = self.RE.md
            self.RE.md = dict(store)
            store.close()


def summary_table(camera: str = "camera"):
    """bluesky's LiveTable of the fly scans' summary stream (a row per volume, or per
    block of 100 planar frames); keys a run lacks are left out by LiveTable itself."""
    from bluesky.callbacks import LiveTable

    from devices.camera import SUMMARY_KEYS

    fields = [f"{camera}_summary_{k}" for k in ("volume", "block", *SUMMARY_KEYS)]
    return LiveTable(fields, stream_name="summary", default_prec=1)


def make_session(
    settings: Settings,
    *,
    progress_bar: bool = True,
    best_effort: bool = False,
    run_files: bool = True,
) -> Session:
    """RunEngine + catalog + subscriptions.

    ``RE.md`` is persisted under the data directory and shared with every other session
    on it (IPython, the queue server's worker), so ``scan_id`` keeps counting across
    restarts and never repeats between processes. ``best_effort`` adds bluesky's live
    table and plots, and a LiveTable of the summary stream (IPython).
    ``run_files`` writes every run also as one HDF5 file under ``<data dir>/runs``.
    A background watcher points the catalog at each frame file's verified copy once
    the camera IOC has copied it to its mirror destination (``beamline_ls.relocation``).
    Runs left open by a RunEngine process that died are closed first, as failed
    (``beamline_ls.run_repair``).
    """
    from bluesky.utils import ProgressBarManager
    from bluesky_tiled_plugins import TiledWriter

    from beamline_ls.run_engine import RunEngine
    from beamline_ls.store_check import refuse_unstorable

    # a session writes its scan ids (state) and, with SQLite, the catalog: refused at
    # once naming the folder, not with sqlite's "unable to open database file"
    settings.ensure_dirs(writable=(settings.state_dir,) + (
        (settings.catalog_dir,) if settings.catalog_is_sqlite else ()))
    catalog, tree = open_embedded_catalog(settings, create=True)
    marks = RunMarks(settings.state_dir / "open-runs")
    # runs of RunEngine processes that died in them (their run files too)
    close_abandoned_runs(catalog, marks, settings.runs_dir)
    md = SharedRunMetadata(settings.state_dir / "runengine-md.sqlite",
                           legacy_dir=settings.state_dir / "runengine-md")
    RE = RunEngine({}, call_returns_result=True, scan_id_source=md.next_scan_id)
    RE.md = md
    RE.md.setdefault("beamline_id", "beamline-ls")
    # batch_size=1: each document reaches the catalog as it is emitted, so a scan's
    # frames are registered at every collect (about twice a second). Other hosts then
    # read a running scan from the catalog, and a RunEngine process that dies mid-run
    # leaves every frame collected so far in it. bluesky-tiled-plugins' default
    # (10000) kept them all until the stop document: nothing while the run went, and
    # nothing at all for a run whose process died.
    writer = TiledWriter(catalog, batch_size=1)
    # Catalog writes (~25 ms a request) must not hold up the RunEngine.
    # When it falls behind, it merges what is queued (one request per stream).
    feed = BackgroundCallback(writer, coalesce=coalesce)
    RE.subscribe(feed)
    ledger = RunLedger()
    RE.subscribe(ledger)
    run_writer = run_feed = None
    if run_files:
        from beamline_ls.runfile import RunFileWriter

        run_writer = RunFileWriter(settings.runs_dir)
        run_feed = BackgroundCallback(run_writer, name="run-file-writer")
        RE.subscribe(run_feed)
    pub = pub_token = None
    if settings.zmq_publish is not None:
        from beamline_ls.zmq_stream import publisher

        pub = publisher(settings.zmq_publish)
        pub_token = RE.subscribe(pub)
    kafka = kafka_token = None
    if settings.kafka is not None:
        from beamline_ls.kafka_stream import KafkaPublisher

        kafka = KafkaPublisher(settings.kafka)
        kafka.check_broker()
        kafka_token = RE.subscribe(kafka)
    if progress_bar:
        RE.waiting_hook = ProgressBarManager()
    bec = None
    if best_effort:
        from bluesky.callbacks.best_effort import BestEffortCallback

        bec = BestEffortCallback()
        RE.subscribe(bec)
        RE.subscribe(summary_table())  # BEC tables only 'primary'; fly scans fill 'summary'
    from beamline_ls.relocation import CopyWatcher

    watcher = None
    if settings.catalog_is_sqlite:
        watcher = CopyWatcher(settings, allow_root=lambda root: allow_reading_from(tree, root))
    elif settings.mirror_dir is not None or settings.mirror_roots:
        log.warning("the catalog is in PostgreSQL: it keeps reading frame files from "
                       "staging (%s); verified copies are not swapped in (SQLite only)",
                       settings.frames_dir)
    session = Session(RE=RE, catalog=catalog, settings=settings, tiled_writer=writer,
                      bec=bec, catalog_feed=feed, run_file_writer=run_writer,
                      run_file_feed=run_feed, copy_watcher=watcher, publisher=pub,
                      publisher_token=pub_token, kafka=kafka, kafka_token=kafka_token,
                      ledger=ledger, marks=marks)
    # before a plan moves anything: a run that could not be stored is not started
    RE.preprocessors.append(refuse_unstorable(settings, run_files))
    # after the writers: they have the stop
    session._check_token = RE.subscribe(session.check_stored, "stop")
    RE.subscribe(marks)  # after check_stored: a run not stored stays marked open
    return session
