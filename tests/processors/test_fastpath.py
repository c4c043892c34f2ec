"""``processors/fastpath.py`` without a broker: the buffer, and the batch loop around a stand-in Faust consumer.

The real consumer, rebalances and SIGTERM: ``test_fastpath_e2e.py``.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections import defaultdict, namedtuple
from types import SimpleNamespace

import pytest
from faust.types.tuples import TP, ConsumerMessage
from mode.utils.queues import FlowControlEvent

from tickpipe.processors.fastpath import BUFFERED_BATCHES, REREADS, RawBatchConsumption, _PendingBatch, ack_records
from tickpipe.processors.rawbuffer import RawRecordBuffer

Record = namedtuple("Record", "topic partition offset key value headers")
RAW = "raw.financefeast"


def records(partition: int, offsets: range, topic: str = RAW) -> list[Record]:
    return [Record(topic, partition, o, b"ff-0", b"v%d" % o, []) for o in offsets]


async def test_a_batch_is_at_most_batch_max_records_in_fetch_order():
    buffer = RawRecordBuffer(capacity=100)
    buffer.add(TP(RAW, 0), records(0, range(0, 3)))
    buffer.add(TP(RAW, 1), records(1, range(0, 4)))
    first = await buffer.take(5, within_s=1.0)
    assert [(r.partition, r.offset) for _, r in first] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]
    assert [(r.partition, r.offset) for _, r in await buffer.take(5, within_s=0.01)] == [(1, 2), (1, 3)]
    assert len(buffer) == 0


async def test_a_batch_waits_at_most_batch_within_s_to_fill():
    buffer = RawRecordBuffer(capacity=100)
    buffer.add(TP(RAW, 0), records(0, range(0, 2)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert len(await buffer.take(10, within_s=0.2)) == 2
    assert 0.15 <= loop.time() - start < 1.0

    async def fill_later():
        await asyncio.sleep(0.05)
        buffer.add(TP(RAW, 0), records(0, range(2, 12)))
    start = loop.time()
    buffer.add(TP(RAW, 0), records(0, range(12, 13)))
    filler = asyncio.ensure_future(fill_later())
    assert len(await buffer.take(10, within_s=5.0)) == 10  # full: does not wait out within_s
    assert loop.time() - start < 1.0
    await filler


async def test_records_taken_but_not_handed_out_come_again_after_a_clear_and_handed_out_ones_do_not():
    buffer, tp = RawRecordBuffer(capacity=100), TP(RAW, 0)
    buffer.add(tp, records(0, range(0, 6)))
    buffer.handed_out(await buffer.take(2, within_s=0.01))  # 0, 1: being processed
    await buffer.take(2, within_s=0.01)  # 2, 3: taken as a rebalance started, dropped
    buffer.clear()  # the rebalance: 4, 5 dropped too; Faust seeks back to the committed offset
    kept, gaps = buffer.unseen(tp, records(0, range(0, 6)))
    assert [r.offset for r in kept] == [2, 3, 4, 5] and gaps == []


async def test_a_full_buffer_holds_the_consumer_until_a_batch_is_taken_or_it_is_cleared():
    buffer = RawRecordBuffer(capacity=10)
    buffer.add(TP(RAW, 0), records(0, range(0, 10)))
    waiting = asyncio.ensure_future(buffer.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await buffer.take(3, within_s=0.01)
    await asyncio.wait_for(waiting, 1.0)

    buffer.add(TP(RAW, 0), records(0, range(10, 13)))
    waiting = asyncio.ensure_future(buffer.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done()
    buffer.clear()  # a rebalance: Faust's flow control clears the queues it manages
    await asyncio.wait_for(waiting, 1.0)
    assert len(buffer) == 0


class StandInConsumer:
    """What the fast path uses of Faust's consumer (its ack bookkeeping: ``processors.fastpath.ack_records``),
    recording acks in the order they are made."""

    def __init__(self, fetches: list[dict]) -> None:
        self.fetches = fetches
        self.flow_active = True
        self._read_offset = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.gaps: list = []
        self.sought: list = []
        self.acked: list[tuple[int, int]] = []  # (partition, offset), in the order acked
        self._unacked_messages = weakref.WeakSet()
        self._committed_offset = defaultdict(lambda: None)
        self._acked_index = defaultdict(set)
        self._acked = AckedOffsets(self.acked)
        self._waiting_for_ack = None
        self._thread = StandInConsumerThread(assigned=())

    @property
    def tracked(self):
        return self._unacked_messages

    async def _getmany(self, active_partitions, timeout):
        return self.fetches.pop(0) if self.fetches else {}

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def _add_gap(self, tp, offset_from: int, offset_to: int) -> None:
        self.gaps.append((tp.partition, offset_from, offset_to))

    async def perform_seek(self) -> None:
        pass

    async def seek_wait(self, partitions) -> None:
        self.sought.append(dict(partitions))


class StandInConsumerThread:
    """Faust's consumer thread and its aiokafka consumer: the partitions assigned, their positions
    (what was fetched last + 1), and the seeks made in it, as (partition, offset)."""

    def __init__(self, assigned) -> None:
        self.assigned = set(assigned)
        self.positions: dict = {}
        self.seeks: list[tuple[int, int]] = []

    async def call_thread(self, fun, *args):
        return await fun(*args)

    def _ensure_consumer(self):
        return self

    def assignment(self):
        return set(self.assigned)

    async def position(self, tp) -> int:
        return self.positions[tp]

    def seek(self, tp, offset: int) -> None:
        self.seeks.append((tp.partition, offset))
        self.positions[tp] = offset


class AckedOffsets(dict):
    """``Consumer._acked``: tp -> the offsets acked, each also logged as (partition, offset)."""

    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log

    def __missing__(self, tp):
        log = self.log

        class Logged(list):
            def append(self, offset) -> None:
                super().append(offset)
                log.append((tp.partition, offset))
        out = self[tp] = Logged()
        return out


class StandInApp:
    def __init__(self, consumer: StandInConsumer) -> None:
        self.consumer = consumer
        self.flow_control = FlowControlEvent(initially_suspended=False)
        self.topics = SimpleNamespace(add=lambda topic: None, acks_enabled_for=lambda topic: True)
        self.monitor = SimpleNamespace(stream_inbound_time={})
        self.tasks: list = []
        self.should_stop = False
        self.consumer_generation_id = 1
        self.crashed_with = None

    def task(self, fun):
        self.tasks.append(fun)
        return fun

    async def crash(self, exc) -> None:
        self.crashed_with = exc


class RecordingProcessor:
    def __init__(self, app: StandInApp, fail: bool = False) -> None:
        self.app = app
        self.fail = fail
        self.pipeline = SimpleNamespace(provider="financefeast")
        self.batches: list[list] = []

    async def process(self, messages) -> int:
        self.batches.append([(source.partition, source.offset) for _k, _v, _h, source in messages])
        assert len(self.app.consumer.acked) == sum(len(b) for b in self.batches[:-1])  # none of this batch yet
        assert len(self.app.consumer.tracked) >= 1  # the batch is pending: wait_empty waits for it
        await asyncio.sleep(0)
        if self.fail:
            raise ValueError("a bug")
        return len(messages)


def fast_path(fetches: list[dict], fail: bool = False, batch_max: int = 4):
    consumer = StandInConsumer(fetches)
    app = StandInApp(consumer)
    raw = RawBatchConsumption.of(app, batch_max=batch_max, batch_within_s=0.01)
    processor = RecordingProcessor(app, fail)
    raw.consume(SimpleNamespace(topics=[RAW]), processor)
    return app, raw, processor


async def fetch_all(app, active) -> list[dict]:
    """Run the consumer side over every stand-in fetch; what Faust's own path would still get."""
    rest = []
    while app.consumer.fetches:
        rest.append(await app.consumer._getmany(active_partitions=active, timeout=1.0))
    return rest


