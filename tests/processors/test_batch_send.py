"""Outputs sent as one aiokafka record batch per (topic, partition): placement, retries, marks."""

from __future__ import annotations

import asyncio
from collections import namedtuple

from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder

from tickpipe.processors.batch import BatchProcessor, batch_producer
from tickpipe.processors.metrics import PRODUCE_ERRORS
from tickpipe.processors.pipeline import Output, Pipeline
from tickpipe.processors.redelivery import Redelivery

Meta = namedtuple("Meta", "topic partition offset")
TOPIC, OTHER = "ticks.trade", "alerts.gaps"
PARTITIONS = {TOPIC: 8, OTHER: 1}


class FakeBatchProducer:
    """aiokafka's batch API over an in-memory log per partition; ``refuse`` fails the next batch of a partition."""

    def __init__(self, batch_size: int = 16384) -> None:
        self.max_batch_size = batch_size  # as Faust's producer names it
        self.log: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
        self.sent: list[tuple[str, int, int]] = []   # (topic, partition, records) of each batch or single send
        self.refuse: set[tuple[str, int]] = set()
        self.single_sends = 0

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(PARTITIONS[topic]))

    def create_batch(self) -> BatchBuilder:
        return BatchBuilder(self.max_batch_size, 0)

    def _resolve(self, topic: str, partition: int, records: list) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()
        self.sent.append((topic, partition, len(records)))
        if (topic, partition) in self.refuse:
            self.refuse.discard((topic, partition))
            fut.set_exception(RuntimeError("NotEnoughReplicas"))
            return fut
        log = self.log.setdefault((topic, partition), [])
        base = len(log)
        log.extend(records)
        fut.set_result(Meta(topic, partition, base))
        return fut

    async def send_batch(self, batch: BatchBuilder, topic: str, *, partition: int) -> asyncio.Future:
        from aiokafka.record.default_records import DefaultRecordBatch

        buffer = bytes(batch._build())
        records = [(r.key, r.value) for r in DefaultRecordBatch(buffer)]
        return self._resolve(topic, partition, records)

    async def send(self, topic, value=None, key=None, partition=None, timestamp_ms=None, headers=None):
        self.single_sends += 1
        assert partition is not None
        return self._resolve(topic, partition, [(key, value)])

    async def flush(self) -> None:
        pass


def out(key: bytes, value: bytes, kind: str = "trade") -> Output:
    return Output(kind, key, value, {"recv_time": 0}, [("h", b"1")])


def processor(producer, marks: bool = True) -> BatchProcessor:
    proc = BatchProcessor(Pipeline("financefeast", lambda frame: []), producer)
    if marks:
        proc.redelivery = Redelivery("financefeast", {}, [TOPIC, OTHER])
        proc.redelivery.marks = {TOPIC: [0] * 8, OTHER: [0]}
    return proc


def expected_partition(key: bytes, topic: str = TOPIC) -> int:
    every = list(range(PARTITIONS[topic]))
    return DefaultPartitioner()(key, every, every)


async def test_outputs_land_where_aiokafka_s_default_partitioner_puts_their_key_in_order():
    producer = FakeBatchProducer()
    proc = processor(producer)
    symbols = [f"SYM{i}".encode() for i in range(40)]
    outputs = [(TOPIC, out(symbols[i % 40], b"v%d" % i)) for i in range(400)] + [(OTHER, out(b"financefeast", b"a"))]
    assert await proc._deliver(outputs) == []
    for (topic, partition), records in producer.log.items():
        for key, _value in records:
            assert partition == expected_partition(key, topic)
    for symbol in symbols:  # each key's records in the order produced
        part = expected_partition(symbol)
        got = [v for k, v in producer.log[(TOPIC, part)] if k == symbol]
        assert got == [o.value for t, o in outputs if t == TOPIC and o.key == symbol]
    # one batch per partition, not one send per output
    assert producer.single_sends == 0
    assert len(producer.sent) == len(producer.log)


