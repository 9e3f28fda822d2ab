import os
import sys
import threading

import pytest
from conftest import wait_for

from beamline_ls.pipeline.ring import FrameRing
from beamline_ls.thread_priority import BACKGROUND_NICE

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")
def test_the_ring_prefault_runs_below_the_threads_that_keep_time():
    """The prefault thread lowers its own priority, not the process's (the camera,
    gating and Channel Access threads of the IOC keep theirs)."""
    seen = {}
    ring = FrameRing(8, (64, 64))
    ring.want_pages(1)  # the thread waits there, so its priority can be read
    t = ring.prefault_in_background()
    try:
        wait_for(lambda: ring.slots_in_place >= 1, 10, "the prefault begun")
        seen["thread"] = os.getpriority(os.PRIO_PROCESS, t.native_id)
        seen["caller"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    finally:
        ring.close()
        t.join(10)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    assert seen["caller"] == base
    assert seen["thread"] == max(base, BACKGROUND_NICE)
