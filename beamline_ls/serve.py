"""``beamline-ls serve``: the run catalog over HTTP for data users on other hosts.

The server is tiled's own app (``tiled.server.app.build_app``) over the same tree the
embedded catalog uses (:func:`beamline_ls.catalog.catalog_tree`): the root carries
bluesky's ``CatalogOfBlueskyRuns`` spec, so a stock tiled client gets the bluesky run
API (``cat[-1]``, ``Key``/``TimeRange``/``ScanID`` searches, lazy frames with per-frame
metadata, ``documents()`` through the JSON-sequence exporter). Access needs the API
key (tiled's single-user mode); anonymous reads only with ``--public``.

A server on another host sees the frame files at other paths than the acquisition host
wrote into the catalog: ``--map-path /data/lightsheet=/mnt/lightsheet`` (or the TOML's
``[path_map]``) reads them from there.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import socket
import sys
from pathlib import Path
from typing import Any

from beamline_ls import log as bls_log
from beamline_ls.argtypes import tcp_port
from beamline_ls.catalog import DOCUMENT_STREAM
from beamline_ls.config import Settings, check_database, load_settings, parse_path_map
from beamline_ls.damage import DamagedFrameFile

logger = logging.getLogger("beamline_ls.serve")


def build_server_app(settings: Settings, api_key: str | None, public: bool = False):
    """tiled's ASGI app for this data directory's catalog."""
    from tiled.config import Authentication
    from tiled.server.app import build_app

    from beamline_ls.catalog import catalog_tree

    _require_catalog(settings)
    if api_key is not None and not api_key.isalnum():
        raise ValueError("the API key must be letters and digits only (tiled refuses others)")
    tree = catalog_tree(settings)
    auth = Authentication(single_user_api_key=api_key, allow_anonymous_access=public)
    app = build_app(tree, authentication=auth)
    app.add_exception_handler(DamagedFrameFile, _frame_file_error)
    return app


async def _frame_file_error(request: Any, exc: Exception) -> Any:
    """A frame file the server cannot read, told to the remote user as the embedded
    catalog tells it (the file and the cause), at once.

    Why: tiled answers any other exception with a bare 500, which its client retries
    for about 28 s and then reports as "Internal Server Error" with a correlation ID.
    A 4xx carries the message and is not retried: 404 when the file is missing, 422
    when it is there but damaged."""
    from starlette.responses import JSONResponse

    missing = isinstance(exc.__cause__, FileNotFoundError)
    logger.warning("%s", exc)
    return JSONResponse(status_code=404 if missing else 422, content={"detail": str(exc)})


def tiled_tree(data_dir: str, database: str | None = None,
               path_map: dict[str, str] | None = None, config: str | None = None) -> Any:
    """The catalog's tree for tiled's own server (``tiled serve config FILE``), as
    ``beamline-ls serve`` builds it: a facility that runs tiled with its own
    authentication, access policy or proxy names this in its configuration
    (:func:`tiled_config` writes one). ``config``: a beamline-ls TOML (its
    ``[path_map]`` and ``catalog_database``); ``database`` and ``path_map`` add to it."""
    from beamline_ls.catalog import catalog_tree

    settings = _settings(data_dir, config, database, path_map or {})
    _require_catalog(settings)
    return catalog_tree(settings)


def tiled_config(settings: Settings, config: Path | None = None) -> str:
    """A configuration for ``tiled serve config`` serving this data directory's catalog
    (YAML): the tree from :func:`tiled_tree`, the JSON-sequence exporter that
    ``BlueskyRun.documents()`` reads. The API key comes from tiled's own ``--api-key``
    or ``TILED_SINGLE_USER_API_KEY``; a facility adds its ``authentication`` section."""
    import yaml

    args: dict[str, Any] = {"data_dir": str(settings.data_dir)}
    if config is not None:
        args["config"] = str(Path(config).resolve())
    if not settings.catalog_is_sqlite:
        args["database"] = settings.catalog_database
    if settings.path_map:
        args["path_map"] = {str(a): str(b) for a, b in settings.path_map.items()}
    doc = {
        "trees": [{"path": "/", "tree": "beamline_ls.serve:tiled_tree", "args": args}],
        "media_types": {"BlueskyRun": {
            DOCUMENT_STREAM: "bluesky_tiled_plugins.exporters:json_seq_exporter"}},
    }
    head = ("# tiled's own server over the beamline-ls catalog of "
            f"{settings.data_dir} (written by `beamline-ls serve --write-tiled-config`):\n"
            "#   tiled serve config THIS_FILE --host 127.0.0.1 --port 8000 --api-key KEY\n"
            "# Add an `authentication` section for your facility's log-in.\n")
    return head + yaml.safe_dump(doc, sort_keys=False)


def _require_catalog(settings: Settings) -> None:
    """Refuse a data directory whose SQLite catalog does not exist (a mistyped path
    must not be served, or configured, as an empty catalog)."""
    if settings.catalog_is_sqlite and not settings.catalog_dir.joinpath("catalog.db").exists():
        raise FileNotFoundError(f"no catalog under {settings.data_dir}: is it the data "
                                "directory of a deployment?")


def _settings(data_dir: str | Path | None, config: str | Path | None,
              database: str | None, path_map: dict[str, str]) -> Settings:
    """Settings of the served data directory: the TOML, then these options."""
    settings = load_settings(config, data_dir=data_dir)
    if database is not None:
        settings.catalog_database = check_database(database, "--database")
    settings.path_map.update(parse_path_map(path_map, "--map-path"))
    return settings


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="beamline-ls serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="data directory whose catalog to serve (default from config)")
    p.add_argument("--config", type=Path, default=None,
                   help="TOML file (its [path_map] table is used)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    p.add_argument("--port", type=tcp_port, default=8000, help="port (default 8000)")
    p.add_argument("--api-key", default=None,
                   help="API key clients must send (default: $TILED_SINGLE_USER_API_KEY, "
                   "else generated and printed)")
    p.add_argument("--database", default=None, metavar="URI",
                   help="the catalog's PostgreSQL database, postgresql://user@host:port/db "
                   "(default: the TOML's catalog_database, else SQLite in the data dir)")
    p.add_argument("--public", action="store_true",
                   help="let anyone who can connect read without a key")
    p.add_argument("--map-path", action="append", default=[], metavar="ACQ=HERE",
                   help="the acquisition host's directory ACQ is HERE on this host "
                   "(repeatable; adds to the TOML's [path_map])")
    p.add_argument("--write-tiled-config", type=Path, default=None, metavar="FILE",
                   help="write a configuration for tiled's own `tiled serve config FILE` "
                   "over this catalog (with the --database and --map-path given) and exit")
    args = p.parse_args(argv)
    try:
        extra = dict(item.split("=", 1) for item in args.map_path if "=" in item)
        if len(extra) != len(args.map_path):
            raise ValueError("--map-path takes ACQ=HERE, e.g. "
                             "/data/lightsheet=/mnt/lightsheet")
        settings = _settings(args.data_dir, args.config, args.database, extra)
        if args.write_tiled_config is not None:
            _require_catalog(settings)
            args.write_tiled_config.write_text(tiled_config(settings, args.config))
            bls_log.success(logger, "wrote %s: serve it with `tiled serve config %s`",
                            args.write_tiled_config, args.write_tiled_config)
            return 0
        key = args.api_key or os.environ.get("TILED_SINGLE_USER_API_KEY")
        generated = key is None
        if generated:
            key = secrets.token_hex(16)
        app = build_server_app(settings, key, public=args.public)
    except (ValueError, OSError) as exc:  # a missing catalog, an unreachable database
        logger.error("%s", exc)
        return 2
    import uvicorn

    url = f"http://{args.host}:{args.port}"
    try:  # bound before saying "serving": a port in use is the error, not a success
        sock = socket.create_server((args.host, args.port))
    except OSError as exc:
        logger.error("cannot serve at %s: %s", url, exc.strerror or exc)
        return 2
    bls_log.success(logger, "serving the catalog of %s at %s%s", settings.data_dir, url,
                    "".join(f"; {a} read as {b}" for a, b in settings.path_map.items()))
    if generated:
        print(f"API key (generated; pass --api-key to choose one): {key}", flush=True)
    print(f'from beamline_ls import open_catalog; cat = open_catalog(uri="{url}", '
          'api_key=...)', flush=True)
    try:
        uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    except KeyboardInterrupt:
        # uvicorn shuts down on Ctrl-C by itself, then raises the signal again for its
        # caller: the stop was asked for, so no traceback
        pass
    bls_log.success(logger, "stopped serving the catalog of %s", settings.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
