"""Shared fixtures. Unit tests need no broker; tests marked ``kafka`` get one per session."""

from __future__ import annotations

import uuid

import pytest

from tests.kafka_support import select_broker


@pytest.fixture(scope="session")
def kafka_broker():
    """The session's broker (see ``tests/kafka_support.py`` for how it is chosen)."""
    with select_broker() as target:
        yield target


@pytest.fixture
def kafka_settings(kafka_broker):
    """KafkaSettings for this broker with a topic prefix unique to the test, so tests don't collide."""
    from tickpipe.kafka import KafkaSettings

    return KafkaSettings(bootstrap_servers=kafka_broker.bootstrap_servers, topic_prefix=f"t{uuid.uuid4().hex[:8]}.")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "kafka_broker" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("kafka"):
            item.add_marker(pytest.mark.kafka)
