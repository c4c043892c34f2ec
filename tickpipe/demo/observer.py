"""What reaches the clean topics: ticks by provider and kind, alerts, dead letters, latency.

One aiokafka consumer without a group, assigned every partition of ``ticks.*``,
``alerts.gaps`` and ``dlq.<provider>`` from the beginning; records are decoded with
:class:`~tickpipe.avro.AvroReader`. End-to-end latency of a tick = the time this consumer
received it minus the record's ``recv_time`` (when the producer read the frame).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from tickpipe.demo.stats import Reservoir
from tickpipe.logs import get_logger

log = get_logger("tickpipe.demo")
ALERT_FIELDS = ("kind", "provider", "scope", "counter", "channel", "provider_symbol", "first_missing",
                "last_missing", "missing_count", "detected_time", "conn", "session")


@dataclass
class CleanTopics:
    """Counts and samples so far (read by the view; written by :meth:`Observer.run`)."""

    ticks: Counter = field(default_factory=Counter)           # (provider, kind) -> records
    dead_letters: Counter = field(default_factory=Counter)    # provider -> records on dlq.<provider>
    dead_letter_times: dict[str, list[int]] = field(default_factory=dict)   # provider -> their recv_time
    alerts: list[dict] = field(default_factory=list)          # decoded GapAlert fields
    latency_ms: dict[str, Reservoir] = field(default_factory=dict)
    recent_ms: dict[str, deque] = field(default_factory=dict)  # the latest latencies, for the live view
    undecodable: int = 0

    def latency(self, provider: str) -> Reservoir:
        if provider not in self.latency_ms:
            self.latency_ms[provider] = Reservoir()
            self.recent_ms[provider] = deque(maxlen=2000)
        return self.latency_ms[provider]


class Observer:
    def __init__(self, kafka, providers: list[str]) -> None:
        from tickpipe.topics import RECORD_KINDS, alerts_topic, dlq_topic, tick_topic

        prefix = kafka.topic_prefix
        self.kafka = kafka
        self.topics = ([tick_topic(k, prefix) for k in RECORD_KINDS] + [alerts_topic(prefix)]
                       + [dlq_topic(p, prefix) for p in providers])
        self.dlq_topics = {dlq_topic(p, prefix): p for p in providers}
        self.alerts_topic = alerts_topic(prefix)
        self.seen = CleanTopics()
        self.consumer = None
        self.caught_up = asyncio.Event()
        self.latency_before_ns: int | None = None   # frames received from then on (the wind-down) are not timed

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from tickpipe.fetchwait import govern_fetch_wait
        from tickpipe.kafka import client_kwargs, start_client

        self.consumer = AIOKafkaConsumer(**client_kwargs(self.kafka), group_id=None, enable_auto_commit=False,
                                         fetch_max_wait_ms=50)   # the view's own hop adds little latency
        await start_client(self.consumer, self.kafka)
        govern_fetch_wait(self.consumer, "demo-view")
        await self.consumer._client.force_metadata_update()
        tps = [TopicPartition(t, p) for t in self.topics for p in sorted(self.consumer.partitions_for_topic(t) or ())]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)

    async def run(self, stop: asyncio.Event) -> None:
        from tickpipe.avro import AvroReader

        reader = AvroReader()
        while not stop.is_set():
            try:
                batches = await self.consumer.getmany(timeout_ms=200, max_records=2000)
            except Exception as exc:  # noqa: BLE001 - a broker hiccup must not end the view
                log.warning("reading the clean topics failed; retrying", error=str(exc))
                await asyncio.sleep(0.5)
                continue
            now_ns = time.time_ns()
            for msg in (m for batch in batches.values() for m in batch):
                try:
                    record = reader.decode(msg.value or b"")
                except Exception:  # noqa: BLE001 - one bad record must not stop the view
                    self.seen.undecodable += 1
                    continue
                self._count(msg.topic, record, now_ns)
            if not batches:
                self.caught_up.set()

    def _count(self, topic: str, record, now_ns: int) -> None:
        seen = self.seen
        if topic in self.dlq_topics:
            provider = self.dlq_topics[topic]
            seen.dead_letters[provider] += 1
            seen.dead_letter_times.setdefault(provider, []).append(record.get("recv_time") or 0)
        elif topic == self.alerts_topic:
            seen.alerts.append({k: record.get(k) for k in ALERT_FIELDS})
        else:
            provider = record.get("provider") or "?"
            seen.ticks[(provider, record.kind)] += 1
            recv = record.get("recv_time")
            if isinstance(recv, int) and recv > 0 and (self.latency_before_ns is None or recv < self.latency_before_ns):
                ms = (now_ns - recv) / 1e6
                seen.latency(provider).add(ms)
                seen.recent_ms[provider].append(ms)

    async def drained(self, timeout: float) -> None:
        """Wait until a poll comes back empty (everything produced so far has been read)."""
        self.caught_up.clear()
        try:
            await asyncio.wait_for(self.caught_up.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("clean topics not fully read before the summary", timeout_s=timeout)

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
