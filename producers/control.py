"""Follow ``control.<provider>``: resync requests from processors back to the producers.

A control record's value is a JSON object (key: the provider id, UTF-8)::

    {"action": "resync", "instrument": "BTC-USD", "channel": "level2",
     "reason": "gap", "requested_ns": 1767225600000000000, "conn": "alpaca-0"}

* ``action``: ``"resync"`` (the only action so far);
* ``instrument`` and/or ``channel``: what to unsubscribe and resubscribe (at least one;
  strings of at most 200 characters); the adapter decides what they mean for its feed;
* ``reason``: free text for logs (optional); ``requested_ns``: when it was asked (optional);
* ``conn``: only this connection id acts on it (optional; absent = every connection).

Each producer reads every partition from the end, without a consumer group, so every
connection sees every request made while it runs. A record that is not understood is
logged and counted (``tickpipe_producer_control_rejected_total``), never fatal. The same
target asked again within ``min_interval_s`` is coalesced into the resync already made.
Use :func:`resync_request` to build a value.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

import orjson

from tickpipe.kafka import KafkaSettings, client_kwargs
from tickpipe.logs import get_logger
from tickpipe.producers import metrics
from tickpipe.producers.base import ResyncTarget
from tickpipe.producers.resume import partitions_of
from tickpipe.topics import control_topic

log = get_logger("tickpipe.producer.control")
MAX_FIELD = 200


class ControlError(ValueError):
    """A control record that cannot be acted on; the message says why."""


def resync_request(instrument: str | None = None, channel: str | None = None, reason: str = "",
                   conn: str | None = None) -> bytes:
    """The value of a resync request (for processors)."""
    doc = {"action": "resync", "instrument": instrument, "channel": channel, "reason": reason,
           "requested_ns": time.time_ns()}
    if conn:
        doc["conn"] = conn
    return orjson.dumps(doc)


def parse_control(value: bytes | None) -> tuple[ResyncTarget, str | None]:
    """(target, conn) from a control record value; raises :class:`ControlError`."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        raise ControlError("value is not JSON") from None
    if not isinstance(doc, dict):
        raise ControlError("value is not a JSON object")
    if doc.get("action") != "resync":
        raise ControlError(f"unknown action {str(doc.get('action'))[:40]!r}")
    fields = {}
    for name in ("instrument", "channel", "reason", "conn"):
        item = doc.get(name)
        if item is not None and (not isinstance(item, str) or len(item) > MAX_FIELD):
            raise ControlError(f"'{name}' must be a string of at most {MAX_FIELD} characters")
        fields[name] = item or None
    if not fields["instrument"] and not fields["channel"]:
        raise ControlError("a resync needs an 'instrument' or a 'channel'")
    return ResyncTarget(fields["instrument"], fields["channel"], fields["reason"] or ""), fields["conn"]


class ControlFollower:
    """Consume ``control.<provider>`` from the end and hand each request to ``on_resync``."""

    def __init__(self, kafka: KafkaSettings, provider: str, conn: str,
                 on_resync: Callable[[ResyncTarget], bool], min_interval_s: float = 2.0) -> None:
        self.kafka, self.provider, self.conn, self.on_resync = kafka, provider, conn, on_resync
        self.topic = control_topic(provider, kafka.topic_prefix)
        self.min_interval_s = min_interval_s
        self.positioned = asyncio.Event()  # set once reading from the end of every partition
        self._recent: dict[tuple, float] = {}

    async def run(self) -> None:
        """Follow until cancelled; reconnects on its own when Kafka goes away."""
        failures = 0
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.warning("control topic unavailable; retrying", provider=self.provider, topic=self.topic,
                            error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(failures, 6)))

    async def _follow(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(**client_kwargs(self.kafka), group_id=None, enable_auto_commit=False,
                                    auto_offset_reset="latest", request_timeout_ms=15000)
        await consumer.start()
        try:
            partitions = await partitions_of(consumer, self.topic)
            assigned = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            consumer.assign(assigned)
            await consumer.seek_to_end(*assigned)
            for tp in assigned:
                await consumer.position(tp)
            self.positioned.set()
            log.info("following control topic", provider=self.provider, topic=self.topic)
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                for records in batches.values():
                    for record in records:
                        self.handle(record.value)
        finally:
            self.positioned.clear()
            await consumer.stop()

    def handle(self, value: bytes | None) -> bool:
        """Act on one control value; True if a resync was requested."""
        try:
            target, conn = parse_control(value)
        except ControlError as exc:
            metrics.control_rejected.labels(self.provider).inc()
            log.warning("control record rejected", provider=self.provider, error=str(exc),
                        size=len(value or b""))
            return False
        if conn and conn != self.conn:
            return False
        now, key = time.monotonic(), (target.instrument, target.channel)
        if now - self._recent.get(key, -1e9) < self.min_interval_s:
            log.debug("resync coalesced", provider=self.provider, target=target.describe())
            return False
        self._recent = {t: at for t, at in self._recent.items() if now - at < self.min_interval_s}
        self._recent[key] = now
        log.info("resync requested", provider=self.provider, target=target.describe(), reason=target.reason)
        return self.on_resync(target)