async def test_raw_records_leave_the_fetch_whole_and_are_acked_in_batches_after_processing():
    changelog = TP("app-integrity-financefeast-changelog", 0)
    p0, p1 = TP(RAW, 0), TP(RAW, 1)
    app, raw, processor = fast_path([{p0: records(0, range(0, 6)), changelog: ["state"]},
                                     {p1: records(1, range(0, 2)), p0: records(0, range(6, 8))}])
    rest = await fetch_all(app, {p0, p1, changelog})
    assert rest == [{changelog: ["state"]}, {}]  # the changelog goes on through Faust
    loop = asyncio.ensure_future(app.tasks[0]())
    while len(app.consumer.acked) < 10:
        await asyncio.sleep(0.01)
    app.should_stop = True
    loop.cancel()
    assert [len(batch) for batch in processor.batches] == [4, 4, 2]
    assert app.consumer.acked == [offset for batch in processor.batches for offset in batch]
    assert sorted(app.consumer.acked) == sorted([(0, o) for o in range(8)] + [(1, 0), (1, 1)])
    assert not app.consumer.tracked


async def test_records_are_not_taken_while_the_flow_is_stopped_or_from_another_generation_or_partition():
    p0, p1 = TP(RAW, 0), TP(RAW, 1)
    app, raw, _ = fast_path([{p0: records(0, range(0, 2))}, {p0: records(0, range(2, 4))},
                             {p1: records(1, range(0, 2))}])
    app.consumer.flow_active = False  # a rebalance started: Faust seeks back to the committed offsets
    await app.consumer._getmany(active_partitions={p0, p1}, timeout=1.0)
    app.consumer.flow_active = True
    original = raw._faust_getmany

    async def fetch_across_a_rebalance(active_partitions, timeout):
        app.consumer_generation_id += 1
        return await original(active_partitions=active_partitions, timeout=timeout)
    raw._faust_getmany = fetch_across_a_rebalance
    await app.consumer._getmany(active_partitions={p0, p1}, timeout=1.0)
    raw._faust_getmany = original
    await app.consumer._getmany(active_partitions={p0}, timeout=1.0)  # p1 paused
    assert len(raw.lanes[RAW].buffer) == 0


