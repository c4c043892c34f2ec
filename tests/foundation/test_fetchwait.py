"""Fetch waits that grow when the broker starves a consumer (``tickpipe/fetchwait.py``).

The rules are checked as pure functions; then a real consumer on the session's broker reads a
partition holding thousands of single-record batches with a 1 ms wait. On embedded Tansu,
which lists every stored batch to answer a fetch, such a consumer gets nothing at all unless
its wait grows.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tickpipe.fetchwait import FETCH_WAIT, WaitLadder, govern_fetch_wait, starved
from tickpipe.kafka import client_kwargs

BATCHES = 6000


def test_an_answer_starves_when_a_partition_with_records_waiting_comes_back_empty():
    assert starved([(10, 50, False)]) is True
    assert starved([(10, 50, False), (7, 9, True)]) is True    # one of two served is still starved
    assert starved([(10, 50, True), (7, 9, True)]) is False
    assert starved([(10, 50, False), (3, 3, False)]) is True    # a caught-up partition does not count
    assert starved([(10, 50, True), (3, 3, False)]) is False
    assert starved([(10, 10, False), (4, None, False)]) is None  # nothing was waiting: no verdict
    assert starved([]) is None


def test_the_wait_doubles_after_patience_starved_answers_in_a_row_up_to_the_cap():
    ladder = WaitLadder(5, cap_ms=30, patience=3)
    assert [ladder.answer(True), ladder.answer(True)] == [None, None]
    assert ladder.answer(False) is None                          # a good answer resets the count
    assert [ladder.answer(True) for _ in range(3)] == [None, None, 10]
    assert ladder.answer(None) is None and ladder.wait_ms == 10  # no verdict changes nothing
    assert [ladder.answer(True) for _ in range(6)] == [None, None, 20, None, None, 30]
    assert [ladder.answer(True) for _ in range(6)] == [None] * 6 and ladder.wait_ms == 30


def test_with_relax_after_the_wait_drops_by_a_quarter_after_that_many_served_answers_never_below_the_start():
    ladder = WaitLadder(8, cap_ms=100, patience=1, relax_after=3)
    assert [ladder.answer(True), ladder.answer(True)] == [16, 32]
    assert [ladder.answer(False) for _ in range(3)] == [None, None, 24]
    assert [ladder.answer(False), ladder.answer(True), ladder.answer(False)] == [None, 48, None]  # starved: count restarts
    assert [ladder.answer(False) for _ in range(2)] == [None, 36]
    for _ in range(30):
        ladder.answer(False)
    assert ladder.wait_ms == 8                                   # back where it started, no lower
    assert WaitLadder(8, relax_after=0).answer(False) is None    # 0: never relaxes


@pytest.mark.kafka
def test_a_consumer_gets_the_records_of_a_partition_the_broker_is_slow_to_read(kafka_broker, kafka_settings):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    from tickpipe.admin import admin_client
    from tickpipe.topics import TopicSpec, create_missing

    topic = f"{kafka_settings.topic_prefix}slow-partition"
    tp = TopicPartition(topic, 0)

    async def fill() -> None:
        async with admin_client(kafka_settings) as admin:
            await create_missing(admin, [TopicSpec(topic, 1, 3_600_000, purpose="test")])
        producer = AIOKafkaProducer(**client_kwargs(kafka_settings), linger_ms=0)
        await producer.start()
        try:
            for i in range(BATCHES):  # one produce request, so one stored batch, each
                await producer.send_and_wait(topic, b"%d" % i, partition=0)
        finally:
            await producer.stop()

    async def read_the_tail(governed: bool) -> tuple[int, int]:
        consumer = AIOKafkaConsumer(**client_kwargs(kafka_settings), enable_auto_commit=False, fetch_max_wait_ms=1)
        await consumer.start()
        try:
            ladder = govern_fetch_wait(consumer, "test-slow-partition") if governed else None
            consumer.assign([tp])
            consumer.seek(tp, BATCHES - 10)
            got, deadline = [], time.monotonic() + 4
            while len(got) < 10 and time.monotonic() < deadline:
                got += (await consumer.getmany(tp, timeout_ms=500)).get(tp, [])
            return len(got), (ladder.wait_ms if ladder else 1)
        finally:
            await consumer.stop()

    asyncio.run(fill())
    got, wait_ms = asyncio.run(read_the_tail(governed=True))
    assert got == 10
    assert FETCH_WAIT.labels("test-slow-partition")._value.get() == wait_ms
    if kafka_broker.kind == "embedded":
        assert wait_ms > 1                                           # it was raised: the broker starved it
        assert asyncio.run(read_the_tail(governed=False)) == (0, 1)  # without: nothing in 4 s
