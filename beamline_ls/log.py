"""Logging levels shared by every part of beamline-ls.

Two levels beyond the standard library's: TRACE (5) for large arrays and per-frame
chatter, SUCCESS (25) for "this worked" messages users want to see. Everything logs
through ``logging.getLogger(__name__)``; only entry points call :func:`configure`.
"""

from __future__ import annotations

import logging
import os

TRACE = 5
SUCCESS = 25

logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(SUCCESS, "SUCCESS")


def success(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log ``msg`` at SUCCESS level."""
    logger.log(SUCCESS, msg, *args)


def trace(logger: logging.Logger, msg: str, *args: object) -> None:
    """Log ``msg`` at TRACE level (cheap when disabled)."""
    if logger.isEnabledFor(TRACE):
        logger.log(TRACE, msg, *args)


class OneLineRefusal(logging.Filter):
    """A put the IOC refused, in one line with its reason instead of a traceback.

    caproto logs every write its server refused (a value out of range, a wrong enum, a
    limit, a host without write access) with ``log.exception``: a full traceback at
    ERROR for what is a client's request being answered no. The client already has
    the reason; the log keeps who asked, what, and why, on one line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None \
                and str(record.msg).startswith("Invalid write request"):
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} refused: {type(exc).__name__}: {exc}"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True


class LateRefusalNoise(logging.Filter):
    """Drop caproto's second report of a refused plain put, a ``KeyError`` traceback.

    A plain put (``caput`` without ``-c``) whose client closes its channel at once is
    refused as any other: :class:`OneLineRefusal` logs that line. caproto's server then
    looks the closed channel up to send the error reply, fails with ``KeyError``, and
    asyncio logs "Task exception was never retrieved" with two tracebacks, for every
    such put. Only that exact case is dropped: a ``KeyError`` raised in caproto's
    ``handle_write`` while handling the refusal (its ``__context__``).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, KeyError) or exc.__context__ is None \
                or not str(record.msg).startswith("Task exception was never retrieved"):
            return True
        tb = exc.__traceback__
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        code = tb.tb_frame.f_code if tb is not None else None
        return not (code is not None and code.co_name == "handle_write"
                    and "caproto" in code.co_filename)


def configure(level: str | int | None = None) -> None:
    """Configure root logging for a command-line entry point.

    ``level`` defaults to the environment variable ``BEAMLINE_LS_LOG`` or SUCCESS,
    so a user sees outcomes and problems but not chatter.
    """
    level = level or os.environ.get("BEAMLINE_LS_LOG", "SUCCESS")
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-8s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    # caproto logs every failed beacon with a traceback; one line is enough.
    logging.getLogger("caproto").setLevel(max(logging.WARNING, level))
    circuit = logging.getLogger("caproto.circ")
    if not any(isinstance(f, OneLineRefusal) for f in circuit.filters):
        circuit.addFilter(OneLineRefusal())
    loop_log = logging.getLogger("asyncio")
    if not any(isinstance(f, LateRefusalNoise) for f in loop_log.filters):
        loop_log.addFilter(LateRefusalNoise())
    # Library chatter that users do not need at INFO.
    for name in ("httpx", "alembic", "tiled", "bluesky", "ophyd", "databroker"):
        logging.getLogger(name).setLevel(max(logging.WARNING, level))
