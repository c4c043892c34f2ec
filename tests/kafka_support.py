"""Broker selection for tests and tools.

``KAFKA_BOOTSTRAP_SERVERS`` when set (a real Kafka); else a testcontainers ``KafkaContainer``
when a Docker engine answers; else the embedded Tansu broker.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class BrokerTarget:
    bootstrap_servers: str
    kind: str  # "external", "testcontainers" or "embedded"


def docker_answers() -> bool:
    try:
        import docker
        client = docker.from_env(timeout=2)
        client.ping()
        return True
    except Exception:
        return False


@contextlib.contextmanager
def select_broker(env=os.environ):
    if env.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield BrokerTarget(env["KAFKA_BOOTSTRAP_SERVERS"], "external")
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer
        with KafkaContainer() as kafka:
            yield BrokerTarget(kafka.get_bootstrap_server(), "testcontainers")
        return
    from tickpipe.broker import EmbeddedBroker
    with EmbeddedBroker() as broker:
        yield BrokerTarget(broker.bootstrap_servers, "embedded")
