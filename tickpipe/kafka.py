"""Kafka connection settings, shared by every client tickpipe opens (section ``kafka``).

:func:`client_kwargs` is the one place these settings become aiokafka arguments; the
Faust app maps the same settings onto its broker credentials.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tickpipe.config import ConfigError, Secret, setting

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")


@dataclass(frozen=True)
class KafkaSettings:
    bootstrap_servers: str = setting("127.0.0.1:9092", help="comma-separated host:port list")
    topic_prefix: str = setting("", help="prefix for every topic name (e.g. 'prod.')")
    client_id: str = setting("tickpipe", help="client id sent to the broker")
    replication_factor: int = setting(1, minimum=1, help="replication factor for topics we create")
    security_protocol: str = setting("PLAINTEXT", choices=SECURITY_PROTOCOLS, help="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    ssl_cafile: str | None = setting(None, help="CA bundle that signs the brokers' certificates")
    ssl_certfile: str | None = setting(None, help="client certificate (mutual TLS)")
    ssl_keyfile: str | None = setting(None, help="client private key (mutual TLS)")
    ssl_check_hostname: bool = setting(True, help="verify the broker's hostname against its certificate")
    sasl_mechanism: str | None = setting(None, choices=SASL_MECHANISMS, help="SASL mechanism")
    sasl_username: str | None = setting(None, help="SASL user name")
    sasl_password: Secret | None = setting(None, help="SASL password (or TICKPIPE_KAFKA_SASL_PASSWORD_FILE)")

    def __post_init__(self) -> None:
        uses_ssl = self.security_protocol in ("SSL", "SASL_SSL")
        uses_sasl = self.security_protocol.startswith("SASL_")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                raise ConfigError(f"TICKPIPE_KAFKA_{name.upper()}: file not found: {path}")
        if bool(self.ssl_certfile) != bool(self.ssl_keyfile):
            raise ConfigError("TICKPIPE_KAFKA_SSL_CERTFILE and TICKPIPE_KAFKA_SSL_KEYFILE must be set together")
        if uses_sasl and not self.sasl_mechanism:
            raise ConfigError(f"TICKPIPE_KAFKA_SASL_MECHANISM: required with security protocol {self.security_protocol}")
        if uses_sasl and self.sasl_mechanism != "OAUTHBEARER" and not (self.sasl_username and self.sasl_password):
            raise ConfigError(f"TICKPIPE_KAFKA_SASL_USERNAME/TICKPIPE_KAFKA_SASL_PASSWORD: required with SASL mechanism {self.sasl_mechanism}")
        if not uses_ssl and (self.ssl_certfile or self.ssl_cafile) and self.security_protocol == "PLAINTEXT":
            raise ConfigError("TICKPIPE_KAFKA_SECURITY_PROTOCOL: TLS files are set but the protocol is PLAINTEXT (use SSL or SASL_SSL)")


def ssl_context(settings: KafkaSettings):
    """An ``ssl.SSLContext`` for the SSL protocols, verification on unless disabled."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    from aiokafka.helpers import create_ssl_context
    ctx = create_ssl_context(cafile=settings.ssl_cafile, certfile=settings.ssl_certfile, keyfile=settings.ssl_keyfile)
    ctx.check_hostname = settings.ssl_check_hostname
    return ctx


def client_kwargs(settings: KafkaSettings) -> dict:
    """Keyword arguments common to AIOKafkaProducer, AIOKafkaConsumer and AIOKafkaAdminClient."""
    kwargs: dict = {
        "bootstrap_servers": settings.bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    ctx = ssl_context(settings)
    if ctx is not None:
        kwargs["ssl_context"] = ctx
    if settings.security_protocol.startswith("SASL_"):
        kwargs["sasl_mechanism"] = settings.sasl_mechanism
        if settings.sasl_mechanism != "OAUTHBEARER":
            kwargs["sasl_plain_username"] = settings.sasl_username
            kwargs["sasl_plain_password"] = settings.sasl_password.reveal() if settings.sasl_password else None
    return kwargs
