"""The bluesky queue server as the console shows it: manager state, the queue, the
running item and the last finished ones, through bluesky-httpserver with its API key
(the stock client, ``bluesky_queueserver_api``). A worker thread polls once a second;
the page reads the copy it keeps. Starting and stopping the queue are the controls."""

from __future__ import annotations

import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

POLL_S = 1.0
LAST_HISTORY = 5
ACTIONS = ("start", "stop", "stop_cancel")


def item_summary(item: dict) -> dict:
    """Plan name, its parameters in one line, who queued it, and how it ended."""
    args = [repr(a) for a in item.get("args", [])]
    args += [f"{k}={v!r}" for k, v in (item.get("kwargs") or {}).items()]
    result = item.get("result") or {}
    return {"uid": item.get("item_uid", ""), "name": item.get("name", ""),
            "params": ", ".join(args)[:200], "user": item.get("user", ""),
            "exit_status": result.get("exit_status", ""), "msg": result.get("msg", "")[:200]}


class QueuePoller:
    """Polls the queue server at ``uri`` (None: no queue server configured)."""

    def __init__(self, uri: str | None, api_key: str | None = None) -> None:
        self.uri = uri
        self._api_key = api_key
        self._lock = threading.Lock()
        self._state: dict[str, Any] = {"configured": uri is not None, "error": "",
                                       "status": {}, "queue": [], "running": None,
                                       "history": []}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._api = None

    def _client(self):
        if self._api is None:
            from bluesky_queueserver_api.http import REManagerAPI

            api = REManagerAPI(http_server_uri=self.uri, http_auth_provider=None)
            if self._api_key:
                api.set_authorization_key(api_key=self._api_key)
            self._api = api
        return self._api

    def start(self) -> None:
        if self.uri is None:
            return
        self._thread = threading.Thread(target=self._loop, name="console-queue", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)  # a daemon that only reads: not worth a wait
        if self._api is not None:
            self._api.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(POLL_S)

    def poll(self) -> None:
        try:
            api = self._client()
            status = api.status()
            queue = api.queue_get()
            history = api.history_get()
            state = {
                "status": {k: status.get(k) for k in (
                    "manager_state", "items_in_queue", "items_in_history", "re_state",
                    "worker_environment_exists", "queue_stop_pending")},
                "queue": [item_summary(i) for i in queue.get("items", [])],
                "running": item_summary(queue["running_item"])
                if queue.get("running_item") else None,
                "history": [item_summary(i)
                            for i in history.get("items", [])[-LAST_HISTORY:]][::-1],
                "error": ""}
        except Exception as exc:  # shown on the page; polling goes on
            state = {"error": f"queue server {self.uri}: {exc}"[:300]}
            log.info("console: queue server not answering: %s", exc)
        with self._lock:
            self._state.update(state)

    def control(self, action: str) -> dict:
        """``start``, ``stop`` (after the running plan) or ``stop_cancel``; the queue
        server's refusal comes back as a ValueError with its words."""
        if self.uri is None:
            raise ValueError("no queue server configured (beamline-ls console --queue URI)")
        if action not in ACTIONS:
            raise ValueError(f"queue action must be one of {ACTIONS}, got {action!r}")
        try:
            reply = getattr(self._client(), f"queue_{action}")()
        except Exception as exc:
            raise ValueError(f"queue {action} refused: {exc}") from exc
        self.poll()
        return reply

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self._state)
