"""At-least-once under a broker outage: a batch is retried until the broker takes it, never lost."""

from __future__ import annotations

import asyncio
import time
import uuid

from tests.processors.example_normalizer import normalize
from tests.processors.support import SMALL_TOPICS
from tickpipe.admin import declare_topics
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


class RecordingSender(AiokafkaSender):
    """The real sender, keeping every delivery future it hands out."""

    def __init__(self, producer) -> None:
        super().__init__(producer)
        self.futures: list = []

    async def send(self, *args):
        fut = await super().send(*args)
        self.futures.append(fut)
        return fut


async def stored_records(kafka: KafkaSettings) -> int:
    """How many records ticks.trade holds, by the broker's offsets.

    (Not read back: after a restart Tansu can answer fetches with an empty partition while
    its offsets already count the records, so the offsets are the reliable witness here.)
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(tick_topic("trade", kafka.topic_prefix), p) for p in range(SMALL_TOPICS.tick_partitions)]
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return sum(end[tp] - begin[tp] for tp in tps)
    finally:
        await consumer.stop()


async def test_batch_waits_out_a_broker_outage_and_delivers_everything(tmp_path):
    from aiokafka import AIOKafkaProducer

    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "tansu.log")
    await asyncio.to_thread(broker.start)
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    # one record per batch: Tansu mis-reports multi-record batches written right after its restart
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", request_timeout_ms=1500, retry_backoff_ms=100,
                                max_batch_size=128)
    try:
        await declare_topics(kafka, SMALL_TOPICS)
        await producer.start()
        sender = RecordingSender(producer)
        processor = BatchProcessor(Pipeline("financefeast", normalize), sender, kafka.topic_prefix)
        frames = [RawRecord("financefeast", "ff-0", "s1", i, i, (PRICE % f"1.{i}0").encode()) for i in (1, 2, 3)]
        await asyncio.to_thread(broker.stop)
        task = asyncio.ensure_future(processor.process([(r.key, r.payload, r.headers(), Source()) for r in frames]))
        await wait_for(lambda: processor.retrying, 20, "a failed delivery")
        assert not task.done()                       # nothing acked while the broker is away
        await asyncio.to_thread(broker.start)        # same port, empty memory: declare again
        await declare_topics(kafka, SMALL_TOPICS)
        assert await asyncio.wait_for(task, 40) == 3
        assert not processor.retrying
        acked = [f.result() for f in sender.futures if f.done() and not f.exception()]
        assert len(acked) >= 3 and all(meta.offset >= 0 for meta in acked)  # acks=all from the restarted broker
        assert await stored_records(kafka) >= 3
    finally:
        await producer.stop()
        await asyncio.to_thread(broker.stop)
