"""Stimulus software over ZeroMQ REQ/REP on loopback: duration, timeouts, bad replies."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest
import zmq

from beamline_ls.stimulus import (
    StimulusClient,
    StimulusError,
    check_address,
    parse_duration,
    volumes_for,
)

# no IOC, nothing on a fixed port: run beside the compute tests (see the Makefile)
pytestmark = pytest.mark.offline


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StimulusServer:
    """A REP socket in a thread answering each request with ``answer(request)``."""

    def __init__(self, port: int, answer) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(f"tcp://127.0.0.1:{port}")
        self.answer = answer
        self.requests: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.sock.poll(50, zmq.POLLIN):
                req = self.sock.recv()
                self.requests.append(req)
                self.sock.send(self.answer(req))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close(linger=0)
        self.ctx.term()


@pytest.fixture
def port():
    return free_port()


def test_settings_go_out_as_json_and_the_duration_sizes_the_run(port):
    server = StimulusServer(port, lambda req: b"12.5")
    try:
        with StimulusClient(f"tcp://127.0.0.1:{port}", timeout_s=2.0) as client:
            settings = {"volume_rate_hz": 4.0, "n_planes": 20, "exposure_s": 0.004}
            assert client.start(settings) == 12.5
            assert json.loads(server.requests[0]) == settings
            assert client.start_and_size(settings, 4.0) == 50
    finally:
        server.close()


def test_nobody_answering_is_a_clear_timeout_and_the_socket_recovers(port):
    address = f"tcp://127.0.0.1:{port}"
    client = StimulusClient(address, timeout_s=0.3)
    try:
        t = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"no answer from the stimulus software at "
                                               rf"{address} within 0.3 s"):
            client.start({"n": 1})
        assert time.monotonic() - t < 2.0
        # a REQ socket left waiting could not send again: the client reset it
        server = StimulusServer(port, lambda req: json.dumps({"duration_s": 3}).encode())
        try:
            assert client.start({"n": 2}) == 3.0
            assert [json.loads(r) for r in server.requests] == [{"n": 2}]
        finally:
            server.close()
    finally:
        client.close()


def test_a_reply_that_is_not_a_duration_is_refused(port):
    server = StimulusServer(port, lambda req: b"ready!")
    try:
        with StimulusClient(f"tcp://127.0.0.1:{port}", timeout_s=2.0) as client:
            with pytest.raises(StimulusError, match="not JSON"):
                client.start({})
    finally:
        server.close()


@pytest.mark.parametrize("reply, ok", [
    (b"7", 7.0), (b"0.5", 0.5), (b'{"duration_s": 9.5}', 9.5), (b'{"duration": 2}', 2.0),
    (b"-1", None), (b"0", None), (b"true", None), (b'"10"', None), (b"{}", None),
    (b"\xff", None), (b"NaN", None),
])
def test_parse_duration(reply, ok):
    if ok is None:
        with pytest.raises(StimulusError):
            parse_duration(reply)
    else:
        assert parse_duration(reply) == ok


def test_only_loopback_addresses_are_accepted():
    assert check_address("tcp://127.0.0.1:5555")
    for bad in ("tcp://10.0.0.2:5555", "tcp://0.0.0.0:5555", "tcp://127.0.0.1", "ipc:///x",
                "tcp://127.0.0.1:99999"):
        with pytest.raises(ValueError, match="loopback"):
            StimulusClient(bad)


def test_volumes_for_covers_the_whole_protocol():
    assert volumes_for(10.0, 2.0) == 20
    assert volumes_for(10.1, 2.0) == 21
    assert volumes_for(0.01, 1.0) == 1
    with pytest.raises(ValueError):
        volumes_for(0.0, 1.0)
