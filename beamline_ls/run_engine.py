"""The session's RunEngine: bluesky's, with stop documents that say how a run was ended."""

from __future__ import annotations

from typing import Any

from bluesky import RunEngine as _BlueskyRunEngine


def _who() -> str:
    from bluesky_queueserver import is_re_worker_active

    return "through the queue server" if is_re_worker_active() else "at the prompt"


class RunEngine(_BlueskyRunEngine):
    """bluesky's RunEngine; a run ended by request says so in its stop document.

    Why: the stop document's ``reason`` is what a data user reads to learn why a run
    ended early. The queue server ends runs with ``RE.abort()``, ``RE.stop()`` and
    ``RE.halt()`` (``qserver re abort|stop|halt``), the prompt likewise after Ctrl-C:
    every such run was stored with an empty reason, and a stopped run, stored as
    ``success`` by bluesky's convention, could not be told from a complete one. A
    reason given to ``abort`` is kept as it is.
    """

    def abort(self, reason: str = "") -> Any:
        return super().abort(reason or f"aborted {_who()} (abort)")

    def stop(self) -> Any:
        self._say_why(f"stopped {_who()} (stop): ended early, what was taken is kept")
        return super().stop()

    def halt(self) -> Any:
        self._say_why(f"halted {_who()} (halt): no cleanup ran")
        return super().halt()

    def _say_why(self, reason: str) -> None:
        """bluesky (1.15) takes no reason for ``stop()`` or ``halt()`` and keeps the one
        it stores in ``RunEngine._reason`` (reset when a plan starts). Version guard:
        without that attribute the reason stays bluesky's (empty)."""
        if isinstance(getattr(self, "_reason", None), str) and not self._reason \
                and self.state != "idle":
            self._reason = reason
