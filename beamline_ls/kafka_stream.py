"""Documents to a Kafka broker with bluesky-kafka's Publisher, when one is configured.

A facility's consumers (analysis pipelines, archivers, ``bluesky_kafka``'s
``RemoteDispatcher``) read a beamline's documents from a topic on its Kafka cluster.
A session whose settings hold a ``[kafka]`` table publishes every document there::

    [kafka]
    bootstrap_servers = "broker1:9092,broker2:9092"
    topic = "lightsheet.bluesky.runengine.documents"   # the default shown below
    producer_config = { "enable.idempotence" = true }  # any librdkafka setting

Messages are ``msgpack`` (with ``msgpack_numpy``), bluesky-kafka's format, all under one
key so that a beamline's documents keep their order on one partition.

What this adds to bluesky-kafka's ``Publisher``, because a broker that is down must
neither stop nor silently starve a scan:

- a document that cannot be queued (local queue full, not serialisable) is counted as
  lost instead of raising inside the RunEngine, which would abort the scan;
- at each stop document the session waits until the broker acknowledged the run's
  documents or they failed, at most ``message.timeout.ms`` (librdkafka's own bound on
  a message's delivery, here 10 s unless configured), and logs at ERROR how many were
  lost and why; the run itself is stored in the catalog and files either way;
- librdkafka's own log lines go to Python logging at DEBUG
  (``beamline_ls.kafka.librdkafka``), not a line on stderr every few hundred
  milliseconds while a broker is down; its client-wide errors (every broker down,
  authentication) are said once at WARNING;
- at start, a broker that does not answer is reported at once (WARNING).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from beamline_ls import log as bls_log

logger = logging.getLogger("beamline_ls.kafka")

DEFAULT_TOPIC = "beamline-ls.bluesky.runengine.documents"  # bluesky-kafka's naming
DEFAULT_DELIVERY_TIMEOUT_MS = 10_000
CONNECT_CHECK_S = 5.0
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


@dataclass(frozen=True)
class KafkaSettings:
    """Where documents go: ``bootstrap_servers`` (``host:port[,host:port...]``), the
    topic, and extra librdkafka producer settings."""

    bootstrap_servers: str
    topic: str = DEFAULT_TOPIC
    producer_config: dict[str, Any] = field(default_factory=dict)

    @property
    def delivery_timeout_s(self) -> float:
        """How long a document may wait for the broker before it counts as lost."""
        return float(self.producer_config.get("message.timeout.ms",
                                              DEFAULT_DELIVERY_TIMEOUT_MS)) / 1000.0


def parse_kafka(table: Any, where: str) -> KafkaSettings:
    """The ``[kafka]`` table of a configuration file, checked."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must be a table with bootstrap_servers, got {table!r}")
    unknown = sorted(set(table) - {"bootstrap_servers", "topic", "producer_config"})
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {', '.join(unknown)} (allowed: "
                         "bootstrap_servers, topic, producer_config)")
    servers = table.get("bootstrap_servers")
    if not isinstance(servers, str) or not servers.strip():
        raise ValueError(f"{where}: bootstrap_servers must name the brokers as "
                         f"'host:port[,host:port]', got {servers!r}")
    for server in servers.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{where}: bootstrap_servers entry {server.strip()!r} is not "
                             "host:port")
    topic = table.get("topic", DEFAULT_TOPIC)
    if not isinstance(topic, str) or not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(f"{where}: topic {topic!r} is not a Kafka topic name (letters, "
                         "digits, '.', '_' and '-', at most 249)")
    extra = table.get("producer_config", {})
    if not isinstance(extra, dict):
        raise ValueError(f"{where}: producer_config must be a table of librdkafka "
                         f"settings, got {extra!r}")
    if "bootstrap.servers" in extra:
        raise ValueError(f"{where}: give the brokers as bootstrap_servers, not in "
                         "producer_config")
    extra = dict(extra)
    if "delivery.timeout.ms" in extra:  # librdkafka's other name for the same bound
        if "message.timeout.ms" in extra:
            raise ValueError(f"{where}: producer_config gives both delivery.timeout.ms and "
                             "message.timeout.ms, which are one setting")
        extra["message.timeout.ms"] = extra.pop("delivery.timeout.ms")
    timeout = extra.get("message.timeout.ms", DEFAULT_DELIVERY_TIMEOUT_MS)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout <= 0:
        raise ValueError(f"{where}: producer_config message.timeout.ms must be a positive "
                         f"number of milliseconds (0, forever, would let a broker that "
                         f"is down hold every run's end), got {timeout!r}")
    return KafkaSettings(bootstrap_servers=",".join(s.strip() for s in servers.split(",")),
                         topic=topic, producer_config=extra)


