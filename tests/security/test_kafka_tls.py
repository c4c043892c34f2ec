"""Kafka clients over real TLS: a TLS terminator in front of the embedded broker, which advertises it."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.tls_support import TestPKI, TlsProxy, _free_port
from tickpipe.admin import admin_client, declare_topics
from tickpipe.broker import EmbeddedBroker
from tickpipe.children import tickpipe_command
from tickpipe.kafka import KafkaSettings, KafkaSetupError, client_kwargs, preflight, start_client

pytestmark = pytest.mark.kafka


def tls_settings(pki, port: int, **changes) -> KafkaSettings:
    return replace(KafkaSettings(bootstrap_servers=f"localhost:{port}", security_protocol="SSL",
                                 ssl_cafile=pki.ca_file, topic_prefix=f"tls{os.urandom(3).hex()}."), **changes)


async def test_producer_consumer_and_admin_work_over_tls_with_verification(pki, tls_broker):
    settings = tls_settings(pki, tls_broker[0])
    assert settings.ssl_check_hostname is True
    await preflight(settings)
    created = await declare_topics(settings)
    assert f"{settings.topic_prefix}raw.alpaca" in created
    topic = f"{settings.topic_prefix}raw.alpaca"
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await start_client(producer, settings)
    try:
        await producer.send_and_wait(topic, b'[{"T":"success","msg":"connected"}]', key=b"c1")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(topic, **client_kwargs(settings), auto_offset_reset="earliest")
    await start_client(consumer, settings)
    try:
        batch = await consumer.getmany(timeout_ms=10000)
    finally:
        await consumer.stop()
    values = [r.value for records in batch.values() for r in records]
    assert values == [b'[{"T":"success","msg":"connected"}]']


def test_topics_cli_over_tls(pki, tls_broker):
    env = {**os.environ, "TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": f"localhost:{tls_broker[0]}",
           "TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SSL", "TICKPIPE_KAFKA_SSL_CAFILE": pki.ca_file,
           "TICKPIPE_KAFKA_TOPIC_PREFIX": "tlscli."}
    proc = subprocess.run(tickpipe_command("topics", "create"), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "tlscli.raw.schwab" in proc.stdout


async def test_wrong_ca_is_refused_with_a_clear_message(pki, tls_broker, tmp_path):
    stranger = TestPKI(tmp_path / "other", ca_name="someone else")
    settings = tls_settings(pki, tls_broker[0], ssl_cafile=stranger.ca_file)
    with pytest.raises(KafkaSetupError) as err:
        await preflight(settings)
    text = str(err.value)
    assert f"TLS verification of broker localhost:{tls_broker[0]} failed" in text
    assert "certificate verify failed" in text or "unable to get local issuer" in text
    assert "TICKPIPE_KAFKA_SSL_CAFILE" in text


async def test_wrong_hostname_is_refused_and_the_check_can_be_turned_off(pki, tls_broker):
    wrong = pki.issue("wrong-host", ["kafka.elsewhere.example"])
    port = _free_port()
    with TlsProxy(pki.server_context(wrong), "127.0.0.1", tls_broker[1], port=port):
        settings = tls_settings(pki, port)
        with pytest.raises(KafkaSetupError, match="Hostname mismatch|hostname") as err:
            await preflight(settings)
        assert "TICKPIPE_KAFKA_SSL_CHECK_HOSTNAME" in str(err.value)
        await preflight(replace(settings, ssl_check_hostname=False))


async def test_mutual_tls_requires_the_client_certificate(pki, tls_broker):
    cert, key = pki.issue("client", ["tickpipe-client"], client=True)
    port = _free_port()
    with EmbeddedBroker(advertised=f"localhost:{port}") as broker, \
            TlsProxy(pki.server_context(require_client_cert=True), "127.0.0.1", broker.port, port=port):
        with_cert = tls_settings(pki, port, ssl_certfile=cert, ssl_keyfile=key)
        assert await declare_topics(with_cert)
        without = tls_settings(pki, port)
        admin_failed = False
        try:
            await preflight(without)
            async with admin_client(without) as admin:  # TLS 1.3: the refusal arrives after the handshake
                await admin.list_topics()
        except Exception:
            admin_failed = True
        assert admin_failed


async def test_unreachable_broker_is_named():
    settings = KafkaSettings(bootstrap_servers="localhost:1")  # nothing listens on port 1
    with pytest.raises(KafkaSetupError, match="cannot reach broker localhost:1"):
        await preflight(settings)


def test_cli_reports_an_untrusted_broker_clearly(pki, tls_broker, tmp_path):
    stranger = TestPKI(tmp_path / "other", ca_name="not the broker's CA")
    env = {**os.environ, "TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": f"localhost:{tls_broker[0]}",
           "TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SSL", "TICKPIPE_KAFKA_SSL_CAFILE": stranger.ca_file}
    proc = subprocess.run(tickpipe_command("topics", "list"), capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 1
    assert f"tickpipe: kafka: TLS verification of broker localhost:{tls_broker[0]} failed" in proc.stderr
    assert "Traceback" not in proc.stderr
