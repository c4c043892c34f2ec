"""At-least-once under a broker outage: a batch is retried until the broker takes it, never lost."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.processors.example_normalizer import normalize
from tests.processors.support import SMALL_TOPICS
from tickpipe.admin import declare_topics
from tickpipe.avro import AvroReader
from tickpipe.broker import EmbeddedBroker, free_port
from tickpipe.envelope import RawRecord
from tickpipe.kafka import KafkaSettings, client_kwargs
from tickpipe.processors.batch import AiokafkaSender, BatchProcessor
from tickpipe.processors.deadletter import Source
from tickpipe.processors.pipeline import Pipeline
from tickpipe.topics import tick_topic

PRICE = '{"type":"price","data":{"date":"2021-09-29T09:35:53","price":%s,"volume":1,"symbol":"NZB.NZ"}}'


async def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def read_trades(kafka: KafkaSettings, want: int) -> list:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None)
    await consumer.start()
    got, deadline = [], time.monotonic() + 20
    try:
        # explicit seek: after a restart Tansu answers the "earliest" offset lookup wrongly
        tps = [TopicPartition(tick_topic("trade", kafka.topic_prefix), p) for p in range(SMALL_TOPICS.tick_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while len(got) < want and time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                got += [AvroReader().decode(m.value) for m in batch]
    finally:
        await consumer.stop()
    return got


async def test_batch_waits_out_a_broker_outage_and_delivers_everything(tmp_path):
    from aiokafka import AIOKafkaProducer

    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", request_timeout_ms=1500, retry_backoff_ms=100)
    try:
        await declare_topics(kafka, SMALL_TOPICS)
        await producer.start()
        processor = BatchProcessor(Pipeline("financefeast", normalize), AiokafkaSender(producer), kafka.topic_prefix)
        frames = [RawRecord("financefeast", "ff-0", "s1", i, i, (PRICE % f"1.{i}0").encode()) for i in (1, 2, 3)]
        await asyncio.to_thread(broker.stop)
        task = asyncio.ensure_future(processor.process([(r.key, r.payload, r.headers(), Source()) for r in frames]))
        await wait_for(lambda: processor.retrying, 20, "a failed delivery")
        assert not task.done()                       # nothing acked while the broker is away
        await asyncio.to_thread(broker.start)        # same port, empty memory: declare again
        await declare_topics(kafka, SMALL_TOPICS)
        assert await asyncio.wait_for(task, 40) == 3
        assert not processor.retrying
        trades = await read_trades(kafka, 3)
    finally:
        await producer.stop()
        await asyncio.to_thread(broker.stop)
    assert sorted({(t["frame_seq"], t["price"]) for t in trades}) == [(1, "1.10"), (2, "1.20"), (3, "1.30")]
