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
import os
import signal
import threading
import time
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


#: how long a run may take to reach its pause after SIGTERM/SIGHUP before the session
#: ends anyway (its run then aborted on the way out, as for any paused run)
PAUSE_PATIENCE_S = 30.0


def end_session_on_signals(session, signals=(signal.SIGTERM, signal.SIGHUP)) -> None:
    """SIGTERM (systemd, a batch scheduler, ``kill``) and SIGHUP (the terminal or the
    SSH connection closed) end an interactive session the way Ctrl-C and leaving do:
    a running plan is paused at once (as by two Ctrl-C), then the session ends, its
    paused run aborted on the way out (`Session.abort_paused_run`: camera and scan
    board stopped, what was stored kept, the run closed as aborted). Their default
    ended Python at once: the camera went on capturing, the scan board scanning, and
    the run stayed open until another session found it.

    A signal raised while the RunEngine runs cannot end the main thread there
    (bluesky waits for its plan in the main thread and takes an exception there as a
    panic), so the pause is requested and the signal is raised again once the plan
    has stopped. Call from the main thread; a queue server's worker has its own
    shutdown and is left alone."""
    ending: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers belong to the main thread
    from beamline_ls.shutdown import at_main_thread_exit

    # once the main thread ends (a script's last line, or its exception), the exit
    # hooks abort and store a paused run: a signal then must not cut them short
    at_main_thread_exit(lambda: ending.append("exit"))

    def end(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if session.closed or ending:  # already on the way out
            return
        if session.RE.state == "running":
            logger.warning("%s: pausing the run now; the session then ends and aborts "
                           "it (hardware stopped, what was stored kept)", name)
            session.RE.request_pause(defer=False)
            threading.Thread(target=_raise_again_when_stopped, args=(session, signum),
                             daemon=True, name="end-on-signal").start()
            return
        ending.append(name)
        logger.warning("%s: the session ends", name)
        raise SystemExit(128 + signum)

    for sig in signals:
        if signal.getsignal(sig) is not signal.SIG_IGN:  # nohup's SIGHUP stays ignored
            signal.signal(sig, end)


def _raise_again_when_stopped(session, signum: int) -> None:
    deadline = time.monotonic() + PAUSE_PATIENCE_S
    while session.RE.state == "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # the main thread leaves the RunEngine's call
    os.kill(os.getpid(), signum)
