"""The run-file writer: a document callback that writes one HDF5 file per run.

Subscribe it to a RunEngine (the session does, on its own background thread) or feed
it a stored run's documents (``beamline-ls export``): both paths go through the same
three steps, so they produce the same file:

1. validate the incoming document against event-model's JSON schema (an invalid
   document raises :class:`InvalidDocumentError` naming the document and the field);
2. normalise it with ``bluesky_tiled_plugins``' ``RunNormalizer`` (the catalog's own
   normaliser: Resource/Datum become StreamResource/StreamDatum, data keys get
   ``dtype_numpy``), so live documents look like the catalog's;
3. write it into the run's :class:`~beamline_ls.runfile.runfile.RunFile`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import jsonschema
from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer
from event_model import DocumentNames, DocumentRouter, schema_validators

from beamline_ls import log as bls_log
from beamline_ls.pipeline.diskspace import DiskFullError, MiB, RoomPastEnd, free_bytes, is_disk_full
from beamline_ls.runfile.runfile import RunFile

log = logging.getLogger(__name__)


class InvalidDocumentError(ValueError):
    """A document that does not follow event-model's schema was refused."""


def validate_document(name: str, doc: dict) -> None:
    """Raise :class:`InvalidDocumentError` unless ``doc`` is a valid ``name`` document."""
    try:
        kind = DocumentNames[name]
    except KeyError:
        raise InvalidDocumentError(f"unknown document type {name!r}") from None
    try:
        schema_validators[kind].validate(doc)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        ident = doc.get("uid") or doc.get("datum_id") or "without uid"
        raise InvalidDocumentError(
            f"run file writer refused an invalid {name} document ({ident}): "
            f"{exc.message} (at {where})") from None


def default_run_path(runs_dir: str | Path, start: dict) -> Path:
    """``<runs_dir>/<YYYY-MM-DD>/<scan_id>-<first 8 of uid>.h5`` (local date of the run)."""
    day = time.strftime("%Y-%m-%d", time.localtime(start["time"]))
    scan_id = start.get("scan_id", "noscan")
    return Path(runs_dir) / day / f"{scan_id}-{start['uid'][:8]}.h5"


#: disk room a run file holds past its end while it is written (`RoomPastEnd`): one
#: document's writes and the close fit many times over (a demo run's whole file is
#: 0.26 MiB)
RUN_FILE_ROOM = 2 * MiB


class RunFileAbandoned(DiskFullError):
    """A run file stopped being written (its disk filled); later documents of its run
    are refused with this, so every document lost is counted."""


class _Run:
    """One run in progress: its normaliser, its file once started, and the disk room
    the file holds past its end (`RoomPastEnd`: HDF5 crashed the process when the
    disk filled under a run file). When the room cannot be topped up before a
    document, the file is closed on what it holds, saying it is incomplete and why.
    """

    def __init__(self, path: Path, overwrite: bool, written_by: str):
        self.path, self.overwrite, self.written_by = path, overwrite, written_by
        self.file: RunFile | None = None
        self.abandoned: RunFileAbandoned | None = None
        self.run_id: str | int = ""
        self._room: RoomPastEnd | None = None
        self._error: BaseException | None = None
        self.normalizer = RunNormalizer()
        self.normalizer.subscribe(self._sink)

    def feed(self, name: str, doc: dict) -> None:
        if self.abandoned is not None:
            raise self.abandoned
        self._error = None
        getattr(self.normalizer, name)(doc)
        if self._error is not None:
            raise self._error

    def _sink(self, name: str, doc: dict) -> None:
        # The normaliser's dispatcher only warns about exceptions; keep them for feed().
        try:
            name = getattr(name, "name", name)
            if name == "start":
                self._start(doc)
            elif self.file is not None:
                self._room.hold()
                getattr(self.file, name)(doc)
        except Exception as exc:
            # a file that was never created is refused as it is: nothing to close
            self._error = self._abandon(exc) if is_disk_full(exc) and self.file else exc

    def _start(self, doc: dict) -> None:
        self.run_id = doc.get("scan_id", doc["uid"])
        self.path.parent.mkdir(parents=True, exist_ok=True)
        free = free_bytes(self.path.parent)
        if free < 2 * RUN_FILE_ROOM:
            raise DiskFullError(f"disk full: {free / MiB:.2f} MiB free in "
                                f"{self.path.parent}, a run file needs at least "
                                f"{2 * RUN_FILE_ROOM / MiB:.0f} MiB to start")
        self.file = RunFile(self.path, doc, overwrite=self.overwrite,
                            written_by=self.written_by)
        self._room = RoomPastEnd(self.path, RUN_FILE_ROOM)
        self._room.hold()

    def _abandon(self, exc: BaseException) -> RunFileAbandoned:
        """Close the file on the room it holds, marked incomplete with the cause; an
        error for this and every later document of the run."""
        try:
            self.file.abandon(f"run file incomplete: {exc}")
            kept = f"{self.path} is closed, marked incomplete"
        except Exception as close_exc:  # noqa: BLE001 - an unreadable file goes
            log.error("run file %s could not be closed (%s): removed", self.path,
                      close_exc)
            self.path.unlink(missing_ok=True)
            kept = f"{self.path} could not be closed and was removed"
        self.release()
        self.abandoned = RunFileAbandoned(
            f"the run file stopped being written: {exc}; {kept}; the catalog has the "
            f"run: 'beamline-ls export {self.run_id} --to {self.path} --overwrite' "
            "writes the file again once there is room")
        return self.abandoned

    def release(self) -> None:
        """Give back the disk room not used (once the file is closed)."""
        if self._room is not None:
            self._room.release()


