"""How long-running commands stop: SIGTERM unwinds like Ctrl-C.

Why: service managers (systemd, a facility's start scripts, the tests) stop a command
with SIGTERM, whose default ends Python at once, without the ``finally`` blocks that
close sockets and child processes. And a command started in the background of a
script inherits SIGINT *ignored*, so Ctrl-C-style stopping cannot reach it at all.
"""

from __future__ import annotations

import signal


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def stop_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt in the main thread (call it from there)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
