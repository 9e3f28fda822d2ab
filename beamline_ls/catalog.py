"""The run catalog: tiled with bluesky's run specs, embedded by default.

Default: a persistent embedded catalog under ``<data dir>/catalog`` (SQLite for
metadata, DuckDB for tables, no server), readable from any later process. The camera's
frame directory is registered as readable storage so StreamResource frames load
lazily. For a facility, pass a tiled server URI instead (``http://...``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path
from typing import Any

from beamline_ls.catalog_origin import moved_from, record_origin, with_origin_map
from beamline_ls.config import Settings, load_settings

log = logging.getLogger(__name__)

CATALOG_SPEC = {"name": "CatalogOfBlueskyRuns", "version": "3.0"}


DOCUMENT_STREAM = "application/json-seq"


def enable_document_replay() -> None:
    """Let embedded catalogs serve ``BlueskyRun.documents()`` (used by ``export``).

    bluesky-tiled-plugins' JSON-sequence exporter is opt-in on the server side; an
    embedded catalog uses tiled's default serialization registry, so it is registered
    there (idempotent, this process only). A tiled server lists the same exporter in
    its ``media_types`` configuration.
    """
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    if DOCUMENT_STREAM not in default_serialization_registry.media_types("BlueskyRun"):
        default_serialization_registry.register("BlueskyRun", DOCUMENT_STREAM,
                                                json_seq_exporter)


def _quiet_imports() -> None:
    warnings.filterwarnings("ignore", message=".*httpx.*starlette.testclient.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="starlette.*")


def readable_storage(settings: Settings) -> list[str]:
    """Directories the catalog may read frames from: the camera's staging directory
    and every destination that holds a verified copy (see ``beamline_ls.relocation``)."""
    from beamline_ls.pipeline.copy_ledger import CopyLedger

    roots = [str(settings.frames_dir)]
    if settings.mirror_dir is not None:
        roots.append(str(settings.mirror_dir))
    roots += CopyLedger.in_directory(settings.frames_dir).destination_roots()
    return list(dict.fromkeys(roots))


def open_catalog(
    data_dir: str | Path | None = None,
    *,
    uri: str | None = None,
    settings: Settings | None = None,
    create: bool = False,
    api_key: str | None = None,
    lazy: bool = False,
) -> Any:
    """Return the catalog of runs (a bluesky-tiled ``CatalogOfBlueskyRuns`` client).

    Parameters
    ----------
    data_dir:
        Data directory of the deployment (default from configuration), or a server's
        ``http://`` or ``https://`` URI (the same as ``uri=``).
    uri:
        A tiled server URI (``beamline-ls serve``); give it or ``data_dir``, not both.
    api_key:
        The server's API key (default: tiled's ``TILED_API_KEY`` environment variable);
        only for a server: an embedded catalog has no key to check.
    create:
        Create an empty catalog if none exists (the session does this; data users get
        a clear error instead of an empty new catalog at a mistyped path).
    lazy:
        Arrays read as dask arrays (``.read()`` returns at once; chunks of whole
        volumes, or blocks of frames, of at most 16 MiB are fetched when computed), for
        data larger than memory or for dask pipelines.

    Examples
    --------
    >>> cat = open_catalog("/data/lightsheet")
    >>> run = cat[-1]
    >>> frames = run["primary"]["camera_image"]          # lazy (volumes, planes, y, x)
    >>> from tiled.queries import Key
    >>> cat.search(Key("sample_name") == "fish 3")
    >>> volumes = open_catalog("/data/lightsheet", lazy=True)[-1]["primary"][
    ...     "camera_image"].read()                        # dask array
    """
    if uri is None and isinstance(data_dir, str) and \
            data_dir.partition("://")[0].lower() in ("http", "https"):
        uri, data_dir = data_dir, None  # open_catalog("http://host:port") reads as meant
    if uri is not None and data_dir is not None:
        raise ValueError(f"open_catalog: give a data directory ({data_dir}) or a server "
                         f"URI ({uri}), not both")
    if uri is None and api_key is not None:
        raise ValueError("open_catalog: api_key is for a server (open_catalog(uri=...) or "
                         "open_catalog('http://host:port', api_key=...)); the embedded "
                         f"catalog at {data_dir or 'the configured data directory'} takes "
                         "none")
    if uri is not None:
        _quiet_imports()
        from tiled.client import from_uri

        return from_uri(uri, api_key=api_key, structure_clients=catalog_clients(lazy))
    return open_embedded_catalog(settings or load_settings(data_dir=data_dir), create,
                                 lazy=lazy)[0]


def open_embedded_catalog(settings: Settings, create: bool = False,
                          lazy: bool = False) -> tuple[Any, Any]:
    """The embedded catalog as ``(client, tree)``; the tree (server side) lets the
    session allow reading from a new copy destination at run time
    (:func:`allow_reading_from`)."""
    _quiet_imports()
    from tiled.client import from_context
    from tiled.client.context import Context
    from tiled.server.app import build_app

    key = (settings.catalog_uri, tuple(sorted(settings.path_map.items())))
    if key in _SHARED_CONTEXTS:
        context, tree = _SHARED_CONTEXTS[key]
    else:
        tree = catalog_tree(settings, create)
        # tiled's server module logs its version at INFO through a handler of its own
        # (on stderr) each time an app starts and again at exit: an embedded catalog
        # is no server the user started, so a script that only reads runs would end
        # with "Tiled version ..." twice on its stderr
        logging.getLogger("tiled.server.app").setLevel(logging.WARNING)
        with contextlib.redirect_stdout(io.StringIO()):  # tiled prints banners on stdout
            context = Context.from_app(build_app(tree))
        if not settings.catalog_is_sqlite:
            # tiled keeps one asyncpg pool per database URI in a process, bound to the
            # event loop of the first context: a second context on it fails, so every
            # catalog of this process on that database shares the first one
            _SHARED_CONTEXTS[key] = (context, tree)
    return from_context(context, structure_clients=catalog_clients(lazy)), tree


def catalog_clients(lazy: bool) -> Any:
    """The structure clients of a catalog: numpy arrays, or dask arrays in chunks of
    whole volumes (or blocks of frames) with ``lazy``."""
    from beamline_ls.tiled_compat import structure_clients

    if not lazy:
        return structure_clients("numpy")
    from beamline_ls.lazy_arrays import ChunkedDaskArrayClient

    clients = structure_clients("dask")
    if isinstance(clients, str):  # tiled's own map copies cleanly: copy it
        import copy

        from tiled.client.container import DEFAULT_STRUCTURE_CLIENT_DISPATCH

        clients = copy.copy(DEFAULT_STRUCTURE_CLIENT_DISPATCH["dask"])
    clients.set("array", lambda: ChunkedDaskArrayClient)
    return clients


_SHARED_CONTEXTS: dict[tuple, tuple[Any, Any]] = {}


def catalog_tree(settings: Settings, create: bool = False) -> Any:
    """The catalog's server-side tree: bluesky's run specs, the frame-file adapter
    (reading through ``settings.path_map``), frames readable only from the data
    directories. Shared by the embedded catalog and ``beamline-ls serve``."""
    _quiet_imports()
    cdir = settings.catalog_dir
    db = cdir / "catalog.db"
    if settings.catalog_is_sqlite and not db.exists() and not create:
        raise FileNotFoundError(
            f"no catalog at {db}: is {settings.data_dir} the data directory of a deployment?"
        )
    new_database = settings.catalog_is_sqlite and not db.exists()
    if create:
        settings.ensure_dirs()
        (cdir / "data").mkdir(parents=True, exist_ok=True)
    # Event tables (the summary stream): in SQLite next to the catalog, or in the
    # facility's PostgreSQL, where a server on another host reads them too. Not DuckDB,
    # tiled's default: a DuckDB file is locked by the first process that opens it, so a
    # second session on the data directory (IPython beside the queue worker) could not
    # store its runs.
    tables = f"sqlite:///{cdir / 'storage.sqlite'}" if settings.catalog_is_sqlite else \
        settings.catalog_uri.replace("postgresql+asyncpg://", "postgresql://", 1)
    from tiled.catalog import from_uri as catalog_from_uri

    from beamline_ls.frame_adapter import FrameFileAdapter

    enable_document_replay()
    path_map = settings.path_map
    if settings.catalog_is_sqlite:  # a copied or moved data directory reads in place
        if new_database:
            record_origin(cdir, settings.data_dir)
        path_map = with_origin_map(path_map, cdir, settings.data_dir)
    adapter = FrameFileAdapter.with_path_map(path_map) if path_map else FrameFileAdapter
    # tiled checks each file against readable storage as the catalog names it, i.e.
    # at its place on the acquisition host
    readable = readable_storage(settings) + [str(src) for src in path_map]
    # tiled would initialise the database in a child Python at every open (~5 s):
    # done here instead, in this process, only for a new database
    from beamline_ls import catalog_db

    tiled_initialises = False
    if create:  # connects, so an unreachable database is named here
        if catalog_db.AVAILABLE:
            catalog_db.initialise(settings.catalog_uri)
        else:
            tiled_initialises = True
    elif not settings.catalog_is_sqlite:  # tiled connects lazily: say now if it cannot
        catalog_db.check_catalog(settings.catalog_uri)
    if settings.catalog_is_sqlite:
        origin = moved_from(cdir, settings.data_dir)
        if origin is not None:  # the event tables are read where they are now
            from beamline_ls.tiled_compat import alias_storage

            made_in = origin / cdir.relative_to(settings.data_dir) / "storage.sqlite"
            alias_storage(f"sqlite:///{made_in}", tables)
    with contextlib.redirect_stdout(io.StringIO()):  # tiled prints banners on stdout
        return catalog_from_uri(
            settings.catalog_uri,
            specs=[CATALOG_SPEC],
            writable_storage=[str(cdir / "data"), tables],
            readable_storage=list(dict.fromkeys(readable)),
            init_if_not_exists=tiled_initialises,
            adapters_by_mimetype={"application/x-hdf5": adapter},
        )


def allow_reading_from(tree: Any, directory: str | Path) -> None:
    """Let an open embedded catalog serve files under ``directory`` (a new copy
    destination); catalogs opened later find it in the copy ledger themselves."""
    from tiled.storage import parse_storage, register_storage

    storage = parse_storage(str(Path(directory)))
    if storage.uri not in tree.context.readable_storage:
        tree.context.readable_storage[storage.uri] = storage
        register_storage(storage)
