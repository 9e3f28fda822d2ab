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

    if _run(create_if_new, uri):
        stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        logger.info("created a catalog database at %s", _redacted(uri))


def check_catalog(uri: str, timeout: float = 10.0) -> None:
    """Connect to the database at ``uri`` once and see that it holds a catalog.

    :class:`ConnectionError` naming the database (its password hidden) and the cause
    when it cannot be reached; :class:`FileNotFoundError` when it holds no catalog
    (a new, empty database), saying what creates one. Why: tiled connects lazily, so
    an unreachable database surfaced as a bare ``ConnectionRefusedError`` at the first
    request, and an empty one as a 60-line ``UninitializedDatabase`` traceback, both
    after ``beamline-ls serve`` had already announced that it was serving."""
    if not AVAILABLE:
        return  # tiled reports it its own way
    uri = ensure_specified_sql_driver(uri)
    args = {"timeout": timeout} if uri.startswith("postgresql+asyncpg") else {}

    async def connect() -> bool:
        engine = create_async_engine(uri, connect_args=args)
        try:
            await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            return True
        except UninitializedDatabase:
            return False
        finally:
            await engine.dispose()

    if not _run(connect, uri):
        raise FileNotFoundError(
            f"no catalog in the database {_redacted(uri)}: a session with this "
            "configuration creates it when it starts (or run `tiled catalog init "
            "--if-not-exists URI` once)")


def _run(make, uri: str):
    """``asyncio.run(make())`` on a thread of its own (the caller may be inside an event
    loop); a database that cannot be reached raises :class:`ConnectionError` naming it."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["result"] = asyncio.run(make())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            outcome["error"] = exc

    worker = threading.Thread(target=run, name="catalog-db")
    worker.start()
    worker.join()
    error = outcome.get("error")
    if isinstance(error, OSError):  # refused, unknown host, timed out
        raise ConnectionError(f"cannot reach the catalog database {_redacted(uri)}: "
                              f"{type(error).__name__}: {error}") from error
    if error is not None:
        raise error  # type: ignore[misc]
    return outcome["result"]


def _redacted(uri: str) -> str:
    """``uri`` without its password."""
    from sqlalchemy.engine import make_url

    return make_url(uri).render_as_string(hide_password=True)
