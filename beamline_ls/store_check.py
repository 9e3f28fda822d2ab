"""Refuse to start a plan whose run could not be stored.

Why: the catalog and the run files are written as the run goes, by the session, and a
run that fails to reach them fails only at its end. With the catalog's directory
read-only or full, a scan acquired to its end (hours, for a time-lapse) and only then
said "catalog ... lacks the whole run". The frames directory is checked by the camera
IOC before a capture opens; this checks the session's own stores as the plan opens
its run, so nothing was acquired and no run is left behind.

It catches the plain cases (a read-only mount, a full disk); a disk that fills during
the run is still reported at its end, with what was stored.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from beamline_ls.config import Settings
from beamline_ls.pipeline.diskspace import MiB, free_bytes, nearest_existing, writable

#: free space a run's documents need at the least (a catalog run of thousands of
#: frames takes a few MiB in SQLite with its journal; a run file about as much)
MIN_FREE_BYTES = 8 * MiB


def store_problems(settings: Settings, run_files: bool = True) -> list[str]:
    """What would keep a run from being stored, or nothing: each store's directory
    (as far as it exists) must be writable and have `MIN_FREE_BYTES` free."""
    places: list[tuple[str, Path]] = [("the run's scan_id and marks", settings.state_dir)]
    if settings.catalog_is_sqlite:
        places.append(("the catalog", settings.catalog_dir))
    if run_files:
        places.append(("the run files", settings.runs_dir))
    problems = []
    for what, directory in places:
        where = nearest_existing(directory)
        if not writable(where):
            problems.append(f"{what} cannot be written: {where} is read-only or not "
                            "permitted")
            continue
        free = free_bytes(where)
        if free < MIN_FREE_BYTES:
            problems.append(f"{what} cannot be written: {where} has {free / MiB:.1f} MiB "
                            f"free, a run needs at least {MIN_FREE_BYTES // MiB} MiB")
    return problems


def refuse_unstorable(settings: Settings, run_files: bool = True
                      ) -> Callable[[Any], Generator]:
    """A RunEngine preprocessor (``RE.preprocessors``): a run opens only if it can be
    stored. Checked at each ``open_run`` (a plan that opens no run, a motor move, is
    not concerned), and refused there as if the open had failed: the plan's own
    cleanup then runs, as for any failure, before anything is acquired."""
    def preprocessor(plan: Any) -> Generator:
        from bluesky.utils import ensure_generator

        gen = ensure_generator(plan)
        response: Any = None
        error: BaseException | None = None
        while True:
            try:
                msg = gen.send(response) if error is None else gen.throw(error)
            except StopIteration as done:
                return done.value
            error, response = None, None
            if msg.command == "open_run":
                try:
                    problems = store_problems(settings, run_files)
                except OSError as exc:  # a store that cannot even be looked at
                    problems = [f"the data directory {settings.data_dir} cannot be "
                                f"checked: {exc}"]
                if problems:
                    error = RuntimeError("no run was started: " + "; ".join(problems))
                    continue
            try:
                response = yield msg
            except GeneratorExit:
                gen.close()
                raise
            except BaseException as exc:  # noqa: BLE001 - the plan's to handle
                error = exc

    return preprocessor