class _LibrdkafkaLog:
    """librdkafka's log lines (a connection refused every few hundred milliseconds
    while a broker is down) at DEBUG: what a user must know reaches them through the
    client-wide error callback and the per-run delivery report."""

    _logger = logging.getLogger("beamline_ls.kafka.librdkafka")

    def log(self, level: int, fmt: str, *args: Any) -> None:
        self._logger.debug(fmt, *args)


class KafkaPublisher:
    """RunEngine subscriber: every document to the configured topic (bluesky-kafka's
    ``Publisher``); at each stop, the run's delivery is awaited (bounded) and its
    losses logged. ``delivered`` and ``lost`` count documents since the session began."""

    def __init__(self, settings: KafkaSettings) -> None:
        from bluesky_kafka import Publisher

        self.settings = settings
        self._lock = threading.Lock()  # delivery reports come from flush and poll
        self.delivered = self.lost = 0
        self._lost_reported = 0
        self.last_error: str | None = None
        self._broker_down_said = False
        config = {"message.timeout.ms": DEFAULT_DELIVERY_TIMEOUT_MS,
                  "logger": _LibrdkafkaLog(),
                  "error_cb": self._client_error, **settings.producer_config}
        self._publisher = Publisher(topic=settings.topic,
                                    bootstrap_servers=settings.bootstrap_servers,
                                    key=settings.topic, producer_config=config,
                                    on_delivery=self._delivered)

    def _delivered(self, err, msg) -> None:
        with self._lock:
            if err is None:
                self.delivered += 1
            else:
                self.lost += 1
                self.last_error = err.str()

    def _client_error(self, err) -> None:
        """librdkafka's client-wide errors (every broker down, authentication)."""
        text = err.str()
        if not self._broker_down_said:
            self._broker_down_said = True
            logger.warning("Kafka %s: %s (documents are queued for up to %.3g s each)",
                           self.settings.bootstrap_servers, text,
                           self.settings.delivery_timeout_s)
        else:
            logger.debug("Kafka %s: %s", self.settings.bootstrap_servers, text)

    def check_broker(self, timeout: float = CONNECT_CHECK_S) -> bool:
        """Ask the brokers for the topic's metadata; WARNING when none answers."""
        try:
            self._publisher.get_cluster_metadata(timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - KafkaException: transport, auth
            logger.warning("Kafka broker %s did not answer within %.0f s (%s): documents "
                           "will be lost unless it comes up within %.3g s of each",
                           self.settings.bootstrap_servers, timeout, exc,
                           self.settings.delivery_timeout_s)
            return False
        bls_log.success(logger, "publishing documents to Kafka %s, topic %s",
                        self.settings.bootstrap_servers, self.settings.topic)
        return True

    def __call__(self, name: str, doc: dict) -> None:
        try:
            self._publisher.produce(message=(name, doc))
        except Exception as exc:  # noqa: BLE001 - BufferError, serialisation: the scan goes on
            with self._lock:
                self.lost += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
        if name == "stop":
            self.settle(f"run {doc.get('run_start')}")

    def settle(self, what: str) -> int:
        """Wait until every document produced so far is delivered or has failed (at
        most the delivery timeout), log what was lost since the last report at ERROR,
        and return that number."""
        self._publisher.flush()  # returns once each message is delivered or timed out
        with self._lock:
            new = self.lost - self._lost_reported
            self._lost_reported = self.lost
            cause = self.last_error
        if new:
            logger.error("%d document(s) up to the end of %s did not reach Kafka %s "
                         "(topic %s): %s; the run is stored in the catalog and files",
                         new, what, self.settings.bootstrap_servers, self.settings.topic,
                         cause)
        return new

    def close(self) -> None:
        """Deliver what is queued (bounded by the delivery timeout), report losses."""
        self.settle("the session")
