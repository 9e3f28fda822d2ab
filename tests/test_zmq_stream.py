"""Documents to consumers over 0MQ (issue 15, item 3): a session configured with
``zmq_publish`` publishes through ``beamline-ls proxy`` (bluesky's Proxy, bound to
loopback) and a stock ``RemoteDispatcher`` in another process receives every document
of a run, in order."""

from __future__ import annotations

import dataclasses
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from beamline_ls.epics_env import free_port

CONSUMER = r"""
import json, sys
from bluesky.callbacks.zmq import RemoteDispatcher
d = RemoteDispatcher(sys.argv[1])
seen = []
def keep(name, doc):
    seen.append([name, doc.get("uid") or doc.get("datum_id"), doc.get("run_start")])
    if name == "stop":
        print(json.dumps(seen), flush=True)
        d.stop()
d.subscribe(keep)
print("LISTENING", flush=True)
d.start()
"""


def _bound_to(port: int) -> list[str]:
    """Local addresses of listening TCP sockets on ``port`` (from /proc/net/tcp)."""
    out = []
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            ip_hex, port_hex = local.split(":")
            if int(port_hex, 16) == port and state == "0A":
                out.append(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return out


@pytest.fixture
def proxy():
    ports = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "beamline_ls.cli", "proxy", "--in",
                             f"127.0.0.1:{ports[0]}", "--out", f"127.0.0.1:{ports[1]}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not all(_bound_to(p) for p in ports):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
        time.sleep(0.1)
    yield ports
    # SIGTERM, as a service manager stops it (a SIGINT would be ignored when the
    # tests themselves run in a script's background, which inherits SIGINT ignored)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_the_proxy_listens_on_loopback_only(proxy):
    for port in proxy:
        assert _bound_to(port) == ["127.0.0.1"]


def test_a_remote_consumer_receives_every_document_of_a_run(proxy, scope, settings):
    from beamline_ls.session import make_session
    from plans import volumetric_scan

    consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, f"127.0.0.1:{proxy[1]}"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert consumer.stdout.readline().strip() == "LISTENING", consumer.stderr.read()
    time.sleep(1.0)  # a SUB socket misses what is published before it has connected
    publishing = make_session(dataclasses.replace(settings,
                                                  zmq_publish=f"127.0.0.1:{proxy[0]}"),
                              progress_bar=False, run_files=False)
    local = []
    try:
        publishing.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 4, 10.0, 40.0, 2.0),
                      lambda name, doc: local.append(
                          [name, doc.get("uid") or doc.get("datum_id"),
                           doc.get("run_start")]))
        out, err = consumer.communicate(timeout=60)
    finally:
        publishing.close()
        if consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert json.loads(out.strip().splitlines()[-1]) == local, err[-2000:]
    assert [n for n, *_ in local][:2] == ["start", "descriptor"]
    assert "stream_datum" in [n for n, *_ in local]


def test_an_address_without_a_host_is_refused():
    done = subprocess.run([sys.executable, "-m", "beamline_ls.cli", "proxy", "--in", "5577"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "explicit host" in done.stdout + done.stderr


DROPPED_SESSION = r"""
import dataclasses, gc, sys
from bluesky.plans import count
from ophyd import Signal
from beamline_ls.config import load_settings
from beamline_ls.session import make_session
settings = load_settings(data_dir=sys.argv[1], prefix="ZMQ:")
session = make_session(dataclasses.replace(settings, zmq_publish=sys.argv[2]),
                       progress_bar=False, run_files=False)
det = Signal(name="det", value=1.0)  # not ophyd.sim: its import leaves a temp dir
session.RE(count([det], 20))
session.close()
del session
gc.collect()  # what a queue worker's environment close and pytest both do
print("DONE", flush=True)
"""


def test_a_session_publishing_to_no_proxy_closes_and_is_dropped_in_bounded_time(tmp_path):
    """Documents queued for a proxy that is not there must not make close, or the
    garbage collector after it, wait forever (0MQ's default linger)."""
    done = subprocess.run([sys.executable, "-c", DROPPED_SESSION, str(tmp_path),
                           f"127.0.0.1:{free_port()}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "DONE" in done.stdout, done.stderr[-2000:]


def test_publishing_where_no_proxy_answers_is_said(caplog):
    """0MQ drops what no one takes without a word: a session publishing to an
    address where no proxy runs says so when it starts."""
    from beamline_ls.zmq_stream import close_publisher, publisher

    port = free_port()
    with caplog.at_level("WARNING", logger="beamline_ls.zmq_stream"):
        close_publisher(publisher(f"127.0.0.1:{port}"))
    assert f"no 0MQ proxy answers at 127.0.0.1:{port}" in caplog.text
    caplog.clear()
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        address = f"127.0.0.1:{listening.getsockname()[1]}"
        with caplog.at_level("WARNING", logger="beamline_ls.zmq_stream"):
            close_publisher(publisher(address))
    assert "no 0MQ proxy" not in caplog.text
