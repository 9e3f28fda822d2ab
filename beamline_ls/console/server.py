"""``beamline-ls console``: serve the operator console with uvicorn."""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets

from beamline_ls.config import Settings
from beamline_ls.epics_env import loopback_client_env
from beamline_ls.log import success

log = logging.getLogger(__name__)

API_KEY_ENV = "BEAMLINE_LS_CONSOLE_API_KEY"


def serve_console(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
                  api_key: str | None = None, catalog_uri: str | None = None,
                  queue_uri: str | None = None, queue_api_key: str | None = None) -> None:
    """Serve the console of the microscope ``settings.prefix`` until interrupted.

    Writes need ``api_key`` (else ``$BEAMLINE_LS_CONSOLE_API_KEY``, else one generated
    and printed here, for the operator at this machine). Runs are listed from
    ``catalog_uri`` (a tiled server) or the deployment's embedded catalog. With
    ``queue_uri`` (bluesky-httpserver, ``beamline-ls queue``) the page shows the queue
    and starts and stops it, with ``queue_api_key`` (else
    ``$BEAMLINE_LS_QUEUE_API_KEY``).
    """
    loopback_client_env()
    import uvicorn

    from beamline_ls.catalog import open_catalog
    from beamline_ls.console.app import Console, create_app
    from beamline_ls.console.queue_view import QueuePoller

    key = api_key or os.environ.get(API_KEY_ENV)
    generated = not key
    key = key or secrets.token_urlsafe(24)

    def catalog():
        if catalog_uri is not None:
            return open_catalog(uri=catalog_uri)
        return open_catalog(settings=settings)

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        log.warning("console serving on %s: reachable from other hosts (writes still "
                    "need the API key)", host)
    queue = QueuePoller(queue_uri, queue_api_key or os.environ.get("BEAMLINE_LS_QUEUE_API_KEY"))
    console = Console(settings.prefix, key, open_catalog=catalog, queue=queue)
    success(log, "console of %s on http://%s:%d/", settings.prefix, host, port)
    if generated:
        print(f"console API key (generated; pass --api-key or set {API_KEY_ENV}): {key}",
              flush=True)
    # a stop waits at most 3 s for requests in flight (a write waiting on a long move)
    # before it cancels them and the bridge abandons their waits
    uvicorn.run(create_app(console), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=3)
