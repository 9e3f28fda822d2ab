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

from beamline_ls import log as bls_log
from beamline_ls.argtypes import tcp_port
from beamline_ls.config import Settings, check_database, load_settings, parse_path_map

logger = logging.getLogger("beamline_ls.serve")


def build_server_app(settings: Settings, api_key: str | None, public: bool = False):
    """tiled's ASGI app for this data directory's catalog."""
    from tiled.config import Authentication
    from tiled.server.app import build_app

    from beamline_ls.catalog import catalog_tree

    if settings.catalog_is_sqlite and not settings.catalog_dir.joinpath("catalog.db").exists():
        raise FileNotFoundError(f"no catalog under {settings.data_dir}: is it the data "
                                "directory of a deployment?")
    if api_key is not None and not api_key.isalnum():
        raise ValueError("the API key must be letters and digits only (tiled refuses others)")
    tree = catalog_tree(settings)
    auth = Authentication(single_user_api_key=api_key, allow_anonymous_access=public)
    return build_app(tree, authentication=auth)


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
    args = p.parse_args(argv)
    try:
        settings = load_settings(args.config, data_dir=args.data_dir)
        if args.database is not None:
            settings.catalog_database = check_database(args.database, "--database")
        extra = dict(item.split("=", 1) for item in args.map_path if "=" in item)
        if len(extra) != len(args.map_path):
            raise ValueError("--map-path takes ACQ=HERE, e.g. "
                             "/data/lightsheet=/mnt/lightsheet")
        settings.path_map.update(parse_path_map(extra, "--map-path"))
        key = args.api_key or os.environ.get("TILED_SINGLE_USER_API_KEY")
        generated = key is None
        if generated:
            key = secrets.token_hex(16)
        app = build_server_app(settings, key, public=args.public)
    except (ValueError, FileNotFoundError, ConnectionError) as exc:
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
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
