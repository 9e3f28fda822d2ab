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
import sys
import threading
from collections.abc import Callable


def at_main_thread_exit(callback: Callable[[], None]) -> None:
    """Call ``callback()`` once when the main thread ends (before worker threads and
    executors are shut down); callbacks registered later run first."""
    register = getattr(threading, "_register_atexit", None)
    if register is None or sys.version_info < (3, 9):
        atexit.register(callback)
        return
    register(callback)