class RunFileWriter(DocumentRouter):
    """Write every run it sees to its own HDF5 file.

    Parameters
    ----------
    runs_dir:
        Where live run files go (:func:`default_run_path` below it).
    path_for:
        Alternatively, a function ``start document -> path`` (export uses this).
    overwrite:
        Replace an existing file instead of refusing the run.
    written_by:
        Recorded in the file's ``file_written_by`` attribute ("live", "export").
    """

    def __init__(self, runs_dir: str | Path | None = None, *,
                 path_for: Callable[[dict], Path] | None = None, overwrite: bool = False,
                 written_by: str = "live"):
        if (runs_dir is None) == (path_for is None):
            raise ValueError("give exactly one of runs_dir and path_for")
        self._path_for = path_for or (lambda start: default_run_path(runs_dir, start))
        self.overwrite = overwrite
        self.written_by = written_by
        self.last_path: Path | None = None
        self._runs: dict[str, _Run] = {}
        self._owner: dict[str, str] = {}  # descriptor / resource uid -> run uid
        self._current: str | None = None
        self._skipped: set[str] = set()

    def __call__(self, name: str, doc: dict, validate: bool = False) -> tuple[str, dict]:
        validate_document(name, doc)
        return super().__call__(name, doc, validate)

    # -- routing ------------------------------------------------------------------
    def _feed(self, run_uid: str | None, name: str, doc: dict) -> None:
        run = self._runs.get(run_uid or "")
        if run is None:
            if run_uid not in self._skipped:
                log.info("run file writer: %s document of a run it did not see start "
                         "(or whose file could not be created); ignored", name)
                self._skipped.add(run_uid or "")
            return
        run.feed(name, doc)

    def start(self, doc: dict) -> None:
        path = Path(self._path_for(doc))
        run = _Run(path, self.overwrite, self.written_by)
        try:
            run.feed("start", doc)
        except Exception:
            self._skipped.add(doc["uid"])
            raise
        self._runs[doc["uid"]] = run
        self._current = doc["uid"]
        self.last_path = path

    def descriptor(self, doc: dict) -> None:
        self._owner[doc["uid"]] = doc["run_start"]
        self._feed(doc["run_start"], "descriptor", doc)

    def event(self, doc: dict) -> None:
        self._feed(self._owner.get(doc["descriptor"]), "event", doc)

    def event_page(self, doc: dict) -> None:
        self._feed(self._owner.get(doc["descriptor"]), "event_page", doc)

    def resource(self, doc: dict) -> None:
        run_uid = doc.get("run_start") or self._current
        self._owner[doc["uid"]] = run_uid
        self._feed(run_uid, "resource", doc)

    def datum(self, doc: dict) -> None:
        self._feed(self._owner.get(doc["resource"]), "datum", doc)

    def datum_page(self, doc: dict) -> None:
        self._feed(self._owner.get(doc["resource"]), "datum_page", doc)

    def stream_resource(self, doc: dict) -> None:
        run_uid = doc.get("run_start") or self._current
        self._owner[doc["uid"]] = run_uid
        self._feed(run_uid, "stream_resource", doc)

    def stream_datum(self, doc: dict) -> None:
        self._feed(self._owner.get(doc["descriptor"]), "stream_datum", doc)

    def stop(self, doc: dict) -> None:
        uid = doc["run_start"]
        run = self._runs.get(uid)
        try:
            self._feed(uid, "stop", doc)
        finally:
            self._runs.pop(uid, None)
            self._owner = {k: v for k, v in self._owner.items() if v != uid}
            if self._current == uid:
                self._current = None
            if run is not None:
                if run.file is not None and run.abandoned is None:
                    run.file.close()
                run.release()
        if run is not None and run.abandoned is None:
            bls_log.success(log, "run file %s (%s)", run.path, doc.get("exit_status"))

    def close(self) -> None:
        """Close files of runs still open (they say ``exit_status=incomplete``)."""
        for uid, run in list(self._runs.items()):
            if run.file is not None and run.abandoned is None:
                log.info("run file %s closed without a stop document", run.path)
                run.file.close()
            run.release()
            self._runs.pop(uid, None)
