"""Background threads yield the CPU to the ones that keep time.

An IOC process runs threads that must act on time (the gating analysis, the trigger
scheduler, the cameras, Channel Access) beside threads whose work may wait (faulting
in a new frame ring, folding a new gating reference), on two cores. The late triggers
of the first gated scan after an IOC start came from the frame ring's page faulting
holding the memory-map lock (`beamline_ls.pipeline.ring`); lowering these threads'
priority is a precaution beside that fix, its effect not measured on its own. Linux
gives each thread its own nice value, so a background thread lowers only its own.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

log = logging.getLogger(__name__)

#: nice value of background threads (0 is the default, 19 the lowest priority)
BACKGROUND_NICE = 10


def lower_this_thread_priority() -> None:
    """Lower the calling thread's CPU priority to nice ``BACKGROUND_NICE``, or leave
    it where it is if already lower (Linux; elsewhere nothing happens: the priority
    applies to the whole process there)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        # never above the process's own (a process started with nice 15 stays there)
        nice = max(os.getpriority(os.PRIO_PROCESS, tid), BACKGROUND_NICE)
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as exc:
        log.debug("could not lower the priority of thread %s: %s",
                  threading.current_thread().name, exc)
