"""A small Confluent Schema Registry client (aiohttp), and start-up registration of the shipped schemas.

Only two endpoints are used: ``POST /subjects/{subject}/versions`` (register; idempotent,
returns the id) and ``GET /schemas/ids/{id}`` (a writer schema by id). Subjects follow the
topic-name strategy: ``<topic>-value``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from tickpipe.config import Secret, setting
from tickpipe.logs import get_logger

log = get_logger("tickpipe.schema_registry")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


@dataclass(frozen=True)
class AvroSettings:
    """Section ``avro``: which wire format the clean topics use."""

    registry_url: str | None = setting(None, help="Schema Registry URL; set: Confluent wire format and "
                                                  "schemas registered at start-up; unset: Avro single-object encoding")
    registry_username: str | None = setting(None, help="registry basic-auth user")
    registry_password: Secret | None = setting(None, help="registry basic-auth password (or TICKPIPE_AVRO_REGISTRY_PASSWORD_FILE)")
    registry_timeout_s: float = setting(10.0, minimum=0.1, help="timeout of one registry request")


class RegistryError(RuntimeError):
    """The registry refused a request or could not be reached."""


class SchemaRegistry:
    """``async with SchemaRegistry(url) as registry: schema_id = await registry.register(subject, text)``."""

    def __init__(self, url: str, username: str | None = None, password: Secret | None = None,
                 timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self._auth = (username, password)
        self._timeout_s = timeout_s
        self._session = None
        self._by_id: dict[int, str] = {}

    @classmethod
    def from_settings(cls, settings: AvroSettings) -> "SchemaRegistry":
        return cls(settings.registry_url, settings.registry_username, settings.registry_password,
                   settings.registry_timeout_s)

    async def __aenter__(self) -> "SchemaRegistry":
        import aiohttp

        headers = {"Accept": CONTENT_TYPE}
        user, password = self._auth
        if user:
            pair = f"{user}:{password.reveal() if password else ''}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout_s), headers=headers)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import aiohttp

        if self._session is None:
            raise RuntimeError("use 'async with SchemaRegistry(...)'")
        data = json.dumps(body).encode() if body is not None else None
        try:
            async with self._session.request(method, self.url + path, data=data,
                                             headers={"Content-Type": CONTENT_TYPE}) as resp:
                text = await resp.text()
                if resp.status >= 300:
                    raise RegistryError(f"{method} {path}: HTTP {resp.status}: {text[:300]}")
                return json.loads(text)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(f"{method} {path}: cannot reach the registry at {self.url}: "
                                f"{type(exc).__name__}: {exc}") from None
        except ValueError:
            raise RegistryError(f"{method} {path}: the registry answered something that is not JSON") from None

    async def register(self, subject: str, schema_text: str) -> int:
        """Register (or find) ``schema_text`` under ``subject``; returns its global id."""
        doc = await self._request("POST", f"/subjects/{subject}/versions", {"schema": schema_text})
        schema_id = int(doc["id"])
        self._by_id[schema_id] = schema_text
        return schema_id

    async def schema_by_id(self, schema_id: int) -> str:
        """The schema text of ``schema_id`` (cached)."""
        if schema_id not in self._by_id:
            doc = await self._request("GET", f"/schemas/ids/{schema_id}")
            self._by_id[schema_id] = doc["schema"]
        return self._by_id[schema_id]


async def register_shipped(registry: SchemaRegistry, subjects_by_kind: dict[str, list[str]], schemas=None) -> dict[str, int]:
    """Register every shipped schema under the subjects of its topics; returns kind -> id.

    ``subjects_by_kind``: e.g. ``{"trade": ["ticks.trade-value"], "dead_letter": ["dlq.alpaca-value", ...]}``.
    """
    from tickpipe.avro import shipped_schemas

    schemas = schemas or shipped_schemas()
    ids: dict[str, int] = {}
    for kind, subjects in subjects_by_kind.items():
        for subject in subjects:
            schema_id = await registry.register(subject, schemas[kind].text)
            ids.setdefault(kind, schema_id)  # any id of the same schema text decodes the same
    log.info("schemas registered", registry=registry.url, subjects=sum(map(len, subjects_by_kind.values())))
    return ids


def value_subjects(topic_prefix: str, providers) -> dict[str, list[str]]:
    """The ``<topic>-value`` subjects of every clean topic, by record kind."""
    from tickpipe.processors.records import TICK_KINDS
    from tickpipe.topics import alerts_topic, dlq_topic, tick_topic

    subjects = {kind: [f"{tick_topic(kind, topic_prefix)}-value"] for kind in TICK_KINDS}
    subjects["gap_alert"] = [f"{alerts_topic(topic_prefix)}-value"]
    subjects["dead_letter"] = [f"{dlq_topic(p, topic_prefix)}-value" for p in providers]
    return subjects
