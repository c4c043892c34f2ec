"""The topic catalogue: every topic the pipeline uses, declared once.

| topic | key | what |
| --- | --- | --- |
| ``raw.<provider>`` | connection id | every websocket frame verbatim, plus session markers |
| ``ticks.<kind>`` | normalized instrument | clean Avro records, one topic per record kind |
| ``alerts.gaps`` | provider | gap / out-of-order / duplicate / reset / stale / healed alerts |
| ``dlq.<provider>`` | connection id | frames that could not be normalized, with original bytes and reason |
| ``control.<provider>`` | provider | resync requests from processors back to producers |

All names carry the configurable prefix (``TICKPIPE_KAFKA_TOPIC_PREFIX``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tickpipe.config import setting
from tickpipe.providers import PROVIDERS

RECORD_KINDS = ("trade", "quote", "bar", "book", "level1", "status", "most_active", "sentiment")
DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSettings:
    """Section ``topics``: partition counts and retention."""

    raw_partitions: int = setting(4, minimum=1, help="partitions of each raw.<provider> topic")
    tick_partitions: int = setting(8, minimum=1, help="partitions of each ticks.<kind> topic")
    alert_partitions: int = setting(1, minimum=1, help="partitions of alerts.gaps")
    dlq_partitions: int = setting(1, minimum=1, help="partitions of each dlq.<provider> topic")
    raw_retention_ms: int = setting(3 * DAY_MS, minimum=-1, help="retention of raw topics (-1 = forever)")
    tick_retention_ms: int = setting(7 * DAY_MS, minimum=-1, help="retention of tick topics")
    alert_retention_ms: int = setting(30 * DAY_MS, minimum=-1, help="retention of alerts.gaps")
    dlq_retention_ms: int = setting(30 * DAY_MS, minimum=-1, help="retention of dlq topics")
    control_retention_ms: int = setting(DAY_MS, minimum=-1, help="retention of control topics")


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    cleanup_policy: str = "delete"
    purpose: str = ""
    max_message_bytes: int | None = None   # topic override of the broker's message size limit

    def configs(self) -> dict[str, str]:
        configs = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.max_message_bytes:
            configs["max.message.bytes"] = str(self.max_message_bytes)
        return configs


def raw_topic(provider: str, prefix: str = "") -> str:
    return f"{prefix}raw.{provider}"


def tick_topic(kind: str, prefix: str = "") -> str:
    return f"{prefix}ticks.{kind}"


def dlq_topic(provider: str, prefix: str = "") -> str:
    return f"{prefix}dlq.{provider}"


def control_topic(provider: str, prefix: str = "") -> str:
    return f"{prefix}control.{provider}"


def alerts_topic(prefix: str = "") -> str:
    return f"{prefix}alerts.gaps"


def catalogue(prefix: str = "", settings: TopicSettings = TopicSettings()) -> list[TopicSpec]:
    """Every declared topic, in a stable order."""
    s = settings
    specs = [TopicSpec(raw_topic(p, prefix), s.raw_partitions, s.raw_retention_ms, purpose=f"raw frames from {p}")
             for p in PROVIDERS]
    specs += [TopicSpec(tick_topic(k, prefix), s.tick_partitions, s.tick_retention_ms, purpose=f"clean {k} records")
              for k in RECORD_KINDS]
    specs.append(TopicSpec(alerts_topic(prefix), s.alert_partitions, s.alert_retention_ms, purpose="sequence alerts"))
    specs += [TopicSpec(dlq_topic(p, prefix), s.dlq_partitions, s.dlq_retention_ms, purpose=f"dead letters from {p}")
              for p in PROVIDERS]
    specs += [TopicSpec(control_topic(p, prefix), 1, s.control_retention_ms, purpose=f"resync requests to {p}")
              for p in PROVIDERS]
    return specs


@dataclass(frozen=True)
class TopicState:
    spec: TopicSpec
    existing_partitions: int | None  # None: missing

    @property
    def status(self) -> str:
        if self.existing_partitions is None:
            return "missing"
        if self.existing_partitions != self.spec.partitions:
            return "mismatch"
        return "ok"

    def describe(self) -> str:
        if self.status == "mismatch":
            return (f"{self.spec.name}: declared {self.spec.partitions} partitions, "
                    f"broker has {self.existing_partitions}")
        return f"{self.spec.name}: {self.status}"


async def inspect(admin, specs: list[TopicSpec]) -> list[TopicState]:
    """Compare the declared topics with what the broker has (``admin``: a started AIOKafkaAdminClient)."""
    existing = set(await admin.list_topics())
    present = [s.name for s in specs if s.name in existing]
    partitions: dict[str, int] = {}
    if present:
        for meta in await admin.describe_topics(present):
            if meta.get("error_code", 0) == 0:
                partitions[meta["topic"]] = len(meta["partitions"])
    return [TopicState(s, partitions.get(s.name)) for s in specs]


async def create_missing(admin, specs: list[TopicSpec], replication_factor: int = 1) -> tuple[list[str], list[TopicState]]:
    """Create the declared topics the broker lacks. Returns (created names, final states)."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    states = await inspect(admin, specs)
    missing = [st.spec for st in states if st.status == "missing"]
    created: list[str] = []
    if missing:
        new = [NewTopic(s.name, s.partitions, replication_factor, topic_configs=s.configs()) for s in missing]
        response = await admin.create_topics(new)
        for name, code, message in _topic_errors(response):
            if code == 0:
                created.append(name)
            elif code != TopicAlreadyExistsError.errno:  # a concurrent creator won the race: fine
                raise RuntimeError(f"creating topic {name} failed: error {code} {message or ''}".strip())
        await _wait_visible(admin, [s.name for s in missing])
    return created, await inspect(admin, specs)


def _topic_errors(response) -> list[tuple[str, int, str | None]]:
    rows = []
    for item in response.topic_errors:
        name, code = item[0], item[1]
        rows.append((name, code, item[2] if len(item) > 2 else None))
    return rows


async def _wait_visible(admin, names: list[str], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if set(names) <= set(await admin.list_topics()):
            return
        await asyncio.sleep(0.1)
