"""Start stimulus software over ZeroMQ REQ and size the run from its protocol duration.

Light-sheet labs couple acquisition to stimulus software (visual stimuli, optogenetics)
the same way: the acquisition sends its settings as a JSON message on a REQ socket;
the stimulus side starts its protocol and replies with the protocol's duration in
seconds, which sets how many volumes to acquire.

A REQ socket that sent a request and got no answer is stuck (it may not send again),
so after a timeout the socket is closed without lingering and a fresh one is opened:
the next call works once the stimulus software is up. Only loopback addresses
(``tcp://127.0.0.1:PORT`` or ``tcp://localhost:PORT``) are accepted.
"""

from __future__ import annotations

import json
import logging
import math
import re
from typing import Any

import zmq

log = logging.getLogger(__name__)

_LOOPBACK = re.compile(r"^tcp://(127\.0\.0\.1|localhost):(\d{1,5})$")


class StimulusError(RuntimeError):
    """The stimulus software answered something that is not a protocol duration."""


def check_address(address: str) -> str:
    m = _LOOPBACK.match(address)
    if not m or not 0 < int(m.group(2)) < 65536:
        raise ValueError(f"stimulus address must be tcp://127.0.0.1:PORT (loopback), "
                         f"got {address!r}")
    return address


def parse_duration(reply: bytes) -> float:
    """Duration (s) from a reply: a JSON number, or an object with ``duration_s``."""
    try:
        value: Any = json.loads(reply.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise StimulusError(f"stimulus reply is not JSON: {reply[:60]!r}") from exc
    if isinstance(value, dict):
        value = value.get("duration_s", value.get("duration"))
    if isinstance(value, bool) or not isinstance(value, int | float) \
            or not math.isfinite(value) or value <= 0:
        raise StimulusError(f"stimulus reply has no positive duration in seconds: "
                            f"{reply[:60]!r}")
    return float(value)


def volumes_for(duration_s: float, volume_rate_hz: float) -> int:
    """Volumes covering ``duration_s`` at ``volume_rate_hz`` (at least one)."""
    if not duration_s > 0 or not volume_rate_hz > 0:
        raise ValueError(f"duration_s and volume_rate_hz must be > 0, got "
                         f"{duration_s}, {volume_rate_hz}")
    return max(1, math.ceil(duration_s * volume_rate_hz - 1e-9))


class StimulusClient:
    """REQ client of the stimulus software (one request in flight at a time)."""

    def __init__(self, address: str = "tcp://127.0.0.1:5555", timeout_s: float = 5.0,
                 context: zmq.Context | None = None) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        self.address = check_address(address)
        self.timeout_s = float(timeout_s)
        self._own_context = context is None
        self._ctx = context or zmq.Context()
        self._sock: zmq.Socket | None = None

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            s = self._ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.address)
            self._sock = s
        return self._sock

    def _reset(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    def start(self, settings: dict[str, Any]) -> float:
        """Send ``settings`` as JSON, return the protocol duration (s) from the reply.

        Raises TimeoutError when nobody answers within ``timeout_s`` (the socket is
        reset, so the next call may succeed), StimulusError for a bad reply.
        """
        payload = json.dumps(settings).encode("utf-8")
        sock = self._socket()
        try:
            sock.send(payload)
            if not sock.poll(int(self.timeout_s * 1000), zmq.POLLIN):
                self._reset()
                raise TimeoutError(
                    f"no answer from the stimulus software at {self.address} within "
                    f"{self.timeout_s:g} s: is it running and listening on that port?")
            reply = sock.recv()
        except zmq.ZMQError as exc:
            self._reset()
            raise StimulusError(f"stimulus link {self.address} failed: {exc}") from exc
        duration = parse_duration(reply)
        log.info("stimulus protocol started: %.3f s", duration)
        return duration

    def start_and_size(self, settings: dict[str, Any], volume_rate_hz: float) -> int:
        """Start the protocol and return how many volumes cover its duration."""
        return volumes_for(self.start(settings), volume_rate_hz)

    def close(self) -> None:
        self._reset()
        if self._own_context:
            self._ctx.term()

    def __enter__(self) -> StimulusClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
