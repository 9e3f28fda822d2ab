"""Argument types shared by the command-line tools: a bad value is a one-line usage
error from argparse (exit 2), never a traceback from deep inside a server."""

from __future__ import annotations

import argparse

#: the logging levels ``--log-level`` takes (``beamline_ls.log`` adds TRACE, SUCCESS)
LOG_LEVELS = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")


def tcp_port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is outside 1-65535")
    return port


def log_level(text: str) -> str:
    """One of :data:`LOG_LEVELS`, in any case."""
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a level; use one of {', '.join(LOG_LEVELS)}")
    return text.upper()