async def test_records_fetched_and_not_taken_are_fetched_again_while_their_partition_is_assigned():
    """The seek to the committed offsets that ends a rebalance skips a partition with nothing
    committed: records dropped from a fetch of it must be sought back to, or they are lost."""
    p0, p1, p2 = TP(RAW, 0), TP(RAW, 1), TP(RAW, 2)
    app, raw, _ = fast_path([{p0: records(0, range(0, 5)), p1: records(1, range(3, 6)), p2: records(2, range(0, 4))},
                             {p0: records(0, range(0, 5))}])
    thread = app.consumer._thread = StandInConsumerThread(assigned={p0, p1})
    thread.positions = {p0: 5, p1: 2}  # p1: reassigned meanwhile, started further back
    app.consumer.flow_active = False  # the fetch ends inside a rebalance
    await app.consumer._getmany(active_partitions={p0, p1, p2}, timeout=1.0)
    # p0 back to 0; p1 not forward past 2; p2 (no longer ours) left to its next owner
    assert thread.seeks == [(0, 0)] and app.consumer._read_offset[p0] == 0
    app.consumer.flow_active = True
    await app.consumer._getmany(active_partitions={p0, p1}, timeout=1.0)
    assert [r.offset for _, r in await raw.lanes[RAW].buffer.take(100, 0.01)] == [0, 1, 2, 3, 4]


async def test_records_fetched_again_after_a_seek_back_are_handed_out_once_and_a_gap_is_read_again():
    p0 = TP(RAW, 0)
    app, raw, _ = fast_path([{p0: records(0, range(0, 3))}, {p0: records(0, range(0, 5))},
                             {p0: records(0, range(7, 9))}, {p0: records(0, range(5, 9))}])
    buffer = raw.lanes[RAW].buffer
    await app.consumer._getmany(active_partitions={p0}, timeout=1.0)
    batch = await buffer.take(2, 0.01)
    buffer.handed_out(batch)
    assert [r.offset for _, r in batch] == [0, 1]  # a batch: 0 and 1
    app.flow_control.suspend()  # a rebalance starts: the buffer is cleared (2 with it) ...
    app.flow_control.clear()
    app.flow_control.resume()
    await fetch_all(app, {p0})  # ... Faust's seek to the committed offset 0 brings 0.. again; 7 and 8
    # arrive out of place (prefetched): not a gap to commit over, read again from 5
    assert [r.offset for _, r in await buffer.take(100, 0.01)] == [2, 3, 4, 5, 6, 7, 8]
    assert app.consumer.sought == [{p0: 5}] and app.consumer.gaps == []


