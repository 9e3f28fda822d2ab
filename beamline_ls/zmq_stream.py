"""Documents to consumers over 0MQ, with bluesky's own Publisher and Proxy.

A session whose settings name ``zmq_publish = "127.0.0.1:5577"`` (TOML, or
``BEAMLINE_LS_ZMQ_PUBLISH``) publishes every document there with
``bluesky.callbacks.zmq.Publisher``; ``beamline-ls proxy`` runs
``bluesky.callbacks.zmq.Proxy`` between that address and the one consumers subscribe
to (``RemoteDispatcher("127.0.0.1:5578")``). Both addresses default to 127.0.0.1:
bluesky's ``bluesky-0MQ-proxy`` command binds every interface, this one only what it
is told.
"""

from __future__ import annotations

import argparse
import logging
import sys

from beamline_ls import log as bls_log
from beamline_ls.signals import stop_on_sigterm

logger = logging.getLogger("beamline_ls.zmq_stream")

DEFAULT_IN = "127.0.0.1:5577"
DEFAULT_OUT = "127.0.0.1:5578"


def check_address(value: str, where: str) -> str:
    """``host:port`` (tcp) or ``ipc:///path``: an address 0MQ can bind or connect."""
    if value.startswith("ipc://"):
        return value
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or host == "*":
        raise ValueError(f"{where} must be HOST:PORT with an explicit host "
                         f"(e.g. {DEFAULT_IN}) or ipc:///path, got {value!r}")
    return value


CLOSE_LINGER_MS = 2000  # documents still queued get this long to leave at close


def publisher(address: str):
    """bluesky's Publisher to the proxy's input (subscribe it to a RunEngine); end it
    with :func:`close_publisher`. A proxy that does not answer there is said at
    WARNING: 0MQ drops what no one takes, without a word."""
    from bluesky.callbacks.zmq import Publisher

    if not proxy_answers(address):
        logger.warning("no 0MQ proxy answers at %s: documents are dropped until one "
                       "runs there (beamline-ls proxy --in %s)", address, address)
    return Publisher(address)


def proxy_answers(address: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    import socket

    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def close_publisher(pub) -> None:
    """Close a Publisher in bounded time.

    ``Publisher.close`` (bluesky 1.14) closes its PUB socket with 0MQ's default linger,
    which is forever: with the proxy gone and documents still queued for it, closing
    (or the garbage collector, or interpreter exit) blocks for good. bluesky exposes no
    linger option, so the socket's is set here, the one place that reaches into the
    Publisher; where it has no ``_socket`` any more, its own ``close`` is used as is.
    """
    import zmq

    socket = getattr(pub, "_socket", None)
    if isinstance(socket, zmq.Socket) and not socket.closed:
        socket.setsockopt(zmq.LINGER, CLOSE_LINGER_MS)
    pub.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="beamline-ls proxy", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--in", dest="in_address", default=DEFAULT_IN,
                   help=f"where sessions publish (default {DEFAULT_IN})")
    p.add_argument("--out", dest="out_address", default=DEFAULT_OUT,
                   help=f"where consumers subscribe (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    try:
        in_address = check_address(args.in_address, "--in")
        out_address = check_address(args.out_address, "--out")
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    from bluesky.callbacks.zmq import Proxy

    try:
        proxy = Proxy(in_address=in_address, out_address=out_address)
    except Exception as exc:  # zmq.ZMQError: address in use, no such interface
        logger.error("cannot bind the proxy (%s -> %s): %s", in_address, out_address, exc)
        return 1
    bls_log.success(logger, "0MQ document proxy: sessions publish to %s, consumers "
                    "subscribe to %s", proxy.in_port, proxy.out_port)
    stop_on_sigterm()
    try:
        proxy.start()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
