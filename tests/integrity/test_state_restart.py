"""Integrity state lives in a changelog-backed Faust table: a worker killed with SIGKILL and
restarted recognises every redelivered frame, so the clean topic holds each message once."""

from __future__ import annotations

import asyncio
import time

from tests.processors.support import produce
from tests.processors.test_process_e2e import PRICE, consume, frame, process_child
from tickpipe.envelope import KIND_SESSION_START
from tickpipe.topics import alerts_topic, raw_topic, tick_topic


def price(i: int) -> str:
    return PRICE.replace("09:35:5%d", f"10:{i // 60:02d}:{i % 60:02d}") % (f"3.{i:04d}", str(i + 1), "NZB.NZ")


async def wait_for_saved_state(kafka_settings, expected_next_seq: int, timeout: float = 30.0) -> None:
    """Until the state table's changelog holds the connection's state after every frame."""
    import orjson
    from aiokafka import AIOKafkaConsumer

    from tickpipe.kafka import client_kwargs

    topic = f"proc-{kafka_settings.topic_prefix}-integrity-financefeast-changelog"
    consumer = AIOKafkaConsumer(topic, **client_kwargs(kafka_settings), group_id=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                for message in batch:
                    if orjson.loads(message.value)["producer"]["expected"] == expected_next_seq:
                        return
        raise AssertionError(f"the integrity state was not saved within {timeout:.0f}s")
    finally:
        await consumer.stop()


def test_sigkilled_worker_resumes_without_duplicates_or_false_alerts(kafka_settings, tmp_path):
    prefix = kafka_settings.topic_prefix
    trades, alerts = tick_topic("trade", prefix), alerts_topic(prefix)
    frames = [frame(1, '{"event":"session_start"}', KIND_SESSION_START)] + [frame(i + 2, price(i)) for i in range(100)]
    first = process_child(kafka_settings, tmp_path, "worker-1")
    first.env["TICKPIPE_PROCESSOR_COMMIT_INTERVAL_S"] = "600"   # no offset commit before the kill
    first.env["TICKPIPE_INTEGRITY_STALE_AFTER_S"] = "0"         # the frames' receive times are from 2023
    with first:
        asyncio.run(produce(kafka_settings, raw_topic("financefeast", prefix), frames))
        got = asyncio.run(consume(kafka_settings, [trades], want=100))
        assert len(got) == 100
        asyncio.run(wait_for_saved_state(kafka_settings, expected_next_seq=102))
        first.process.kill()
        first.process.wait(10)
    second = process_child(kafka_settings, tmp_path, "worker-2")
    second.env["TICKPIPE_INTEGRITY_STALE_AFTER_S"] = "0"
    with second:
        asyncio.run(produce(kafka_settings, raw_topic("financefeast", prefix), [frame(102, price(100))]))
        got = asyncio.run(consume(kafka_settings, [trades, alerts], want=101 + 101, settle_s=3.0))
    ticks = [r for topic, _, r, _ in got if topic == trades]
    found = [r for topic, _, r, _ in got if topic == alerts]
    assert sorted(r["frame_seq"] for r in ticks) == list(range(2, 103))      # each message exactly once
    assert {(a["kind"], a["scope"]) for a in found} == {("DUPLICATE", "producer")}
    assert sorted(a["first_missing"] for a in found) == list(range(1, 102))  # every redelivered frame, no more