async def test_a_gap_that_stays_after_every_re_read_is_committed_over():
    p0 = TP(RAW, 0)
    fetches = [{p0: records(0, range(0, 2))}] + [{p0: records(0, range(7, 9))} for _ in range(REREADS + 1)]
    app, raw, _ = fast_path(fetches)
    await fetch_all(app, {p0})
    assert [r.offset for _, r in await raw.lanes[RAW].buffer.take(100, 0.01)] == [0, 1, 7, 8]
    assert app.consumer.sought == [{p0: 2}] * REREADS and app.consumer.gaps == [(0, 2, 6)]


async def test_what_was_buffered_since_the_seek_is_kept_when_the_flow_resumes():
    p0 = TP(RAW, 0)
    app, raw, _ = fast_path([{p0: records(0, range(0, 3))}])
    app.flow_control.suspend()
    app.flow_control.clear()
    await app.consumer._getmany(active_partitions={p0}, timeout=1.0)  # after the seek, before the resume
    app.flow_control.resume()  # clears the queues it manages once more
    assert len(raw.lanes[RAW].buffer) == 3


async def test_records_from_before_a_seek_that_skip_ahead_are_read_again():
    p0 = TP(RAW, 0)
    app, raw, _ = fast_path([{p0: records(0, range(0, 4))}])
    buffer = raw.lanes[RAW].buffer
    await app.consumer._getmany(active_partitions={p0}, timeout=1.0)
    buffer.handed_out(await buffer.take(2, 0.01))  # 0 and 1 taken; 2 and 3 buffered
    original = raw._faust_getmany

    async def fetch_handed_over_after_a_seek(active_partitions, timeout):
        app.flow_control.suspend()  # a rebalance: 2 and 3 dropped ...
        app.flow_control.clear()
        await app.consumer.perform_seek()  # ... Faust seeks back to 2, the flow resumes
        app.flow_control.resume()
        return {p0: records(0, range(4, 6))}  # read before the seek
    raw._faust_getmany = fetch_handed_over_after_a_seek
    await app.consumer._getmany(active_partitions={p0}, timeout=1.0)
    assert len(buffer) == 0 and app.consumer.sought == [{p0: 2}] and app.consumer.gaps == []
    raw._faust_getmany = original
    app.consumer.fetches = [{p0: records(0, range(2, 6))}]
    await app.consumer._getmany(active_partitions={p0}, timeout=1.0)
    assert [r.offset for _, r in await buffer.take(100, 0.01)] == [2, 3, 4, 5]


async def test_a_batch_that_fails_is_not_acked_crashes_the_app_and_is_no_longer_tracked():
    p0 = TP(RAW, 0)
    app, raw, processor = fast_path([{p0: records(0, range(0, 3))}], fail=True)
    await fetch_all(app, {p0})
    await asyncio.wait_for(app.tasks[0](), 2.0)  # returns: the loop ends with the crash
    assert isinstance(app.crashed_with, ValueError)
    assert processor.batches == [[(0, 0), (0, 1), (0, 2)]]
    assert app.consumer.acked == []
    gc.collect()
    assert not app.consumer.tracked  # the shutdown's wait_empty does not wait for it forever


async def test_revocation_waits_for_the_batch_in_flight_and_commits_before_faust_forgets_the_acks():
    p0 = TP(RAW, 0)
    app, raw, processor = fast_path([{p0: records(0, range(0, 4))}])
    release = asyncio.Event()
    events: list[str] = []
    process = processor.process

    async def slow_process(messages):
        events.append("batch started")
        await release.wait()
        return await process(messages)
    processor.process = slow_process

    async def commit():
        events.append(f"commit after {len(app.consumer.acked)} acks")

    async def no_commit_running():
        return False

    async def faust_revokes(revoked):
        events.append("faust revokes")
    app.consumer.commit, app.consumer.maybe_wait_for_commit_to_finish = commit, no_commit_running
    raw._faust_on_partitions_revoked = faust_revokes
    await fetch_all(app, {p0})
    loop = asyncio.ensure_future(app.tasks[0]())
    while not events:
        await asyncio.sleep(0.01)
    revoking = asyncio.ensure_future(app.consumer.on_partitions_revoked({p0}))
    await asyncio.sleep(0.05)
    assert events == ["batch started"]  # the revocation waits for the batch
    release.set()
    await asyncio.wait_for(revoking, 1.0)
    assert events == ["batch started", "commit after 4 acks", "faust revokes"]
    app.should_stop = True
    loop.cancel()


