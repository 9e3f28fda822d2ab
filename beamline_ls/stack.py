"""The simulated microscope as a user meets it: IOC process, ophyd devices, session.

One place starts the three in order and stops them in reverse, whatever happened in
between (the demo, and tests that need a microscope of their own). The EPICS
environment must already be applied in this process (before ophyd is imported).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from beamline_ls.config import Settings
from beamline_ls.epics_env import IocProcess, LoopbackEpics


@contextlib.contextmanager
def running_microscope(epics: LoopbackEpics, settings: Settings, log_file: Path,
                       config: Path | None = None, roi: int | None = None,
                       progress_bar: bool = True) -> Iterator[tuple[IocProcess, Any, Any]]:
    """Start the IOC for ``settings`` (prefix, data dir; optional hardware TOML
    ``config``), connect the devices (centred ROI of ``roi`` pixels if given) and make
    a session; yields ``(ioc, scope, session)`` and stops all three on the way out."""
    from beamline_ls.session import make_session
    from devices import connect_microscope

    ioc = IocProcess(epics, settings.prefix, settings.data_dir, log_file, config=config)
    scope = session = None
    try:
        ioc.start()  # inside: an IOC that started but never served is stopped too
        scope = connect_microscope(settings.prefix)
        if roi is not None:
            scope.camera.set_centered_roi(roi)
        session = make_session(settings, progress_bar=progress_bar)
        yield ioc, scope, session
    finally:
        if session is not None:
            session.close()
        if scope is not None:
            scope.destroy()
        ioc.stop()
