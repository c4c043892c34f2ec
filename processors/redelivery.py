"""Outputs a killed worker delivered but never vouched for: found in the output topics, not sent twice.

A batch's outputs are acknowledged by Kafka before the integrity state that vouches for them
reaches the changelog: without transactions (Tansu has none) the two cannot be one write. A
worker SIGKILLed between the two leaves records in the clean topics that its successor,
restoring the older state, produces again when the batch is redelivered.

So every saved state carries **marks**: for each partition of the provider's output topics, an
offset that every record the worker writes after that save lands at or beyond (the end offset
the broker reported at start, then one past each record it acknowledged). A worker restoring a
state reads the output partitions from those marks to their end, and for a while (``hold_s``)
drops any output byte-identical to a record found there: a clean record carries its
connection, frame sequence and index, so identical bytes mean the same record, already
delivered. Alerts carry their detection time and are never identical: they are not
deduplicated.
"""

from __future__ import annotations

import time
from typing import Iterable, Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from tickpipe.fetchwait import govern_fetch_wait
from tickpipe.logs import get_logger
from tickpipe.processors.end_offsets import true_end_offsets
from tickpipe.processors.metrics import REDELIVERED_DROPPED, REDELIVERY_SCANNED

log = get_logger("tickpipe.processors.redelivery")

Marks = dict[str, list[int]]  # output topic -> offset per partition


class Redelivery:
    """Marks of what this worker wrote, and the filter armed after a state is restored."""

    def __init__(self, provider: str, client_kwargs: dict, topics: Iterable[str], hold_s: float = 120.0,
                 scan_limit: int = 5_000_000, fetch_max_wait_ms: int = 100) -> None:
        self.provider = provider
        self.topics = sorted(set(topics))
        self.hold_s = hold_s
        self.scan_limit = scan_limit
        self._kwargs = client_kwargs
        self._fetch_wait = fetch_max_wait_ms
        self.marks: Marks | None = None
        self._delivered: set[int] = set()        # hash((topic, value)) of records found in a scan
        self._scanned: dict[TopicPartition, tuple[int, int]] = {}
        self._armed_until = 0.0
        self._dropped = REDELIVERED_DROPPED.labels(provider)
        self._scan_count = REDELIVERY_SCANNED.labels(provider)

    async def ensure_marks(self) -> None:
        """Start the marks at the output partitions' end offsets (once; before the first delivery)."""
        if self.marks is not None:
            return
        consumer = AIOKafkaConsumer(**self._kwargs, enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            tps = []
            for topic in self.topics:
                partitions = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
                tps += [TopicPartition(topic, p) for p in sorted(partitions)]
            ends = await consumer.end_offsets(tps)   # at most the true end: a safe lower bound
        finally:
            await consumer.stop()
        marks: Marks = {topic: [] for topic in self.topics}
        for tp in tps:
            marks[tp.topic].append(ends[tp])
        self.marks = marks

    def delivered(self, topic: str, partition: int, offset: int) -> None:
        """A record of ours was acknowledged at ``offset``: later ones land beyond it."""
        offsets = self.marks.get(topic) if self.marks is not None else None
        if offsets is not None and partition < len(offsets) and offsets[partition] <= offset:
            offsets[partition] = offset + 1

    def current_marks(self) -> Marks | None:
        return {topic: list(offsets) for topic, offsets in self.marks.items()} if self.marks is not None else None

    async def restored(self, saved: Iterable[Mapping[str, list[int]]]) -> None:
        """States carrying ``saved`` marks were restored: find what was written beyond them."""
        start: dict[TopicPartition, int] = {}
        for marks in saved:
            for topic, offsets in marks.items():
                for partition, offset in enumerate(offsets):
                    tp = TopicPartition(topic, partition)
                    start[tp] = min(offset, start.get(tp, offset))
        if not start:
            return
        if not self.armed:
            self._disarm()
        found = await self._scan(start)
        self._armed_until = time.monotonic() + self.hold_s
        log.info("restored state: outputs beyond its marks will not be sent again", provider=self.provider,
                 records_found=found, hold_s=self.hold_s)

    @property
    def armed(self) -> bool:
        """Outputs found after a restore are still being looked for."""
        if self._delivered and time.monotonic() > self._armed_until:
            self._disarm()
        return bool(self._delivered)

    def _disarm(self) -> None:
        self._delivered.clear()
        self._scanned.clear()

    def already_delivered(self, topic: str, value: bytes) -> bool:
        """True (once) for an output found in the scan, while the filter is armed."""
        digest = hash((topic, value))
        if digest in self._delivered:
            self._delivered.discard(digest)
            self._dropped.inc()
            return True
        return False

    async def _scan(self, start: dict[TopicPartition, int]) -> int:
        """Read each partition from its start mark to its end (skipping ranges already read)."""
        consumer = AIOKafkaConsumer(**self._kwargs, enable_auto_commit=False, group_id=None,
                                    fetch_max_wait_ms=self._fetch_wait)
        await consumer.start()
        govern_fetch_wait(consumer, f"redelivery-{self.provider}")
        try:
            ends = await true_end_offsets(self._kwargs, await consumer.end_offsets(list(start)), self._fetch_wait)
            ranges = {}
            for tp, lo in start.items():
                for a, b in self._unscanned(tp, lo, ends[tp]):
                    ranges.setdefault(tp, []).append((a, b))
            found = await self._read(consumer, ranges)
        finally:
            await consumer.stop()
        return found

    def _unscanned(self, tp: TopicPartition, lo: int, end: int) -> list[tuple[int, int]]:
        done = self._scanned.get(tp)
        if end - lo > self.scan_limit:
            log.warning("redelivery scan capped: older duplicates possible", provider=self.provider,
                        partition=f"{tp.topic}/{tp.partition}", records=end - lo, limit=self.scan_limit)
            lo = end - self.scan_limit
        if done is None:
            self._scanned[tp] = (lo, end)
            return [(lo, end)] if lo < end else []
        a, b = done
        self._scanned[tp] = (min(a, lo), max(b, end))
        return [r for r in ((lo, a), (b, end)) if r[0] < r[1]]

    async def _read(self, consumer, ranges: dict[TopicPartition, list[tuple[int, int]]]) -> int:
        found = 0
        for tp, spans in ranges.items():
            consumer.assign([tp])
            for lo, hi in spans:
                consumer.seek(tp, lo)
                position, patience = lo, time.monotonic() + 10.0
                while position < hi:  # the records up to hi exist: an empty fetch is no end
                    batch = (await consumer.getmany(tp, timeout_ms=self._fetch_wait * 5, max_records=5000)).get(tp)
                    if not batch:
                        if time.monotonic() > patience:
                            log.warning("redelivery scan stopped short", provider=self.provider,
                                        partition=f"{tp.topic}/{tp.partition}", at=position, end=hi)
                            break
                        continue
                    patience = time.monotonic() + 10.0
                    for record in batch:
                        if record.offset >= hi:
                            break
                        self._delivered.add(hash((tp.topic, record.value)))
                        found += 1
                    position = batch[-1].offset + 1
        self._scan_count.inc(found)
        return found


async def _partitions(consumer, topic: str) -> set[int]:
    await consumer._client.force_metadata_update()
    return consumer.partitions_for_topic(topic) or set()
