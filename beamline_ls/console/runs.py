"""The last runs of the catalog, for the console's runs panel.

Opening a catalog takes seconds (imports) and a search hits a database, so a worker
thread refreshes the list every few seconds and the page reads the copy it keeps.
A run without a stop document is the one in progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

REFRESH_S = 5.0
MAX_RETRY_S = 20.0
LAST_RUNS = 10


def run_summary(run: Any) -> dict:
    """What the runs panel shows of one bluesky run client."""
    md = run.metadata
    start, stop = md.get("start") or {}, md.get("stop") or {}
    return {"uid": start.get("uid", ""), "scan_id": start.get("scan_id"),
            "plan_name": start.get("plan_name", ""), "time": start.get("time"),
            "sample": start.get("sample_name", start.get("sample", "")),
            "exit_status": stop.get("exit_status") if stop else "running",
            "reason": stop.get("reason", "") if stop else "",
            "duration": (stop["time"] - start["time"]) if stop and "time" in start else None}


class RunsPoller:
    """Keeps the last ``LAST_RUNS`` runs of the catalog that ``open_catalog`` opens."""

    def __init__(self, open_catalog: Callable[[], Any] | None) -> None:
        self._open = open_catalog
        self._lock = threading.Lock()
        self._runs: list[dict] = []
        self._error = "" if open_catalog else "no catalog configured"
        self._updated = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._open is None:
            return
        self._thread = threading.Thread(target=self._loop, name="console-runs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)  # a daemon that only reads: not worth a wait

    def _loop(self) -> None:
        catalog = None
        failures = 0
        while not self._stop.is_set():
            try:
                if catalog is None:
                    catalog = self._open()  # seconds of CPU: only again after a failure
                runs = [run_summary(r) for r in catalog.values().tail(LAST_RUNS)]
                with self._lock:
                    self._runs, self._error, self._updated = runs[::-1], "", time.time()
                failures = 0
            except FileNotFoundError as exc:  # a new deployment: no run stored yet
                with self._lock:
                    self._error = f"no runs yet ({exc})"[:300]
                catalog = None
                failures += 1
            except Exception as exc:  # shown on the page; the console keeps going
                with self._lock:
                    self._error = f"catalog: {exc}"[:300]
                log.info("console: reading the catalog failed: %s", exc)
                catalog = None
                failures += 1
            # a catalog that cannot be read is tried again less and less often
            self._stop.wait(min(MAX_RETRY_S, REFRESH_S * 2 ** failures) if failures
                            else REFRESH_S)

    def snapshot(self) -> dict:
        with self._lock:
            return {"runs": list(self._runs), "error": self._error, "updated": self._updated}
