"""Kafka admin helpers: a started admin client, and topic declaration in one call."""

from __future__ import annotations

import contextlib

from tickpipe.kafka import KafkaSettings, client_kwargs, start_client


@contextlib.asynccontextmanager
async def admin_client(kafka: KafkaSettings):
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**client_kwargs(kafka), request_timeout_ms=15000)
    await start_client(admin, kafka)
    try:
        yield admin
    finally:
        await admin.close()


async def declare_topics(kafka: KafkaSettings, topic_settings=None) -> list[str]:
    """Create every catalogued topic that is missing; raise if a partition count mismatches."""
    from tickpipe.topics import TopicSettings, catalogue, create_missing

    specs = catalogue(kafka.topic_prefix, topic_settings or TopicSettings())
    async with admin_client(kafka) as admin:
        created, states = await create_missing(admin, specs, kafka.replication_factor)
    bad = [st.describe() for st in states if st.status != "ok"]
    if bad:
        raise RuntimeError("topic catalogue does not match the broker: " + "; ".join(bad))
    return created
