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
    sasl_oauth_token: Secret | None = setting(None, help="OAUTHBEARER token (or TICKPIPE_KAFKA_SASL_OAUTH_TOKEN_FILE), read at start-up")

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
        if uses_sasl and self.sasl_mechanism == "OAUTHBEARER" and not self.sasl_oauth_token:
            raise ConfigError("TICKPIPE_KAFKA_SASL_OAUTH_TOKEN: required with SASL mechanism OAUTHBEARER")
        if uses_sasl and self.sasl_mechanism != "OAUTHBEARER" and not (self.sasl_username and self.sasl_password):
            raise ConfigError(f"TICKPIPE_KAFKA_SASL_USERNAME/TICKPIPE_KAFKA_SASL_PASSWORD: required with SASL mechanism {self.sasl_mechanism}")
        if not uses_ssl and (self.ssl_certfile or self.ssl_cafile) and self.security_protocol == "PLAINTEXT":
            raise ConfigError("TICKPIPE_KAFKA_SECURITY_PROTOCOL: TLS files are set but the protocol is PLAINTEXT (use SSL or SASL_SSL)")


def partition_for(key: bytes, partitions) -> int:
    """The partition aiokafka's default partitioner gives ``key`` (murmur2 of the key, like the Java
    client; ``partitions``: the topic's partition ids, as a client's metadata holds them). A record
    sent with ``key`` and no partition lands exactly there."""
    from aiokafka.partitioner import DefaultPartitioner

    every = sorted(partitions)  # the partitioner's "all partitions sorted by partition ID"
    return DefaultPartitioner()(key, every, every)


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
        if settings.sasl_mechanism == "OAUTHBEARER":
            kwargs["sasl_oauth_token_provider"] = _token_provider(settings)
        else:
            kwargs["sasl_plain_username"] = settings.sasl_username
            kwargs["sasl_plain_password"] = settings.sasl_password.reveal() if settings.sasl_password else None
    return kwargs


class KafkaSetupError(RuntimeError):
    """The broker cannot be used with these settings; the message says why and which setting to check."""


def _servers(settings: KafkaSettings) -> list[tuple[str, int]]:
    pairs = []
    for item in settings.bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS: expected host:port[,host:port...], got {item.strip()!r}")
        pairs.append((host.strip("[]"), int(port)))
    return pairs


async def preflight(settings: KafkaSettings, timeout: float = 10.0) -> None:
    """Reach one bootstrap server (with a TLS handshake for the SSL protocols) or explain why not.

    aiokafka reports a certificate problem as a generic "unable to bootstrap" after its retries;
    this check names the real cause: an untrusted certificate (TICKPIPE_KAFKA_SSL_CAFILE), a
    hostname mismatch (TICKPIPE_KAFKA_SSL_CHECK_HOSTNAME) or a refused connection.
    """
    import asyncio
    import ssl

    ctx = ssl_context(settings)
    problems = []
    for host, port in _servers(settings):
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, ssl=ctx, server_hostname=host if ctx else None), timeout)
            writer.close()
            return
        except ssl.SSLCertVerificationError as exc:
            hint = ("TICKPIPE_KAFKA_SSL_CHECK_HOSTNAME / the broker's certificate names"
                    if "hostname" in (exc.verify_message or "").lower() or "IP address mismatch" in str(exc)
                    else "TICKPIPE_KAFKA_SSL_CAFILE")
            problems.append(f"TLS verification of broker {host}:{port} failed: {exc.verify_message or exc} (check {hint})")
        except ssl.SSLError as exc:
            problems.append(f"TLS handshake with broker {host}:{port} failed: {exc.reason or exc} "
                            f"(is TICKPIPE_KAFKA_SECURITY_PROTOCOL={settings.security_protocol} right for this listener?)")
        except (OSError, asyncio.TimeoutError) as exc:
            problems.append(f"cannot reach broker {host}:{port}: {exc or 'timed out'}")
    raise KafkaSetupError("; ".join(problems))


async def start_client(client, settings: KafkaSettings) -> None:
    """``await client.start()`` for any aiokafka client, with TLS and SASL failures reported clearly."""
    from aiokafka.errors import (AuthenticationFailedError, KafkaConnectionError, SaslAuthenticationFailed,
                                 UnsupportedSaslMechanismError)

    await preflight(settings)
    try:
        await client.start()
    except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
        raise KafkaSetupError(f"the broker rejected SASL {settings.sasl_mechanism} authentication as "
                              f"{settings.sasl_username!r}: {exc} (check TICKPIPE_KAFKA_SASL_USERNAME/_PASSWORD)") from None
    except UnsupportedSaslMechanismError as exc:
        raise KafkaSetupError(f"the broker does not offer SASL mechanism {settings.sasl_mechanism}: {exc} "
                              f"(check TICKPIPE_KAFKA_SASL_MECHANISM)") from None
    except KafkaConnectionError as exc:
        raise KafkaSetupError(f"cannot connect to Kafka at {settings.bootstrap_servers}: {exc}") from None


def faust_broker_options(settings: KafkaSettings) -> dict:
    """The same settings as Faust app options: ``broker``, ``broker_client_id``, ``broker_credentials``."""
    import faust

    options: dict = {"broker": ";".join(f"kafka://{h}:{p}" for h, p in _servers(settings)),
                     "broker_client_id": settings.client_id}
    ctx = ssl_context(settings)
    if settings.sasl_mechanism == "OAUTHBEARER" and settings.security_protocol.startswith("SASL_"):
        options["broker_credentials"] = faust.OAuthCredentials(oauth_cb=_token_provider(settings), ssl_context=ctx)
    elif settings.security_protocol.startswith("SASL_"):
        options["broker_credentials"] = faust.SASLCredentials(
            username=settings.sasl_username, password=settings.sasl_password.reveal(),
            mechanism=settings.sasl_mechanism, ssl_context=ctx)
    elif ctx is not None:
        options["broker_credentials"] = faust.SSLCredentials(ctx)
    return options


def _token_provider(settings: KafkaSettings):
    """An aiokafka OAUTHBEARER token provider handing out the configured (externally refreshed) token."""
    from aiokafka.abc import AbstractTokenProvider

    secret = settings.sasl_oauth_token

    class StaticTokenProvider(AbstractTokenProvider):
        async def token(self) -> str:
            return secret.reveal()

        def __repr__(self) -> str:
            return "StaticTokenProvider(token=Secret('**********'))"

    return StaticTokenProvider()
