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
    # ... and a run left paused is aborted as the main thread ends, while the catalog
    # can still take its documents (atexit comes after the executors have stopped)
    from beamline_ls.shutdown import at_main_thread_exit

    at_main_thread_exit(session.abort_paused_run)
    # SIGTERM and SIGHUP (a closed terminal or SSH connection) end the session as
    # Ctrl-C and leaving do; a queue server's worker has its own shutdown
    from bluesky_queueserver import is_re_worker_active

    if not is_re_worker_active():
        from beamline_ls.signals import end_session_on_signals

        end_session_on_signals(session)
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
    scope.camera.catalog_roots = catalog_roots(settings)
    return {"scope": scope, **scope.as_dict()}


def catalog_roots(settings) -> tuple[str, ...]:
    """Where this session's catalog reads frames: its frames directory, the copies'
    destinations and the acquisition-host paths it maps (`beamline_ls.catalog`)."""
    from beamline_ls.catalog import readable_storage

    return tuple(dict.fromkeys([*readable_storage(settings),
                                *(str(src) for src in settings.path_map)]))


def plans(namespace: dict[str, Any] | None = None) -> dict[str, Any]:
    """bluesky's ``bp`` and ``bps`` and this project's plans; with the profile's
    ``namespace`` (its devices), each plan's device parameters name the devices they
    take, so the queue server refuses a wrong one when the plan is queued
    (`queue_annotated`)."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp

    import plans as bls_plans

    names = {name: getattr(bls_plans, name) for name in bls_plans.__all__}
    if namespace is not None:
        names = {name: queue_annotated(plan, namespace) for name, plan in names.items()}
    return {"bp": bp, "bps": bps, **names}


def queue_annotated(plan, namespace: dict[str, Any]):
    """``plan`` with bluesky-queueserver's parameter annotation for each parameter
    typed as a device class (``camera: Camera``, ``laser: Laser | None``): its value
    must be the name of a device of that class in ``namespace``. Without it the queue
    took any string there ("nosuchdevice", or camera and scan board swapped) and the
    plan failed when it ran, on "'str' object has no attribute 'z_low_limit'". Each
    number with a fixed range (``plan.parameter_ranges``) gets it as min and max, so
    an item out of range is refused when it is queued. Called as before from IPython:
    the annotation only describes the plan."""
    import inspect
    import types
    import typing

    from bluesky_queueserver import parameter_annotation_decorator

    hints = typing.get_type_hints(plan)
    parameters: dict[str, Any] = {}
    # the plan's fixed ranges (`plans.validation.ranged`): the queue refuses an item
    # out of them when it is added, naming the parameter and the range
    for name, (lo, hi) in getattr(plan, "parameter_ranges", {}).items():
        parameters[name] = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    for name in inspect.signature(plan).parameters:
        hint = hints.get(name)
        classes = [c for c in (typing.get_args(hint) if isinstance(hint, types.UnionType)
                               or typing.get_origin(hint) is typing.Union else (hint,))
                   if isinstance(c, type) and c.__module__.startswith("devices")]
        if len(classes) != 1:
            continue
        cls = classes[0]
        found = sorted(k for k, v in namespace.items()
                       if isinstance(v, cls) and not k.startswith("_"))
        if found:
            enum = f"{cls.__name__}Devices"
            optional = type(None) in typing.get_args(hint)
            parameters[name] = {"annotation": f"typing.Optional[{enum}]" if optional
                                else enum, "devices": {enum: found},
                                **parameters.get(name, {})}
    if not parameters:
        return plan
    return parameter_annotation_decorator({"parameters": parameters})(plan)