async def test_a_refused_group_is_retried_alone_and_nothing_twice():
    producer = FakeBatchProducer()
    proc = processor(producer)
    proc_errors = PRODUCE_ERRORS.labels(TOPIC)
    before = proc_errors._value.get()
    a, b = b"AAA", next(k for k in (b"K%d" % i for i in range(100)) if expected_partition(k) != expected_partition(b"AAA"))
    outputs = [(TOPIC, out(a, b"a1")), (TOPIC, out(b, b"b1")), (TOPIC, out(a, b"a2")), (TOPIC, out(b, b"b2"))]
    producer.refuse.add((TOPIC, expected_partition(a)))
    failed = await proc._deliver(outputs)
    assert [o.value for _t, o in failed] == [b"a1", b"a2"]      # only the refused group, in order
    assert proc_errors._value.get() - before == 2
    producer.sent.clear()
    await proc._deliver_all(failed)
    assert producer.sent == [(TOPIC, expected_partition(a), 2)]  # the refused group alone
    assert [v for _k, v in producer.log[(TOPIC, expected_partition(a))]] == [b"a1", b"a2"]
    assert [v for _k, v in producer.log[(TOPIC, expected_partition(b))]] == [b"b1", b"b2"]


async def test_marks_advance_past_the_last_record_of_each_group():
    producer = FakeBatchProducer(batch_size=1024)   # several batches per partition
    proc = processor(producer)
    key = b"ONE"
    part = expected_partition(key)
    producer.log[(TOPIC, part)] = [(b"x", b"y")] * 5   # the partition already holds 5 records
    outputs = [(TOPIC, out(key, b"%050d" % i)) for i in range(60)]
    assert await proc._deliver(outputs) == []
    assert len([s for s in producer.sent if s[1] == part]) > 1
    assert proc.redelivery.marks[TOPIC][part] == 5 + 60     # one past the last record written
    assert all(m == 0 for p, m in enumerate(proc.redelivery.marks[TOPIC]) if p != part)


async def test_records_over_half_a_batch_go_alone_in_their_partition_s_order():
    producer = FakeBatchProducer(batch_size=1024)
    proc = processor(producer)
    key = b"BIG"
    outputs = [(TOPIC, out(key, b"small1")), (TOPIC, out(key, b"x" * 4000)), (TOPIC, out(key, b"small2"))]
    assert await proc._deliver(outputs) == []
    part = expected_partition(key)
    assert [v[:6] for _k, v in producer.log[(TOPIC, part)]] == [b"small1", b"xxxxxx", b"small2"]
    assert producer.single_sends == 1
    assert proc.redelivery.marks[TOPIC][part] == 3


async def test_the_partition_map_starts_again_when_a_topic_gains_partitions():
    producer = FakeBatchProducer()
    proc = processor(producer, marks=False)
    key = next(k for k in (b"S%d" % i for i in range(200))
               if DefaultPartitioner()(k, list(range(8)), list(range(8))) != DefaultPartitioner()(k, list(range(12)), list(range(12))))
    await proc._deliver([(TOPIC, out(key, b"1"))])
    PARTITIONS[TOPIC] = 12
    try:
        await proc._deliver([(TOPIC, out(key, b"2"))])
    finally:
        PARTITIONS[TOPIC] = 8
    every = list(range(12))
    assert producer.log[(TOPIC, DefaultPartitioner()(key, every, every))] == [(key, b"2")]


def test_producers_without_a_batch_api_send_one_by_one():
    from tickpipe.processors.batch import AiokafkaSender

    class Doubles:
        async def send(self, *args): ...
        async def flush(self): ...

    assert batch_producer(AiokafkaSender(object())) is None
    assert batch_producer(Doubles()) is None
    fake = FakeBatchProducer()
    assert batch_producer(fake) is fake


def test_faust_s_producer_offers_the_aiokafka_producer_under_it():
    import faust

    app = faust.App("t-batch-producer", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False)
    producer = app.producer
    assert batch_producer(producer) is None          # not started: no aiokafka producer yet
    producer._producer = FakeBatchProducer()
    assert batch_producer(producer) is producer._producer
