"""Raw topics consumed in whole fetched batches, past Faust's per-event path; Faust stays the framework.

Why: an agent over ``stream.take_events`` costs Faust, per record, a ``Message`` and an
``Event``, a ``wait_first`` of four tasks in ``Consumer._drain_messages``, the conductor's
callback, a channel queue, the stream iterator, an ``add_to_buffer`` coroutine and an ack:
about 60 % of the processor's CPU (BENCHMARKS.md, figure 1).

How: Faust's consumer loop (``Consumer._drain_messages`` -> ``getmany`` ->
``_wait_next_records``) gets each fetch as a ``{TP: [record, ...]}`` map from
``Consumer._getmany``. :class:`RawBatchConsumption` wraps that one method on the app's
consumer: the records of our raw topics leave the map there, whole, into a bounded
:class:`RawRecordBuffer` per provider; everything else (the state tables' changelogs) goes
on through Faust as before. One app task per provider (:meth:`RawBatchConsumption._consume`)
takes batches of up to ``batch_max`` records from its buffer (waiting at most
``batch_within_s`` to fill one), hands them to ``BatchProcessor.process_pipelined`` as (key,
value, headers, source) tuples built straight from the aiokafka records (the next batch starts
once this one's outputs are acknowledged, while its state is being written), and acks them,
once outputs and state are acknowledged, through
Faust's ack bookkeeping once per batch (:func:`ack_records`: what ``Consumer.track_message``
before and ``Consumer.ack`` after would do for a ``Message`` per record), so Faust's offset
commits, its ``wait_empty`` at shutdown, and the rest of the app (consumer group, tables and
their recovery, timers) are unchanged.

The rules:

* Records are taken from a fetch only while the consumer's flow is active, in the consumer
  generation the fetch started in, and for partitions the consumer fetches
  (``active_partitions``); otherwise they are dropped, as Faust drops them: the rebalance
  that stopped the flow seeks every partition back to its committed offset.
* A record at an offset already buffered or taken into a batch is skipped: Faust seeks to
  the committed offsets when a rebalance ends while fetches from before the seek may still
  arrive, so the same records can come twice (Faust's own read offset, reset by the seek,
  lets them through twice). Gaps in the offsets are recorded as Faust records them
  (``Consumer._add_gap``), so commits can step over offsets Kafka never delivers; records
  fetched before such a seek but handed over after it that skip ahead are read again instead.
* A rebalance (and a shutdown) suspends ``app.flow_control`` and clears every queue it
  manages; the buffers are managed by it, so the records of revoked partitions never reach
  a batch (it clears them again when it resumes the flow: the buffers keep what came since).
  Before Faust revokes partitions (``Consumer.on_partitions_revoked``, which forgets their
  acked offsets first), no new batch starts, the batches in flight finish and their offsets
  are committed: the partitions' next owner starts right after them.
* Back-pressure: a full buffer holds the consumer loop (as a full channel queue holds
  Faust's conductor) and aiokafka stops fetching what is not taken; a buffer holds at most
  ``BUFFERED_BATCHES`` batches plus the fetch that filled it.
* A batch that fails is logged, not acked, and crashes the app: ``tickpipe process`` exits
  non-zero and its successor reprocesses from the committed offsets (at-least-once).

Faust internals relied on (faust-streaming 0.15.3): ``Consumer._getmany(active_partitions=,
timeout=)`` returning a map of aiokafka records, the ack bookkeeping :func:`ack_records`
names, ``_add_gap``,
``_commit_every``/``_n_acked``, ``maybe_wait_for_commit_to_finish``,
``Consumer.on_partitions_revoked`` and ``perform_seek`` being looked up on the instance,
``seek_wait``, ``Monitor.stream_inbound_time``
(the livelock detector's sign of a working stream) and ``FlowControlEvent.manage_queue``
calling ``clear()`` on whatever it manages.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from tickpipe.logs import get_logger
from tickpipe.processors.deadletter import Source

log = get_logger("tickpipe.processors.fastpath")

#: A provider's buffer holds this many batches (the consumer loop waits beyond).
BUFFERED_BATCHES = 4
REREADS = 3  # seeks back over one gap in a raw partition before it counts as deleted from the log


class RawRecordBuffer:
    """Fetched raw records of one provider, in fetch order, bounded; ``clear()`` on rebalance.

    Knows per partition the offset after the last record it buffered or handed out, so that
    a record fetched again (after a seek back) is not handed out twice.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._chunks: deque[tuple[Any, list]] = deque()  # (tp, records of one fetch of that tp)
        self._size = 0
        self._after_seen: dict[Any, int] = {}  # the offset after the last record buffered or handed out
        self._after_handed_out: dict[Any, int] = {}  # the offset after the last record handed out
        self._enough: asyncio.Event | None = None  # set when _size reaches _wanted
        self._wanted = 0
        self._room: asyncio.Event | None = None  # set while _size < capacity

    def __len__(self) -> int:
        return self._size

    def unseen(self, tp, records: list) -> tuple[list, list[tuple[int, int]]]:
        """``records`` past those already buffered or taken, and the offsets missing before
        them (``(first, last)`` ranges)."""
        expected = self._after_seen.get(tp)
        first, last = records[0].offset, records[-1].offset
        if (expected is None or first >= expected) and last - first == len(records) - 1:  # the usual case
            return records, [(expected, first - 1)] if expected is not None and first > expected else []
        kept, gaps = [], []
        for record in records:
            if expected is None or record.offset >= expected:
                if expected is not None and record.offset > expected:
                    gaps.append((expected, record.offset - 1))
                kept.append(record)
                expected = record.offset + 1
        return kept, gaps

    def add(self, tp, records: list) -> None:
        self._chunks.append((tp, records))
        self._size += len(records)
        self._after_seen[tp] = records[-1].offset + 1
        if self._wanted and self._size >= self._wanted and self._enough is not None:
            self._enough.set()

    def handed_out(self, pairs: list) -> None:
        """(tp, record) pairs taken are being processed: not to be handed out again, even when
        fetched again. (Pairs taken and then not processed come again after the next ``clear()``.)"""
        handed = self._after_handed_out
        for tp, record in pairs:
            handed[tp] = record.offset + 1

    def clear(self) -> None:
        """Drop everything buffered: those records come again from the committed offsets."""
        self._chunks.clear()
        self._size = 0
        self._after_seen = dict(self._after_handed_out)
        if self._room is not None:
            self._room.set()

    def forget(self, tps) -> None:
        """Partitions revoked: whatever comes from them next is new to this buffer."""
        for tp in tps:
            self._after_seen.pop(tp, None)
            self._after_handed_out.pop(tp, None)

    async def wait_for_room(self) -> None:
        while self._size >= self.capacity:
            if self._room is None:
                self._room = asyncio.Event()
            self._room.clear()
            await self._room.wait()

    async def take(self, max_records: int, within_s: float) -> list[tuple[Any, Any]]:
        """(tp, record) pairs, at most ``max_records``: waits for a first record, then at most
        ``within_s`` for the batch to fill. May return nothing (cleared meanwhile)."""
        if not self._size:
            await self._wait_for(1, None)
        if self._size < max_records:
            await self._wait_for(max_records, within_s)
        return self._pop(max_records)

    async def _wait_for(self, count: int, timeout: float | None) -> None:
        if self._enough is None:
            self._enough = asyncio.Event()
        self._enough.clear()
        self._wanted = count
        try:
            async with asyncio.timeout(timeout):
                await self._enough.wait()
        except TimeoutError:
            pass
        finally:
            self._wanted = 0

    def _pop(self, max_records: int) -> list[tuple[Any, Any]]:
        batch: list[tuple[Any, Any]] = []
        chunks = self._chunks
        while chunks and len(batch) < max_records:
            tp, records = chunks[0]
            room = max_records - len(batch)
            if len(records) <= room:
                chunks.popleft()
            else:
                chunks[0] = (tp, records[room:])
                records = records[:room]
            batch.extend([(tp, record) for record in records])
        self._size -= len(batch)
        if self._room is not None and self._size < self.capacity:
            self._room.set()
        return batch


