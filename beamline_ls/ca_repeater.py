"""A Channel Access repeater bound to loopback only.

caproto's command-line repeater always binds 0.0.0.0, which opens the repeater port
to the network; this runs the same repeater (``caproto.sync.repeater.run``, its public
entry point) on 127.0.0.1, where the loopback IOCs and clients of a session meet.
Run: ``python -m beamline_ls.ca_repeater`` (port from ``EPICS_CA_REPEATER_PORT``), or
:func:`start_in_thread` inside a process: ``beamline-ls ioc`` does when the host runs
no repeater, so that its beacons are delivered instead of caproto's server logging a
"Failed to send beacon" error with a traceback every 30 s. Such a repeater ends with
that IOC; a host that runs IOCs and clients for long keeps a repeater of its own
running (``python -m beamline_ls.ca_repeater``), which every IOC then leaves alone.
"""

from __future__ import annotations

import logging
import threading

from caproto import get_environment_variables
from caproto.sync.repeater import run

LOOPBACK = "127.0.0.1"


def beacons_need_one() -> bool:
    """True when this process's beacons go to a loopback repeater on the repeater port
    (the defaults, and :class:`beamline_ls.epics_env.LoopbackEpics`)."""
    env = get_environment_variables()
    return (env["EPICS_CAS_BEACON_ADDR_LIST"].split() == [LOOPBACK]
            and env["EPICS_CAS_BEACON_PORT"] == env["EPICS_CA_REPEATER_PORT"])


def start_in_thread() -> threading.Thread:
    """Run the loopback repeater in a daemon thread of this process; it returns at once
    (and the thread ends) when a repeater already holds the port, and it ends with the
    process, so nothing is left running."""
    thread = threading.Thread(target=run, kwargs={"host": LOOPBACK}, name="ca-repeater",
                              daemon=True)
    thread.start()
    return thread


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    run(host=LOOPBACK)


if __name__ == "__main__":
    main()
