"""The SIGKILL window, step by step on a real broker: a batch's outputs acknowledged, then the
worker dies before the state that vouches for them reaches the changelog. Its successor restores
the older state, gets the batch redelivered and must not deliver it twice
(``processors/redelivery.py``). Without the redelivery filter the same steps leave duplicates:
the test shows both."""

from __future__ import annotations

from collections import Counter

import pytest
from aiokafka import AIOKafkaProducer

from tests.reliability.support import decode_avro, read_topics
from tickpipe.admin import declare_topics
from tickpipe.envelope import RawRecord
from tickpipe.kafka import client_kwargs
from tickpipe.processors.batch import AiokafkaSender, BatchProcessor
from tickpipe.processors.deadletter import Source
from tickpipe.processors.integrity.check import IntegrityCheck
from tickpipe.processors.metrics import REDELIVERED_DROPPED
from tickpipe.processors.pipeline import Pipeline
from tickpipe.topics import raw_topic, tick_topic

PRICE = b'{"type":"price","data":{"date":"2021-09-29T09:35:%02d","price":3.%02d,"volume":1,"symbol":"NZB.NZ"}}'


class DyingStore(dict):
    """A state table whose writes stop reaching the changelog once the worker 'dies'."""

    alive = True

    def __setitem__(self, key, value) -> None:
        if self.alive:
            super().__setitem__(key, value)


def batch(kafka, seqs):
    out = []
    for seq in seqs:
        raw = RawRecord("financefeast", "ff-0", "s1", seq, 1_700_000_000_000_000_000 + seq, PRICE % (seq, seq))
        out.append((raw.key, raw.payload, raw.headers(), Source(raw_topic("financefeast", kafka.topic_prefix), 0, seq)))
    return out


def worker(kafka, producer, store, dedupe: bool) -> BatchProcessor:
    check = IntegrityCheck("financefeast", store=store)
    settings = dict(client_kwargs=client_kwargs(kafka)) if dedupe else None
    return BatchProcessor(Pipeline.for_provider("financefeast", checks=[check]), AiokafkaSender(producer),
                          kafka.topic_prefix, redelivery_settings=settings)


@pytest.mark.parametrize("dedupe", [True, False], ids=["with-redelivery-filter", "without"])
async def test_outputs_delivered_before_a_kill_are_not_delivered_again(kafka_settings, dedupe):
    kafka = kafka_settings
    await declare_topics(kafka)
    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all")
    await producer.start()
    dropped_before = REDELIVERED_DROPPED.labels("financefeast")._value.get()
    try:
        store = DyingStore()
        victim = worker(kafka, producer, store, dedupe)
        await victim.process(batch(kafka, range(1, 6)))      # delivered and vouched for
        store.alive = False                                  # SIGKILL after the next outputs' acks...
        await victim.process(batch(kafka, range(6, 11)))     # ...so their state never lands
        heir = worker(kafka, producer, dict(store), dedupe)  # restores the state of frames 1-5
        await heir.process(batch(kafka, range(3, 11)))       # offsets were committed up to frame 2
        await heir.process(batch(kafka, range(11, 13)))      # and the feed goes on
    finally:
        await producer.stop()

    trades = decode_avro(await read_topics(kafka, [tick_topic("trade", kafka.topic_prefix)], idle_s=2.0))
    per_frame = Counter(r["frame_seq"] for _topic, r in trades)
    dropped = REDELIVERED_DROPPED.labels("financefeast")._value.get() - dropped_before
    if dedupe:
        assert per_frame == Counter(range(1, 13)), f"each frame's trade once: {sorted(per_frame.items())}"
        assert dropped == 5
    else:
        assert per_frame == Counter(list(range(1, 13)) + list(range(6, 11)))   # what the filter removes
        assert dropped == 0
