"""A Channel Access repeater bound to loopback only.

caproto's command-line repeater always binds 0.0.0.0, which opens the repeater port
to the network; this runs the same repeater (``caproto.sync.repeater.run``, its public
entry point) on 127.0.0.1, where the loopback IOCs and clients of a session meet.
Run: ``python -m beamline_ls.ca_repeater`` (port from ``EPICS_CA_REPEATER_PORT``).
"""

from __future__ import annotations

import logging

from caproto.sync.repeater import run

LOOPBACK = "127.0.0.1"


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    run(host=LOOPBACK)


if __name__ == "__main__":
    main()
