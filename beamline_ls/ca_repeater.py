"""A Channel Access repeater bound to loopback only.

caproto's command-line repeater always binds 0.0.0.0, which opens the repeater port
to the network; this runs the same repeater (``caproto.sync.repeater.run``, its public
entry point) on 127.0.0.1, where the loopback IOCs and clients of a session meet.
Run: ``python -m beamline_ls.ca_repeater`` (port from ``EPICS_CA_REPEATER_PORT``), or
:func:`start_in_thread` inside a process (``beamline-ls ioc`` does, so that its beacons
reach a repeater when the host runs none: caproto's server otherwise logs a
"Failed to send beacon" error with a traceback every 30 s, and clients are told late
that the IOC restarted).
"""

from __future__ import annotations

import logging
import threading

from caproto.sync.repeater import run

LOOPBACK = "127.0.0.1"


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
