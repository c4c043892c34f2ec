"""The integrity state of a batch is on its way to the changelog before the next batch starts.

Faust buffers a table's changelog writes in its producer (``send_soon``) until something flushes
it. The worker-takeover test (``test_worker_failover``) lost the state of the last batch now and
then: the victim was SIGKILLed after its outputs were acknowledged but while the state that
vouches for them still sat in that buffer, so its successor did not recognise the redelivered
frames and the clean topics got them twice. Here the same buffering, step by step.
"""

from __future__ import annotations

from tickpipe.envelope import RawRecord
from tickpipe.processors.batch import BatchProcessor
from tickpipe.processors.deadletter import Source
from tickpipe.processors.integrity.check import IntegrityCheck
from tickpipe.processors.pipeline import Pipeline

PRICE = b'{"type":"price","data":{"date":"2021-09-29T09:35:5%d","price":3.04,"volume":1,"symbol":"NZB.NZ"}}'


class BufferingProducer:
    """Faust's producer as the batch processor sees it: ``send`` delivers outputs when flushed;
    changelog writes (``buffer_soon``) wait in a buffer that only ``flush`` empties."""

    def __init__(self) -> None:
        self.buffer: list = []
        self.durable: list = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        import asyncio

        fut = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def buffer_soon(self, item) -> None:
        self.buffer.append(item)

    async def flush(self) -> None:
        self.durable += self.buffer
        self.buffer.clear()


class ChangelogTable(dict):
    """A table whose every write is a changelog record sent 'soon'."""

    def __init__(self, producer: BufferingProducer) -> None:
        super().__init__()
        self.producer = producer

    def __setitem__(self, key, value) -> None:
        super().__setitem__(key, value)
        self.producer.buffer_soon((key, value))


async def test_the_state_of_a_batch_is_flushed_before_the_batch_is_done():
    producer = BufferingProducer()
    check = IntegrityCheck("financefeast", store=ChangelogTable(producer))
    processor = BatchProcessor(Pipeline.for_provider("financefeast", checks=[check]), producer)
    batch = []
    for seq in (1, 2, 3):
        raw = RawRecord("financefeast", "ff-0", "s1", seq, 1_700_000_000_000_000_000 + seq, PRICE % seq)
        batch.append((raw.key, raw.payload, raw.headers(), Source("raw.financefeast", 0, seq)))
    assert await processor.process(batch) == 3
    assert producer.buffer == [] and [k for k, _ in producer.durable] == [b"ff-0"]


class SlowBroker(BufferingProducer):
    """Acknowledges nothing until ``release`` is set."""

    def __init__(self) -> None:
        import asyncio

        super().__init__()
        self.release = asyncio.Event()
        self.pending: list = []

    async def send(self, topic, key, value, partition, timestamp, headers):
        import asyncio

        fut = asyncio.get_running_loop().create_future()
        self.pending.append(fut)
        return fut

    async def flush(self) -> None:
        await self.release.wait()
        for fut in self.pending:
            if not fut.done():
                fut.set_result(None)
        await super().flush()


async def test_a_tick_does_not_save_the_state_of_a_batch_still_being_delivered():
    """A tick (a Faust timer, concurrent with the agent) saved the state of every connection the
    batch in flight had touched: killed then, the worker's successor took those frames for
    duplicates although their records never reached Kafka (the takeover test lost 2 to 33)."""
    import asyncio

    producer = SlowBroker()
    table = ChangelogTable(producer)
    check = IntegrityCheck("financefeast", store=table)
    processor = BatchProcessor(Pipeline.for_provider("financefeast", checks=[check]), producer)
    raw = RawRecord("financefeast", "ff-0", "s1", 1, 1_700_000_000_000_000_001, PRICE % 1)
    batch = asyncio.ensure_future(processor.process([(raw.key, raw.payload, raw.headers(), Source("raw.financefeast", 0, 1))]))
    await asyncio.sleep(0.05)                                   # the batch waits for its acknowledgements
    tick = asyncio.ensure_future(processor.tick())
    await asyncio.sleep(0.2)
    assert b"ff-0" not in table, "state saved for a frame whose records are not acknowledged"
    producer.release.set()
    await asyncio.wait_for(asyncio.gather(batch, tick), 5)
    assert b"ff-0" in table and producer.buffer == []
