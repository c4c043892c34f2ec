"""Fetch waits that grow when the broker starves a consumer.

The embedded broker (Tansu 0.6.0, memory storage) lists every batch a partition holds to
answer a fetch: about 1 us per stored batch. Partitions whose reads end after the
consumer's ``fetch_max_wait_ms`` come back *empty although the broker has their records*: with
a 5 ms wait and 3,000 batches in each of 8 partitions a fetch returns 1 or 2 of the 8; at
32,000 batches in one partition a 10 ms wait never gets a record (``python -m
bench.broker_fetch``). A long-running processor on the embedded broker would stall that way.

A starved answer is recognisable: a partition comes back empty while the high watermark in
the same answer is past the fetch offset. After ``patience`` such answers in a row the wait
doubles, up to ``cap_ms``; after ``relax_after`` served answers in a row it drops by a quarter
(never below where it started), so it stays near the least the broker needs. A wait only
costs time when no partition has anything new (the broker then holds the fetch that long); a
fetch that finds records returns at once. (On Kafka
a partition can also come back empty when the answer reached ``fetch_max_bytes``; the wait
then rises for nothing, which costs nothing there: Kafka answers a waiting fetch as soon as
records arrive.)

    govern_fetch_wait(consumer, "processor")      # after consumer.start()
"""

from __future__ import annotations

import time
from typing import Iterable

from aiokafka.structs import TopicPartition
from prometheus_client import Gauge

from tickpipe.logs import get_logger

log = get_logger("tickpipe.fetchwait")

FETCH_WAIT = Gauge("tickpipe_consumer_fetch_wait_ms", "fetch_max_wait_ms of a consumer (raised when the broker "
                   "answered fetches with no records although it had them, lowered again while it serves them)",
                   ["consumer"])


def starved(partitions: Iterable[tuple[int, int | None, bool]]) -> bool | None:
    """Whether a fetch answer starved the consumer, from (fetch offset, high watermark, got records) per partition.

    True: a partition with records past the fetch offset came back without any. False: every such
    partition came back with records. None: no partition had records waiting (nothing to judge).
    """
    waiting = [got for offset, highwater, got in partitions if highwater is not None and highwater > offset]
    if not waiting:
        return None
    return not all(waiting)


class WaitLadder:
    """The wait, doubled after ``patience`` starved answers in a row, never above ``cap_ms``; with
    ``relax_after``, lowered by a quarter (not below where it started) after that many served
    answers in a row, so it stays near the least the broker needs."""

    def __init__(self, wait_ms: int, cap_ms: int = 1000, patience: int = 3, relax_after: int = 0) -> None:
        self.wait_ms, self.cap_ms, self.patience = wait_ms, max(cap_ms, wait_ms), patience
        self.floor_ms, self.relax_after = wait_ms, relax_after
        self._in_a_row = 0
        self._served_in_a_row = 0

    def answer(self, was_starved: bool | None) -> int | None:
        """Record one fetch answer; the new wait when it changes, else None."""
        if was_starved is None:
            return None
        if not was_starved:
            self._in_a_row = 0
            self._served_in_a_row += 1
            if self.relax_after and self._served_in_a_row >= self.relax_after and self.wait_ms > self.floor_ms:
                self._served_in_a_row = 0
                self.wait_ms = max(self.floor_ms, self.wait_ms * 3 // 4)
                return self.wait_ms
            return None
        self._served_in_a_row = 0
        self._in_a_row += 1
        if self._in_a_row < self.patience or self.wait_ms >= self.cap_ms:
            return None
        self._in_a_row = 0
        self.wait_ms = min(self.cap_ms, self.wait_ms * 2)
        return self.wait_ms


def govern_fetch_wait(consumer, name: str, cap_ms: int = 1000, patience: int = 3,
                      relax_after: int = 50) -> WaitLadder | None:
    """Watch a started aiokafka consumer's fetch answers; raise its wait when they starve it, and
    lower it again after ``relax_after`` served answers in a row.

    Relies on aiokafka's private ``Fetcher`` (``_proc_fetch_request``, ``_records``,
    ``_fetch_max_wait_ms``); returns None, changing nothing, where those are missing. A raise to a
    wait above any before is logged as a warning; the ups and downs below it are not.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    process = getattr(fetcher, "_proc_fetch_request", None)
    if process is None or not hasattr(fetcher, "_fetch_max_wait_ms") or not hasattr(fetcher, "_records"):
        return None
    ladder = WaitLadder(fetcher._fetch_max_wait_ms, cap_ms, patience, relax_after)
    gauge = FETCH_WAIT.labels(name)
    gauge.set(ladder.wait_ms)
    highest = ladder.wait_ms

    async def process_and_judge(assignment, node_id, request):
        nonlocal highest
        sent_ms = int(time.time() * 1000)
        woke = await process(assignment, node_id, request)
        changed = ladder.answer(starved(_answers(fetcher, assignment, request, sent_ms)))
        if changed is not None:
            fetcher._fetch_max_wait_ms = changed
            gauge.set(changed)
        if changed is not None and changed > highest:
            highest = changed
            log.warning("broker answered fetches without the records it holds; fetch wait raised",
                        consumer=name, fetch_max_wait_ms=changed)
        return woke

    fetcher._proc_fetch_request = process_and_judge
    return ladder


def _answers(fetcher, assignment, request, sent_ms: int):
    """(fetch offset, high watermark, got records) of each partition this answer updated."""
    if not getattr(assignment, "active", False):
        return
    for topic, partitions in request.topics:
        for partition, offset, _max_bytes in partitions:
            tp = TopicPartition(topic, partition)
            try:
                state = assignment.state_value(tp)
            except Exception:  # revoked meanwhile
                continue
            if state is None or state.timestamp is None or state.timestamp < sent_ms:
                continue  # this answer did not update the partition (an error, or discarded)
            yield offset, state.highwater, tp in fetcher._records
