"""Run a slow document callback (the catalog writer) off the RunEngine's thread.

bluesky's ``BufferingWrapper`` does this but cannot be flushed without being shut
down; users of a session need "wait until the catalog has this run" (the demo before
printing how to load the data, tests before reading back). Errors in the wrapped
callback are logged at ERROR and counted, never lost silently.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

_SENTINEL = None


class BackgroundCallback:
    """Queue documents and feed them to ``target`` from one worker thread, in order."""

    def __init__(self, target: Callable[[str, dict], Any], name: str = "catalog-writer",
                 coalesce: Callable[[list[tuple[str, Any]]], list[tuple[str, Any]]]
                 | None = None):
        """``coalesce``, when given, rewrites the documents waiting in the queue each
        time the worker takes them (see `beamline_ls.doc_coalesce`)."""
        self.target = target
        self.coalesce = coalesce
        self.errors = 0
        self.last_error: BaseException | None = None
        self._said: set[str] = set()  # failures already logged in full (this run)
        self._queue: queue.Queue[tuple[str, dict] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def __call__(self, name: str, doc: dict) -> None:
        if self._closed:
            raise RuntimeError("callback was closed; cannot accept documents")
        self._queue.put((name, doc))

    def flush(self, timeout: float | None = 60.0) -> bool:
        """Block until every queued document has been processed; False on timeout.
        After :meth:`close` there is nothing left to wait for: True once the worker
        has finished what was queued before the close."""
        if self._closed:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        done = threading.Event()
        self._queue.put(("__flush__", {"event": done}))
        return done.wait(timeout)

    def close(self, timeout: float | None = 60.0) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(_SENTINEL)
            self._thread.join(timeout)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def _take(self) -> tuple[list[tuple[str, Any]], bool]:
        """The next documents: one, or with ``coalesce`` every one queued by now
        (merged); and whether the close sentinel came after them."""
        items = [self._queue.get()]
        if self.coalesce is not None:
            while items[-1] is not _SENTINEL:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
        closing = items[-1] is _SENTINEL
        if closing:
            items.pop()
        if self.coalesce is not None and len(items) > 1:
            try:
                items = self.coalesce(items)
            except Exception:  # noqa: BLE001 - unmerged, every document still goes in
                log.warning("could not merge %d queued documents; writing them one by "
                            "one", len(items), exc_info=True)
        return items, closing

    def _work(self) -> None:
        while True:
            items, closing = self._take()
            for name, doc in items:
                self._feed(name, doc)
            if closing:
                return

    def _feed(self, name: str, doc: Any) -> None:
        if name == "__flush__":
            doc["event"].set()
            return
        if name == "start":  # each run says each of its failures once
            self._said.clear()
        try:
            self.target(name, doc)
        except Exception as exc:  # keep going: later documents may still land
            self.errors += 1
            self.last_error = exc
            # the first of each failure in full; its repeats (a full disk fails every
            # document of the run, 330 traceback lines each) at DEBUG: the run's end
            # counts them all (`Session.check_stored`)
            # by its first line: a database error goes on with the statement and its
            # parameters, different for every document
            said = f"{name}: {type(exc).__name__}: {str(exc).partition(chr(10))[0][:200]}"
            first = said not in self._said
            self._said.add(said)
            log.log(logging.ERROR if first else logging.DEBUG,
                    "%s failed on a %s document: %s%s", type(self.target).__name__, name,
                    exc, "" if first else " (again)", exc_info=first)
