"""How long-running commands stop: SIGTERM unwinds like Ctrl-C.

Why: service managers (systemd, a facility's start scripts, the tests) stop a command
with SIGTERM, whose default ends Python at once, without the ``finally`` blocks that
close sockets and child processes. And a command started in the background of a
script inherits SIGINT *ignored*, so Ctrl-C-style stopping cannot reach it at all.
A command that runs an asyncio event loop (the IOC) has the loop cancel its main task
instead (`cancel_on_stop_signals`): an exception raised at an arbitrary point lands in
whichever coroutine happens to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator

logger = logging.getLogger(__name__)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (call it from there)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


@contextlib.contextmanager
def cancel_on_stop_signals(task: asyncio.Task,
                           before: Callable[[], Awaitable[None]] | None = None,
                           before_timeout: float = 15.0) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT cancel ``task``, the main task of the running
    event loop; a second signal raises KeyboardInterrupt out of the loop (a shutdown
    that hangs can still be ended). On the way out `stop_on_sigterm` holds again, for
    the event loop's own cleanup and whatever the caller closes after it.

    ``before``: a coroutine function run (for at most ``before_timeout`` s) between the
    signal and the cancel, while clients are still served (the IOC closes an open
    capture and says why).

    Why not `stop_on_sigterm` while the loop runs: a KeyboardInterrupt raised wherever
    the main thread happens to be lands inside whichever coroutine step is running. In
    a caproto server that is often a client's circuit handler, which turns it into the
    end of that one circuit and serves on; the IOC then ignores the signal until it is
    killed, and its drivers are never closed. Cancelling the main task goes through
    the server's own shutdown instead. A SIGINT the process inherited as ignored
    (started in the background of a script) stays ignored.
    """
    loop = task.get_loop()
    stopping: list[asyncio.Task] = []

    async def wind_down() -> None:
        try:
            await asyncio.wait_for(before(), before_timeout)
        except Exception:  # noqa: BLE001 - the stop goes on whatever happened
            logger.exception("closing down before the stop failed")
        task.cancel()

    def stop() -> None:
        if task.done() or task.cancelling() or stopping:
            raise KeyboardInterrupt  # out of the loop: the caller's finally runs
        if before is None:
            task.cancel()
        else:
            stopping.append(loop.create_task(wind_down()))

    signals = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        signals.append(signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        stop_on_sigterm()
