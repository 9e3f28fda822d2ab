"""Where the analyzer's long jobs run (reference folding, adaptive alignment).

Why: a live analyzer must finish every frame well inside a frame interval; folding a
reference over several beats or aligning a new one takes tens to hundreds of
milliseconds, so live systems hand it to a worker thread
(`concurrent.futures.ThreadPoolExecutor`) and adopt the result when it is done.
Offline replay wants the same results on every run, so it uses one of these:

- `ImmediateExecutor` runs a job inside ``submit`` (the result is ready at once);
- `InlineExecutor` runs queued jobs when ``run_pending`` is called (the result is
  adopted on a later frame, as with a worker, but deterministically).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

logger = logging.getLogger(__name__)


class Executor(Protocol):
    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future: ...


def _run_into(fut: Future, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        fut.set_result(fn(*args))
    except Exception as exc:  # noqa: BLE001 - delivered to whoever polls the future
        fut.set_exception(exc)


def finished_result(job: Future | None, failure: str) -> Any | None:
    """``job``'s result once it is done; None while it runs, or when it failed (the
    error is logged with ``failure``, e.g. "... failed; keeping the old reference")."""
    if job is None or not job.done():
        return None
    try:
        return job.result()
    except Exception:  # noqa: BLE001 - a background job must not stop the analysis
        logger.exception(failure)
        return None


class ImmediateExecutor:
    """Runs each job as it is submitted (no threads)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        fut: Future = Future()
        _run_into(fut, fn, args)
        return fut


class InlineExecutor:
    """Runs submitted jobs when `run_pending` is called (no threads; deterministic)."""

    def __init__(self) -> None:
        self._jobs: list[tuple[Future, Callable[..., Any], tuple[Any, ...]]] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future:
        fut: Future = Future()
        self._jobs.append((fut, fn, args))
        return fut

    def run_pending(self) -> None:
        jobs, self._jobs = self._jobs, []
        for fut, fn, args in jobs:
            _run_into(fut, fn, args)
