"""SASL and TLS settings down to the client objects (aiokafka and Faust), without a SASL broker.

End-to-end SASL runs only against a real cluster: set KAFKA_BOOTSTRAP_SERVERS plus the
TICKPIPE_KAFKA_* security variables and ``test_real_cluster_with_configured_security`` uses them.
"""

from __future__ import annotations

import os

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from tickpipe.config import ConfigError, Secret, load_section
from tickpipe.kafka import KafkaSettings, client_kwargs, faust_broker_options

PASSWORD = "pa55-word-never-shown"


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_sasl_settings_reach_every_aiokafka_client(protocol, mechanism, tmp_path):
    from tests.tls_support import TestPKI

    ca = TestPKI(tmp_path).ca_file if protocol == "SASL_SSL" else None
    settings = KafkaSettings(bootstrap_servers="broker:9096", security_protocol=protocol, ssl_cafile=ca,
                             sasl_mechanism=mechanism, sasl_username="svc-tickpipe", sasl_password=Secret(PASSWORD))
    kwargs = client_kwargs(settings)
    assert kwargs["sasl_mechanism"] == mechanism and kwargs["sasl_plain_password"] == PASSWORD
    assert ("ssl_context" in kwargs) == (protocol == "SASL_SSL")
    producer = AIOKafkaProducer(**kwargs, acks="all")
    consumer = AIOKafkaConsumer(**kwargs)
    admin = AIOKafkaAdminClient(**kwargs)
    for client in (producer.client, consumer._client, admin._client):
        assert client._security_protocol == protocol
        assert client._sasl_mechanism == mechanism
        assert client._sasl_plain_username == "svc-tickpipe"
    await producer.stop()
    await consumer.stop()
    await admin.close()
    faust_opts = faust_broker_options(settings)
    creds = faust_opts["broker_credentials"]
    assert creds.protocol.value == protocol and creds.mechanism.value == mechanism
    assert creds.username == "svc-tickpipe" and creds.password == PASSWORD
    assert faust_opts["broker"] == "kafka://broker:9096"
    assert PASSWORD not in repr(settings)


async def test_oauthbearer_uses_the_configured_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("eyJ-token-value-123\n")
    settings = load_section(KafkaSettings, "kafka", env={
        "TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TICKPIPE_KAFKA_SASL_MECHANISM": "OAUTHBEARER",
        "TICKPIPE_KAFKA_SASL_OAUTH_TOKEN_FILE": str(token_file)})
    provider = client_kwargs(settings)["sasl_oauth_token_provider"]
    assert await provider.token() == "eyJ-token-value-123"
    assert "eyJ-token-value-123" not in repr(provider)
    creds = faust_broker_options(settings)["broker_credentials"]
    assert await creds.oauth_cb.token() == "eyJ-token-value-123"
    producer = AIOKafkaProducer(**client_kwargs(settings))
    assert producer.client._sasl_mechanism == "OAUTHBEARER"
    await producer.stop()


def test_tls_only_maps_to_ssl_credentials_for_faust(tmp_path):
    from tests.tls_support import TestPKI

    settings = KafkaSettings(bootstrap_servers="a:9093,b:9093", security_protocol="SSL", ssl_cafile=TestPKI(tmp_path).ca_file)
    opts = faust_broker_options(settings)
    assert opts["broker"] == "kafka://a:9093;kafka://b:9093"
    assert opts["broker_credentials"].protocol.value == "SSL"
    assert "broker_credentials" not in faust_broker_options(KafkaSettings())


@pytest.mark.parametrize("env, message", [
    ({"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "TICKPIPE_KAFKA_SASL_MECHANISM: required"),
    ({"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TICKPIPE_KAFKA_SASL_MECHANISM": "GSSAPI"},
     "TICKPIPE_KAFKA_SASL_MECHANISM: must be one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER"),
    ({"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TICKPIPE_KAFKA_SASL_MECHANISM": "PLAIN",
      "TICKPIPE_KAFKA_SASL_USERNAME": "u"}, "TICKPIPE_KAFKA_SASL_USERNAME/TICKPIPE_KAFKA_SASL_PASSWORD: required"),
    ({"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "TICKPIPE_KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
     "TICKPIPE_KAFKA_SASL_OAUTH_TOKEN: required"),
    ({"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SSL", "TICKPIPE_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
     "TICKPIPE_KAFKA_SSL_CAFILE: file not found: /nonexistent/ca.pem"),
    ({"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SSL", "TICKPIPE_KAFKA_SSL_CERTFILE": __file__},
     "TICKPIPE_KAFKA_SSL_CERTFILE and TICKPIPE_KAFKA_SSL_KEYFILE must be set together"),
    ({"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": "no-port-here"}, None),
])
def test_misconfiguration_is_refused_naming_the_setting(env, message):
    if message is None:
        settings = load_section(KafkaSettings, "kafka", env=env)
        with pytest.raises(ConfigError, match="TICKPIPE_KAFKA_BOOTSTRAP_SERVERS: expected host:port"):
            client_kwargs(settings) and faust_broker_options(settings)
        return
    with pytest.raises(ConfigError) as err:
        load_section(KafkaSettings, "kafka", env=env)
    assert message in str(err.value)


@pytest.mark.kafka
async def test_real_cluster_with_configured_security():
    """Runs only where KAFKA_BOOTSTRAP_SERVERS points at a cluster (with TICKPIPE_KAFKA_* security set)."""
    if not os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        pytest.skip("set KAFKA_BOOTSTRAP_SERVERS (and TICKPIPE_KAFKA_SECURITY_*) to run against a real cluster")
    from tickpipe.admin import admin_client
    from tickpipe.kafka import start_client

    settings = load_section(KafkaSettings, "kafka", overrides={"bootstrap_servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]})
    producer = AIOKafkaProducer(**client_kwargs(settings), acks="all")
    await start_client(producer, settings)
    await producer.stop()
    async with admin_client(settings) as admin:
        assert isinstance(await admin.list_topics(), list)
