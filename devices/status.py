"""Statuses that end in bounded time: progress with a stall watchdog (bluesky's progress
bar draws it), and a deadline for any status with its cause in words."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence

from ophyd.status import DeviceStatus, Status
from ophyd.utils import InvalidState


class ProgressStatus(DeviceStatus):
    """Finishes when ``update(current)`` reaches ``target`` and ``done_check()`` is true;
    fails if progress stalls for ``stall_timeout`` seconds.

    Implements ``watch`` so :class:`bluesky.utils.ProgressBarManager` draws a bar.
    ``hold()``/``release()`` suspend the stall watchdog while the RunEngine is paused
    (no progress is then expected); released, the stall clock starts again.
    ``update(current, activity)``: ``activity`` (e.g. frames, where ``current`` counts
    whole volumes) also counts as progress, so a slow volume is not a stall.
    ``stall_cause()`` (on the watchdog's thread, may block briefly) says why nothing
    moved; its words are added to the stall's error.
    """

    def __init__(self, device, target: int, unit: str, stall_timeout: float,
                 done_check: Callable[[], bool] = lambda: True,
                 error_check: Callable[[], str] = lambda: "",
                 stall_cause: Callable[[], str] = lambda: ""):
        super().__init__(device)
        self.target = target
        self.unit = unit
        self.current = 0
        self._watchers: list[Callable] = []
        self._finish_lock = threading.Lock()  # monitor callbacks and the watchdog race
        self._t0 = time.monotonic()
        self._last_progress = self._t0
        self._done_check = done_check
        self._error_check = error_check
        self._stall_cause = stall_cause
        self._activity: object = None
        self._stall_timeout = stall_timeout
        self._held = False
        self._watchdog = threading.Thread(target=self._watch_stall, daemon=True)
        self._watchdog.start()

    def hold(self) -> None:
        """Stop counting towards a stall (the acquisition is paused on purpose)."""
        self._held = True

    def release(self) -> None:
        """Count towards a stall again, from now."""
        self._last_progress = time.monotonic()
        self._held = False

    def abandon(self, reason: str) -> None:
        """Fail now with ``reason`` unless already done (the acquisition it watched was
        replaced: it must not linger and report on the next one)."""
        with self._finish_lock:
            if not self.done:
                self.set_exception(RuntimeError(f"{self.device.name}: {reason}"))

    def watch(self, func: Callable) -> None:
        self._watchers.append(func)
        self._notify()

    def update(self, current: int, activity: object = None) -> None:
        if self.done:
            return
        if current != self.current or (activity is not None and activity != self._activity):
            self._last_progress = time.monotonic()
        if activity is not None:
            self._activity = activity
        self.current = current
        self._notify()
        # Channel Access reads happen outside the lock: holding it while reading would
        # block ophyd's callback thread, which those reads themselves need.
        error = self._error_check()
        finished = not error and current >= self.target and self._done_check()
        if not (error or finished):
            return
        with self._finish_lock:
            if self.done:
                return
            if error:
                self.set_exception(RuntimeError(f"{self.device.name}: {error}"))
            else:
                self.set_finished()

    def _notify(self) -> None:
        elapsed = time.monotonic() - self._t0
        rate = self.current / elapsed if elapsed > 0 else 0
        remaining = (self.target - self.current) / rate if rate > 0 else None
        for w in list(self._watchers):
            w(name=self.device.name, current=self.current, initial=0, target=self.target,
              unit=self.unit, precision=0, time_elapsed=elapsed, time_remaining=remaining,
              fraction=(self.target - self.current) / max(self.target, 1))

    def _watch_stall(self) -> None:
        try:
            self._watch_stall_loop()
        except Exception as exc:  # e.g. the device was destroyed at shutdown
            if not self.done:
                with self._finish_lock:
                    if not self.done:
                        self.set_exception(exc)

    def _watch_stall_loop(self) -> None:
        while not self.done:
            time.sleep(0.1)
            if self.done:
                return
            if self._held:
                self._last_progress = time.monotonic()
            elif time.monotonic() - self._last_progress > self._stall_timeout:
                try:
                    cause = self._stall_cause()
                except Exception as exc:  # noqa: BLE001 - the stall is still reported
                    cause = f"its cause could not be read: {exc}"
                with self._finish_lock:
                    if not self.done:
                        self.set_exception(TimeoutError(
                            f"{self.device.name}: no progress for {self._stall_timeout:.1f} s "
                            f"at {self.current}/{self.target} {self.unit}"
                            + (f": {cause}" if cause else "")))
                return
            # re-check completion conditions that do not come with a counter change
            self.update(self.current)


def within(status: Status, seconds: float, cause: Callable[[], str]) -> Status:
    """Fail ``status`` with ``TimeoutError(cause())`` unless it is done within
    ``seconds``; return it. ``cause`` runs on a thread of its own (Channel Access reads
    are allowed there) and says what was asked and what the IOC says of it.

    Why: a put with completion waits for the IOC's answer without end, and an IOC
    whose worker hangs (a vendor SDK that never returns, a file open on a dead network
    share) or that is frozen answers no put; a scan waiting on one hung forever,
    unless the user pressed Ctrl-C, without a word on why."""
    def expire() -> None:
        if status.done:
            return
        try:
            why = cause()
        except Exception as exc:  # noqa: BLE001 - the timeout is still reported
            why = f"did not finish in {seconds:g} s (its cause could not be read: {exc})"
        with contextlib.suppress(InvalidState):  # finished while the cause was read
            status.set_exception(TimeoutError(why))

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    status.add_callback(lambda _: timer.cancel())
    return status


def settle(status: Status, exc: Exception | None = None) -> None:
    """Finish ``status`` (failed with ``exc`` if given) unless it already is: a
    deadline (:func:`within`) may have failed it while its IOC's answer was on the way."""
    with contextlib.suppress(InvalidState):
        if exc is None:
            status.set_finished()
        else:
            status.set_exception(exc)


def late(device, ioc: str, what: str, seconds: float, words: Sequence) -> str:
    """Why ``device``'s IOC has not done ``what`` in ``seconds`` (for :func:`within`,
    on its thread): the IOC's own words (the signals ``words``, read fresh), or that it
    does not answer."""
    try:
        said = [str(sig.get(use_monitor=False, timeout=2.0)) for sig in words]
    except Exception as exc:  # noqa: BLE001 - that is the cause
        return f"{device.name}: {ioc_silence(ioc, exc)}; it {what} in {seconds:g} s"
    text = "; ".join(w for w in said if w) or "nothing"
    return (f"{device.name}: the {ioc} IOC {what} in {seconds:g} s (a driver call or "
            f"file operation there does not return; the IOC says: {text})")


def ioc_silence(ioc: str, exc: Exception | str) -> str:
    """Words for a read that failed while its IOC's channels stay connected: the IOC
    does not answer (frozen, or too busy to serve Channel Access)."""
    detail = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
    return (f"the {ioc} IOC does not answer (frozen, or too busy to serve Channel "
            f"Access: {detail})")
