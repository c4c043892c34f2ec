"""A batch's state write overlaps the next batch; acks still wait for it (``BatchProcessor.process_pipelined``)."""

from __future__ import annotations

import asyncio

from tickpipe.processors.batch import BatchProcessor
from tickpipe.processors.pipeline import Pipeline

from tests.processors.test_batch_send import FakeBatchProducer


class HeldFlushProducer(FakeBatchProducer):
    """Every ``flush`` (the state write) waits until the test releases it."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[asyncio.Future] = []

    async def flush(self) -> None:
        held = asyncio.get_running_loop().create_future()
        self.flushes.append(held)
        await held


class CommitLog:
    """A check that records when the state is committed."""

    def __init__(self, events: list) -> None:
        self.events = events

    def check(self, result) -> None:
        pass

    def commit(self) -> None:
        self.events.append("commit")


def processor(producer, events: list) -> BatchProcessor:
    return BatchProcessor(Pipeline("financefeast", lambda frame: [], checks=[CommitLog(events)]), producer)


async def test_process_pipelined_returns_with_the_state_committed_and_its_write_in_flight():
    producer, events = HeldFlushProducer(), []
    proc = processor(producer, events)
    count, saved = await proc.process_pipelined([])
    assert count == 0 and events == ["commit"]
    await asyncio.sleep(0.01)
    assert not saved.done() and len(producer.flushes) == 1
    producer.flushes[0].set_result(None)
    await asyncio.wait_for(saved, 1.0)


async def test_the_next_batch_runs_while_the_state_is_written_and_saves_complete_in_batch_order():
    producer, events = HeldFlushProducer(), []
    proc = processor(producer, events)
    _, first = await proc.process_pipelined([])
    _, second = await asyncio.wait_for(proc.process_pipelined([]), 1.0)  # not held by the first's write
    assert events == ["commit", "commit"]
    await asyncio.sleep(0.01)
    assert len(producer.flushes) == 1  # the second write is awaited only after the first
    producer.flushes[0].set_result(None)
    await asyncio.wait_for(first, 1.0)
    while len(producer.flushes) < 2:
        await asyncio.sleep(0.001)
    assert not second.done()
    producer.flushes[1].set_result(None)
    await asyncio.wait_for(second, 1.0)


async def test_process_returns_only_once_the_state_write_is_acknowledged():
    producer, events = HeldFlushProducer(), []
    proc = processor(producer, events)
    task = asyncio.ensure_future(proc.process([]))
    while not producer.flushes:
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.01)
    assert not task.done()
    producer.flushes[0].set_result(None)
    assert await asyncio.wait_for(task, 1.0) == 0
