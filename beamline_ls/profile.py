"""What the IPython profile's startup files call; all logic lives here so that tests,
a plan queue server and a plain ``python`` session reach the same code.

Startup order: 00 base (settings, EPICS environment, RunEngine, catalog, callbacks),
10 devices, 50 plans, 90 user. Each returns the names to put in the user namespace.
"""

from __future__ import annotations

import atexit
import sys
from typing import Any

from beamline_ls.config import load_settings
from beamline_ls.epics_env import loopback_client_env


def in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def base() -> dict[str, Any]:
    """Settings, loopback-default EPICS environment, RunEngine with catalog and callbacks."""
    # Default to loopback; a facility sets its own EPICS_* variables.
    loopback_client_env()
    from beamline_ls import log
    from beamline_ls.session import make_session

    log.configure()
    settings = load_settings()
    interactive = in_ipython()
    # Progress bars only where someone watches a terminal: under the queue server the
    # worker's output is a log (and qserver's console stream), where they are noise.
    session = make_session(settings, progress_bar=interactive or sys.stdout.isatty(),
                           best_effort=interactive)
    # at exit: documents still queued reach the catalog and run files, and the 0MQ
    # publisher is closed in bounded time (left to the garbage collector it can block)
    atexit.register(session.close)
    if interactive:
        from bluesky.utils import install_kicker

        try:
            install_kicker()
        except Exception:  # no GUI event loop available: plots still render on draw
            pass
    return {"settings": settings, "session": session, "RE": session.RE,
            "cat": session.catalog, "bec": session.bec}


def devices(settings) -> dict[str, Any]:
    """Connect every device of the microscope under the configured prefix."""
    from devices import connect_microscope

    scope = connect_microscope(settings.prefix)
    return {"scope": scope, **scope.as_dict()}


def plans() -> dict[str, Any]:
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp

    import plans as bls_plans

    names = {name: getattr(bls_plans, name) for name in bls_plans.__all__}
    return {"bp": bp, "bps": bps, **names}