class _Lane:
    """One provider: its raw topic, its buffer, its batch processor."""

    def __init__(self, topic: str, processor, capacity: int, flow_control) -> None:
        self.topic = topic
        self.processor = processor
        self.buffer = RawRecordBuffer(capacity)
        self._flow_control = flow_control
        flow_control.manage_queue(self)  # weakly: the lane keeps this alive

    def clear(self) -> None:
        """``app.flow_control`` clears the queues it manages when it suspends the flow (a rebalance
        or a shutdown starts: the buffered records come again from the committed offsets after
        the rebalance's seek) and again when it resumes the flow, after that seek: what was
        buffered since is from the new positions, and nothing would bring it again."""
        if not self._flow_control.is_active():
            self.buffer.clear()


class RawBatchConsumption:
    """The app's raw topics, read by its Faust consumer and processed in whole fetched batches.

    One per app (:meth:`of`); :meth:`consume` adds a provider's raw topic.
    """

    def __init__(self, app, batch_max: int, batch_within_s: float) -> None:
        self.app = app
        self.batch_max = batch_max
        self.batch_within_s = batch_within_s
        self.lanes: dict[str, _Lane] = {}
        self._taking = asyncio.Event()  # clear while partitions are being revoked: no batch starts
        self._taking.set()
        self._in_flight = 0
        self._idle = asyncio.Event()  # set while no batch is in flight
        self._idle.set()
        self._batches: set[asyncio.Task] = set()  # batches whose state write is in flight (strong refs)
        consumer = app.consumer
        self._faust_getmany = consumer._getmany
        consumer._getmany = self._getmany_keeping_raw_records
        self._faust_on_partitions_revoked = consumer.on_partitions_revoked
        consumer.on_partitions_revoked = self._on_partitions_revoked
        self._seeks = 0  # + 1 when Faust starts seeking to the committed offsets, + 1 when done
        self._rereads: dict = {}  # (tp, offset) -> seeks back over a gap starting there
        self._faust_perform_seek = consumer.perform_seek
        consumer.perform_seek = self._perform_seek_counted

    @classmethod
    def of(cls, app, batch_max: int, batch_within_s: float) -> "RawBatchConsumption":
        existing = getattr(app, "tickpipe_raw_batches", None)
        if existing is None:
            existing = app.tickpipe_raw_batches = cls(app, batch_max, batch_within_s)
        return existing

    def consume(self, topic, processor) -> None:
        """Subscribe the app to ``topic`` (a Faust topic of one raw topic) and process it with
        ``processor`` (a :class:`~tickpipe.processors.batch.BatchProcessor`)."""
        (name,) = topic.topics
        lane = _Lane(name, processor, BUFFERED_BATCHES * self.batch_max, self.app.flow_control)
        self.lanes[name] = lane
        self.app.topics.add(topic)  # the conductor subscribes to it; acks count for it
        provider = processor.pipeline.provider

        async def consume_raw_batches() -> None:
            await self._consume(lane)
        consume_raw_batches.__name__ = f"consume_raw_batches_{provider.replace('-', '_')}"
        self.app.task(consume_raw_batches)

    # -- the consumer side: runs in Faust's Fetcher task (Consumer._drain_messages) --

    async def _getmany_keeping_raw_records(self, active_partitions, timeout: float):
        app = self.app
        generation, seeks = app.consumer_generation_id, self._seeks
        records = await self._faust_getmany(active_partitions=active_partitions, timeout=timeout)
        if not records:
            return records
        for tp in [tp for tp in records if tp.topic in self.lanes]:
            fetched = records.pop(tp)
            buffer = self.lanes[tp.topic].buffer
            await buffer.wait_for_room()
            if not self._may_take(tp, generation, active_partitions):
                continue  # Faust drops them as well: a seek to the committed offset follows
            fetched, gaps = buffer.unseen(tp, fetched)
            if gaps and (seeks != self._seeks or self._read_again(tp, gaps[0][0])):
                # fetched across a seek (read before it, handed over after it), or prefetched
                # out of place: raw topics are neither compacted nor transactional, so read them
                # again from where the buffer needs
                await app.consumer.seek_wait({tp: gaps[0][0]})
                continue
            for first, last in gaps:  # the same gap after every re-read: the log's head was deleted
                log.warning("raw offsets missing from the log; committed over", partition=f"{tp.topic}/{tp.partition}",
                            first=first, last=last)
                await app.consumer._add_gap(tp, first, last)
            if fetched and self._may_take(tp, generation, active_partitions):
                buffer.add(tp, fetched)
        await self._commit_every_n_acks()
        return records

    def _read_again(self, tp, offset: int) -> bool:
        """Seek back for a gap at ``offset`` at most ``REREADS`` times before accepting it."""
        tries = self._rereads.get((tp, offset), 0)
        if len(self._rereads) > 1000:
            self._rereads.clear()
        self._rereads[(tp, offset)] = tries + 1
        return tries < REREADS

    def _may_take(self, tp, generation: int, active_partitions) -> bool:
        app = self.app
        return (app.consumer.flow_active and self._taking.is_set() and not app.should_stop
                and app.consumer_generation_id == generation
                and (active_partitions is None or tp in active_partitions))

    async def _commit_every_n_acks(self) -> None:
        """``broker_commit_every``, as ``Consumer._drain_messages`` applies it."""
        consumer = self.app.consumer
        every = consumer._commit_every
        if every is not None and consumer._n_acked >= every:
            consumer._n_acked = 0
            await consumer.commit()

    # -- rebalances --

    async def _perform_seek_counted(self) -> None:
        self._seeks += 1
        try:
            await self._faust_perform_seek()
        finally:
            self._seeks += 1

    async def _on_partitions_revoked(self, revoked) -> None:
        """Finish the batches in flight and commit their offsets, then let Faust revoke.

        ``Consumer.on_partitions_revoked`` forgets the revoked partitions' acked offsets
        first and only then (``App._on_partitions_revoked``: ``wait_empty``, commit) waits for
        what is in flight: without this, whatever was acked since the last commit (up to
        ``commit_interval`` of records, and the batch in flight) would be processed again by
        the partition's next owner, or by this worker after the rebalance.
        """
        if not self.app.should_stop:
            self._taking.clear()
            try:
                await self._idle.wait()
                consumer = self.app.consumer
                # commit() only waits when a commit is running (the periodic one): wait for that
                # first, so that this one commits what the batches just acked
                await consumer.maybe_wait_for_commit_to_finish()
                await consumer.commit()
            except Exception as exc:  # the revocation goes on; the uncommitted records come again
                log.warning("commit before revocation failed", error=f"{type(exc).__name__}: {exc}")
        try:
            await self._faust_on_partitions_revoked(revoked)
        finally:
            for lane in self.lanes.values():
                lane.buffer.forget(revoked)
            self._taking.set()  # Faust's flow control holds the loops until the new assignment is ready

    # -- the processing side: one app task per provider --

    async def _consume(self, lane: _Lane) -> None:
        app = self.app
        flow = app.flow_control
        while not app.should_stop:
            await flow.acquire()
            await self._taking.wait()
            pairs = await lane.buffer.take(self.batch_max, self.batch_within_s)
            if not pairs or not flow.is_active() or not self._taking.is_set() or app.should_stop:
                continue  # a rebalance or a shutdown started: the partitions go back to their commits
            # no await between taking and tracking: a shutdown's wait_empty must see the whole batch
            lane.buffer.handed_out(pairs)
            pending = _PendingBatch()
            consumer = app.consumer
            consumer._unacked_messages.add(pending)
            self._mark_inbound(pairs)
            self._in_flight += 1
            self._idle.clear()
            delivered = asyncio.get_running_loop().create_future()
            batch = asyncio.ensure_future(self._process_and_ack(lane, pairs, pending, delivered))
            self._batches.add(batch)
            batch.add_done_callback(self._batches.discard)
            try:
                ok = await delivered  # the next batch may start while this one's state write is in flight
            except asyncio.CancelledError:
                batch.cancel()
                raise
            if not ok:
                return  # the batch failed: the app crashes

    async def _process_and_ack(self, lane: _Lane, pairs: list, pending: "_PendingBatch", delivered) -> None:
        """Process a batch, then ack it once its outputs and its saved state are acknowledged
        (``BatchProcessor.process_pipelined``); ``delivered`` gets True once the outputs are
        (the loop takes the next batch), False if the batch failed."""
        consumer = self.app.consumer
        try:
            messages = [(r.key, r.value, r.headers, Source(r.topic, r.partition, r.offset)) for _tp, r in pairs]
            pipelined = getattr(lane.processor, "process_pipelined", None)
            if pipelined is None:  # a processor without it: everything acknowledged when process returns
                await lane.processor.process(messages)
                delivered.set_result(True)
            else:
                _count, saved = await pipelined(messages)
                delivered.set_result(True)
                await saved
            ack_records(consumer, self.app.topics, pairs, pending)
        except asyncio.CancelledError:
            consumer._unacked_messages.discard(pending)
            raise
        except Exception as exc:
            log.exception("batch failed; not acked, the processor stops", provider=lane.processor.pipeline.provider,
                          records=len(pairs), offsets=_offset_ranges(pairs))
            # not acked, and no longer waited for: the shutdown's wait_empty would wait for it forever
            consumer._unacked_messages.discard(pending)
            await self.app.crash(exc)
        finally:
            if not delivered.done():
                delivered.set_result(False)
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    def _mark_inbound(self, pairs: list) -> None:
        """Faust's livelock detector: the partitions' "stream" is working (once per partition of a batch)."""
        inbound, now = self.app.monitor.stream_inbound_time, time.monotonic()
        for tp in {tp for tp, _record in pairs}:
            inbound[tp] = now