@pytest.mark.parametrize("batch_max", [1, 1000])
def test_a_buffer_holds_a_few_batches(batch_max):
    _app, raw, _ = fast_path([], batch_max=batch_max)
    assert raw.lanes[RAW].buffer.capacity == BUFFERED_BATCHES * batch_max


def test_acking_a_batch_keeps_faust_s_books_as_acking_a_message_per_record_does():
    """``ack_records`` against Faust's own ``track_message``/``ack`` on a real (unstarted) consumer:
    the same committable offsets, ack count and pending messages, also for offsets already committed
    or acked before."""
    import faust

    def consumer_of_a_new_app():
        app = faust.App(f"t-ack-{id(object())}", broker="kafka://127.0.0.1:1", autodiscover=False, web_enabled=False)
        app.topics._acking_topics.add(RAW)   # as the conductor's subscription does for our raw topic
        consumer = app.consumer
        consumer._committed_offset[TP(RAW, 1)] = 3   # offsets 0..2 of partition 1 already committed
        return app, consumer

    pairs = [(TP(RAW, p), r) for p in (0, 1) for r in records(p, range(0, 6))]
    pairs += [(TP(RAW, 0), r) for r in records(0, range(4, 8))]   # 4, 5 acked twice: counted once
    faust_app, faust_consumer = consumer_of_a_new_app()
    messages = [ConsumerMessage(r.topic, r.partition, r.offset, 0.0, 0, r.headers, r.key, r.value, None, tp=tp)
                for tp, r in pairs]
    for message in messages:
        faust_consumer.track_message(message)
    for message in messages:
        faust_consumer.ack(message)
    ours_app, ours = consumer_of_a_new_app()
    pending = _PendingBatch()
    ours._unacked_messages.add(pending)
    assert ack_records(ours, ours_app.topics, pairs, pending) == faust_consumer._n_acked == 11
    assert ours._n_acked == faust_consumer._n_acked
    assert {tp: sorted(o) for tp, o in ours._acked.items()} == {tp: sorted(o) for tp, o in faust_consumer._acked.items()}
    assert dict(ours._acked_index) == dict(faust_consumer._acked_index)
    for tp in (TP(RAW, 0), TP(RAW, 1)):
        assert ours._new_offset(tp) == faust_consumer._new_offset(tp)   # what a commit would commit
    faust_consumer._clean_unacked_messages()
    assert not ours._unacked_messages and pending.acked


class PipelinedProcessor(RecordingProcessor):
    """``process_pipelined``: each batch's state write is held until the test releases it."""

    def __init__(self, app: StandInApp) -> None:
        super().__init__(app)
        self.saves: list[asyncio.Future] = []

    async def process_pipelined(self, messages):
        self.batches.append([(source.partition, source.offset) for _k, _v, _h, source in messages])
        saved = asyncio.get_running_loop().create_future()
        self.saves.append(saved)
        return len(messages), saved


async def test_the_next_batch_starts_while_a_batch_s_state_is_written_and_acks_wait_for_it():
    p0 = TP(RAW, 0)
    consumer = StandInConsumer([{p0: records(0, range(0, 4))}])
    app = StandInApp(consumer)
    raw = RawBatchConsumption.of(app, batch_max=2, batch_within_s=0.01)
    processor = PipelinedProcessor(app)
    raw.consume(SimpleNamespace(topics=[RAW]), processor)
    await fetch_all(app, {p0})
    loop = asyncio.ensure_future(app.tasks[0]())
    while len(processor.saves) < 2:
        await asyncio.sleep(0.001)
    assert processor.batches == [[(0, 0), (0, 1)], [(0, 2), (0, 3)]]  # the second before the first is saved
    assert consumer.acked == [] and len(consumer.tracked) == 2 and not raw._idle.is_set()
    processor.saves[0].set_result(None)
    while len(consumer.acked) < 2:
        await asyncio.sleep(0.001)
    assert consumer.acked == [(0, 0), (0, 1)]
    processor.saves[1].set_result(None)
    while len(consumer.acked) < 4:
        await asyncio.sleep(0.001)
    assert not consumer.tracked and raw._idle.is_set()
    app.should_stop = True
    loop.cancel()
    await asyncio.gather(loop, return_exceptions=True)
