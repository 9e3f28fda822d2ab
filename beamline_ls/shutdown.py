"""Run a callback as the main thread ends, before Python shuts its worker threads down.

Why: a session left with its RunEngine paused (the user leaves IPython, a script ends)
must abort the run, so that the plan's cleanup stops the hardware and the run reaches
the catalog. Python's ``atexit`` handlers run too late for that: by then
``threading``'s own exit hooks have stopped every ``concurrent.futures`` executor,
including the one behind the embedded catalog's event-loop portal, and the abort's
documents could not be written (the exit hung on them). The hook that runs before
those is ``threading._register_atexit``: private, but the one ``concurrent.futures``
itself uses (Python >= 3.9). It is used only here; without it, ``atexit`` is the
fallback.
"""

from __future__ import annotations

import atexit
import concurrent.futures.thread  # noqa: F401 - its exit hook first, so ours runs before it
import logging
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def at_main_thread_exit(callback: Callable[[], None]) -> None:
    """Call ``callback()`` once when the main thread ends (before worker threads and
    executors are shut down); callbacks registered later run first. A callback that
    fails (or a Ctrl-C during it) is logged; the hooks after it still run."""
    def guarded() -> None:
        try:
            callback()
        except BaseException as exc:  # noqa: BLE001 - Python's own exit hooks must run
            log.error("at exit: %s failed: %s", getattr(callback, "__qualname__",
                                                          callback), exc)

    register = getattr(threading, "_register_atexit", None)
    # present since Python 3.9 (a private name: a later Python may drop it)
    if register is None or not (3, 9) <= sys.version_info[:2] < (3, 15):
        atexit.register(guarded)
        return
    register(guarded)