class _PendingBatch:
    """A batch being processed, as Faust's consumer sees it: the one entry it holds in
    ``Consumer._unacked_messages`` (where Faust would track a ``Message`` per record) until the
    batch is acked. ``Consumer.wait_empty`` waits while it is there; ``_clean_unacked_messages``
    reads ``acked`` and wait_empty's warning ``refcount``."""

    __slots__ = ("acked", "refcount", "__weakref__")

    def __init__(self) -> None:
        self.acked = False
        self.refcount = 1

    def __repr__(self) -> str:
        return "<tickpipe raw batch in flight>"


def ack_records(consumer, topics, pairs: list, pending: _PendingBatch) -> int:
    """Ack a processed batch's (tp, record) pairs at once, as ``Consumer.ack`` acks each record's
    message: their offsets become committable. Returns how many offsets were newly acked.

    The per-record path (``Consumer._to_message``, ``track_message``, ``ack`` and the sensors'
    ``on_message_in``/``on_message_out`` for every record) cost ~12 % of the processor's CPU.
    This does the same bookkeeping once per partition of the batch, on these Faust internals
    (faust-streaming 0.15.3, ``faust/transport/consumer.py``, ``Consumer.ack``):

    * ``faust.types.tuples.ack_lock`` held around it (``Consumer.ack`` takes it);
    * ``app.topics.acks_enabled_for(topic)``: only acking topics are acked;
    * ``Consumer._committed_offset[tp]``: offsets below it (already committed: a record fetched
      again after a seek) are not acked again;
    * ``Consumer._acked_index[tp]`` (a set) and ``Consumer._acked[tp]`` (a list): each new offset
      joins both, which is what ``Consumer._new_offset`` commits from;
    * ``Consumer._n_acked``: + 1 per newly acked offset (``broker_commit_every``);
    * ``Consumer._unacked_messages``: the batch's one entry (``pending``) leaves it;
    * ``Consumer._waiting_for_ack``: notified (``mode.utils.futures.notify``), as ``ack`` does,
      so a ``wait_empty`` in progress looks again.

    Not kept: the sensors' per-message calls (the monitor's received/active message counts of
    the raw topics; nothing in tickpipe reads them) and the per-record ``Message`` objects.
    """
    from mode.utils.futures import notify

    by_tp: dict = {}
    for tp, record in pairs:
        offsets = by_tp.get(tp)
        if offsets is None:
            offsets = by_tp[tp] = []
        offsets.append(record.offset)
    newly = 0
    with _ack_lock():
        for tp, offsets in by_tp.items():
            if not topics.acks_enabled_for(tp.topic):
                continue
            committed = consumer._committed_offset[tp]
            index, acked = consumer._acked_index[tp], consumer._acked[tp]
            for offset in offsets:
                if (committed is None or offset >= committed) and offset not in index:
                    index.add(offset)
                    acked.append(offset)
                    newly += 1
        consumer._n_acked += newly
        pending.acked = True
        consumer._unacked_messages.discard(pending)
        notify(consumer._waiting_for_ack)
    return newly


def _ack_lock():
    try:
        from faust.types.tuples import ack_lock
    except ImportError:  # a Faust without it acks on the event loop only
        import contextlib
        return contextlib.nullcontext()
    return ack_lock


def _offset_ranges(pairs: list) -> str:
    """``partition:first-last`` of each partition in a batch of (tp, record) pairs (for logs)."""
    ranges: dict[int, list[int]] = {}
    for _tp, record in pairs:
        ranges.setdefault(record.partition, [record.offset, record.offset])[1] = record.offset
    return ",".join(f"{p}:{a}-{b}" for p, (a, b) in sorted(ranges.items()))
