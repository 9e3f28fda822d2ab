"""Create a catalog's database in this process, once.

tiled's ``tiled.catalog.from_uri(..., init_if_not_exists=True)`` runs ``python -m tiled
catalog init --if-not-exists`` as a child process (its alembic stamping is synchronous),
at every open, whether or not there is anything to create: about 5 s on a 2-core
machine, paid by every session start. :func:`initialise` does what that command does
(tiled 0.2: ``check_database``, then ``initialize_database`` and ``stamp_head`` for a
new database) in this process: about 0.1 s for a new database, nothing for one that is
ready.

Version guard: these are the functions tiled's own command line calls, not a documented
API. Where they are missing (a tiled that moved them), :data:`AVAILABLE` is False and
the caller lets tiled initialise the database its own way.
"""

from __future__ import annotations

import asyncio
import logging
import threading

logger = logging.getLogger("beamline_ls.catalog")

try:
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database
    from tiled.utils import ensure_specified_sql_driver

    AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the installed tiled
    AVAILABLE = False


def initialise(uri: str) -> None:
    """Create tiled's catalog tables in the database at ``uri`` and stamp them with
    tiled's current schema revision, unless it holds a catalog already. A database of
    an older tiled raises tiled's own error (it names the upgrade command)."""
    if not AVAILABLE:
        raise RuntimeError("tiled's catalog initialisation functions are not available")
    uri = ensure_specified_sql_driver(uri)
    outcome: dict[str, object] = {}

    async def create_if_new() -> bool:
        engine = create_async_engine(uri)
        try:
            try:
                await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
                return False
            except UninitializedDatabase:
                await initialize_database(engine)
                return True
        finally:
            await engine.dispose()

    def run() -> None:  # a thread of its own: the caller may be inside an event loop
        try:
            outcome["created"] = asyncio.run(create_if_new())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="catalog-init")
    worker.start()
    worker.join()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    if outcome["created"]:
        stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        logger.info("created a catalog database at %s", _redacted(uri))


def _redacted(uri: str) -> str:
    """``uri`` without its password."""
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)
