"""The session's RunEngine: bluesky's, with an abort that always says who asked."""

from __future__ import annotations

from typing import Any

from bluesky import RunEngine as _BlueskyRunEngine


class RunEngine(_BlueskyRunEngine):
    """bluesky's RunEngine; ``abort()`` without a reason records where it came from.

    Why: the stop document's ``reason`` is what a data user reads to learn why a run
    ended early. The queue server aborts with ``RE.abort()`` (``qserver re abort``,
    the HTTP API's ``re_abort``) and the prompt's habit is ``RE.abort()`` after
    Ctrl-C: both stored aborted runs with an empty reason, indistinguishable from
    each other and saying nothing. A reason given is kept as it is.
    """

    def abort(self, reason: str = "") -> Any:
        if not reason:
            from bluesky_queueserver import is_re_worker_active

            reason = ("aborted through the queue server (re abort)" if is_re_worker_active()
                      else "aborted at the prompt (RE.abort())")
        return super().abort(reason)
