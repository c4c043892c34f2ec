"""Topic catalogue against a real broker: idempotent creation, mismatch detection, the CLI."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import NewTopic

from tickpipe.admin import admin_client, declare_topics
from tickpipe.children import tickpipe_command
from tickpipe.kafka import client_kwargs
from tickpipe.providers import PROVIDERS
from tickpipe.topics import RECORD_KINDS, TopicSettings, catalogue, create_missing, inspect


def test_catalogue_declares_every_topic_once_with_prefix():
    names = [s.name for s in catalogue("p.")]
    assert len(names) == len(set(names))
    for provider in PROVIDERS:
        for family in ("raw", "dlq", "control"):
            assert f"p.{family}.{provider}" in names
    for kind in RECORD_KINDS:
        assert f"p.ticks.{kind}" in names
    assert "p.alerts.gaps" in names
    assert all(s.partitions >= 1 and s.retention_ms != 0 for s in catalogue())


async def test_create_is_idempotent_and_mismatch_is_reported(kafka_settings):
    specs = catalogue(kafka_settings.topic_prefix, TopicSettings(raw_partitions=3))
    async with admin_client(kafka_settings) as admin:
        # someone made one topic with the wrong partition count before us
        wrong = specs[0]
        await admin.create_topics([NewTopic(wrong.name, wrong.partitions + 2, 1)])
        created, states = await create_missing(admin, specs)
        assert wrong.name not in created and len(created) == len(specs) - 1
        by_name = {s.spec.name: s for s in states}
        assert by_name[wrong.name].status == "mismatch"
        assert by_name[wrong.name].describe() == f"{wrong.name}: declared 3 partitions, broker has 5"
        assert all(s.status == "ok" for n, s in by_name.items() if n != wrong.name)
        again, states2 = await create_missing(admin, specs)
        assert again == []
        assert [s.status for s in states2] == [s.status for s in states]
        raw = next(s for s in await inspect(admin, specs) if s.spec.name.endswith("raw.tdameritrade"))
        assert raw.existing_partitions == 3


def test_topics_cli_create_then_list(kafka_settings):
    env_args = ["--bootstrap-servers", kafka_settings.bootstrap_servers]
    env = {"TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix}
    import os
    full_env = {**os.environ, **env}
    listed = subprocess.run(tickpipe_command("topics", "list", *env_args), capture_output=True, text=True, env=full_env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert f"{kafka_settings.topic_prefix}raw.alpaca" in listed.stdout and "missing" in listed.stdout
    created = subprocess.run(tickpipe_command("topics", "create", *env_args), capture_output=True, text=True, env=full_env, timeout=60)
    assert created.returncode == 0, created.stderr
    assert f"created {len(catalogue())} topic(s)" in created.stdout
    again = subprocess.run(tickpipe_command("topics", "create", *env_args), capture_output=True, text=True, env=full_env, timeout=60)
    assert again.returncode == 0 and "created 0 topic(s)" in again.stdout
    mismatch_env = {**full_env, "TICKPIPE_TOPICS_TICK_PARTITIONS": "3"}
    bad = subprocess.run(tickpipe_command("topics", "list", *env_args), capture_output=True, text=True, env=mismatch_env, timeout=60)
    assert bad.returncode == 1
    assert f"error: {kafka_settings.topic_prefix}ticks.trade: declared 3 partitions, broker has 8" in bad.stderr


async def test_fixture_broker_produces_and_consumes(kafka_broker, kafka_settings):
    """The session's broker, whichever path chose it, carries records."""
    assert kafka_broker.kind in ("external", "testcontainers", "embedded")
    await _roundtrip(kafka_settings)


async def test_external_path_uses_the_given_bootstrap_servers(kafka_settings):
    """KAFKA_BOOTSTRAP_SERVERS wins: point it at a second, separately started broker."""
    from tests.kafka_support import select_broker
    from tickpipe.broker import EmbeddedBroker

    with EmbeddedBroker() as other, select_broker({"KAFKA_BOOTSTRAP_SERVERS": other.bootstrap_servers}) as target:
        assert target.kind == "external" and target.bootstrap_servers == other.bootstrap_servers
        await _roundtrip(replace(kafka_settings, bootstrap_servers=target.bootstrap_servers))


async def test_testcontainers_path_when_docker_answers(kafka_settings):
    from tests.kafka_support import docker_answers, select_broker

    if not docker_answers():
        pytest.skip("no Docker engine answers on this machine: the testcontainers path cannot run here")
    with select_broker({}) as target:
        assert target.kind == "testcontainers"
        await _roundtrip(replace(kafka_settings, bootstrap_servers=target.bootstrap_servers))


async def _roundtrip(kafka_settings) -> None:
    await declare_topics(kafka_settings)
    topic = f"{kafka_settings.topic_prefix}raw.financefeast"
    producer = AIOKafkaProducer(**client_kwargs(kafka_settings), acks="all")
    await producer.start()
    try:
        for i in range(5):
            await producer.send_and_wait(topic, f"frame-{i}".encode(), key=b"conn-1", headers=[("tp-seq", str(i).encode())])
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **client_kwargs(kafka_settings), auto_offset_reset="earliest",
                                group_id=f"{kafka_settings.topic_prefix}g", session_timeout_ms=6000, heartbeat_interval_ms=1000)
    await consumer.start()
    try:
        got = []
        while len(got) < 5:
            batch = await consumer.getmany(timeout_ms=5000)
            assert batch, "no records within 5 s"
            for records in batch.values():
                got += [(r.key, r.value, dict(r.headers)["tp-seq"]) for r in records]
    finally:
        await consumer.stop()
    assert got == [(b"conn-1", f"frame-{i}".encode(), str(i).encode()) for i in range(5)]


def test_select_broker_prefers_kafka_bootstrap_servers():
    from tests.kafka_support import select_broker
    with select_broker({"KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9093"}) as target:
        assert target == type(target)("kafka.example:9093", "external")


def test_state_changelog_topics_allow_large_values():
    from tickpipe.processors.app import STATE_MAX_BYTES, ProcessorSettings, changelog_topics

    specs = {s.name: s for s in changelog_topics(ProcessorSettings(app_id="app"), ["coinbase"], TopicSettings(raw_partitions=3))}
    spec = specs["app-integrity-coinbase-changelog"]
    assert spec.partitions == 3 and all(s.max_message_bytes == STATE_MAX_BYTES for s in specs.values())
    assert spec.configs() == {"cleanup.policy": "compact", "retention.ms": str(TopicSettings().raw_retention_ms),
                              "max.message.bytes": str(STATE_MAX_BYTES)}
