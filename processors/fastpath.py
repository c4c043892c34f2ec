"""Raw topics consumed in whole fetched batches, past Faust's per-event path; Faust stays the framework.

Why: an agent over ``stream.take_events`` costs Faust, per record, a ``Message`` and an
``Event``, a ``wait_first`` of four tasks in ``Consumer._drain_messages``, the conductor's
callback, a channel queue, the stream iterator, an ``add_to_buffer`` coroutine and an ack:
about 60 % of the processor's CPU (BENCHMARKS.md, figure 1).

How: Faust's consumer loop (``Consumer._drain_messages`` -> ``getmany`` ->
``_wait_next_records``) gets each fetch as a ``{TP: [record, ...]}`` map from
``Consumer._getmany``. :class:`RawBatchConsumption` wraps that one method on the app's
consumer: the records of our raw topics leave the map there, whole, into a bounded
:class:`~tickpipe.processors.rawbuffer.RawRecordBuffer` per provider; everything else (the state tables' changelogs) goes
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
  (``active_partitions``); otherwise they are dropped and, if their partition is still
  assigned, sought back to (:meth:`RawBatchConsumption._fetch_again`). Faust's seek to the
  committed offsets at the end of a rebalance does not bring them again for a partition with
  nothing committed yet: a worker taking over such a partition lost what a fetch spanning
  the rebalance had dropped (seen under load, a takeover lost ~300 Alpaca messages).
* A record at an offset already buffered or taken into a batch is skipped: Faust seeks to
  the committed offsets when a rebalance ends while fetches from before the seek may still
  arrive, so the same records can come twice (Faust's own read offset, reset by the seek,
  lets them through twice). Gaps in the offsets are recorded as Faust records them
  (``Consumer._add_gap``), so commits can step over offsets Kafka never delivers; records
  fetched before such a seek but handed over after it that skip ahead are read again instead.
* A revocation (and a shutdown) suspends ``app.flow_control`` and clears every queue it
  manages; the buffers are managed by it, so the records of revoked partitions never reach
  a batch (its ``resume`` clears them again, with the flow already active: the buffers keep
  what came since).
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

from tickpipe.logs import get_logger
from tickpipe.processors.deadletter import Source
from tickpipe.processors.rawbuffer import RawRecordBuffer

log = get_logger("tickpipe.processors.fastpath")

#: A provider's buffer holds this many batches (the consumer loop waits beyond).
BUFFERED_BATCHES = 4
REREADS = 3  # seeks back over one gap in a raw partition before it counts as deleted from the log


class _Lane:
    """One provider: its raw topic, its buffer, its batch processor."""

    def __init__(self, topic: str, processor, capacity: int, flow_control) -> None:
        self.topic = topic
        self.processor = processor
        self.buffer = RawRecordBuffer(capacity)
        self._flow_control = flow_control
        flow_control.manage_queue(self)  # weakly: the lane keeps this alive

    def clear(self) -> None:
        """Faust clears the queues ``app.flow_control`` manages after suspending the flow (a
        revocation or a shutdown: the buffered records come again from the committed offsets
        of the next assignment), and when it resumes the flow, with the flow already active:
        what was buffered since is from the new positions, and nothing would bring it again."""
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
                await self._fetch_again(tp, fetched[0].offset)
                continue
            n = len(fetched)
            fetched, gaps = buffer.unseen(tp, fetched)
            if len(fetched) != n:
                log.info("raw records fetched again, skipped", partition=f"{tp.topic}/{tp.partition}",
                         skipped=n - len(fetched), kept_from=fetched[0].offset if fetched else None)
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
            if not fetched:
                continue
            if self._may_take(tp, generation, active_partitions):
                buffer.add(tp, fetched)
            else:
                await self._fetch_again(tp, fetched[0].offset)
        await self._commit_every_n_acks()
        return records

    async def _fetch_again(self, tp, offset: int) -> None:
        """Records of ``tp`` from ``offset`` on were fetched and not taken: make the consumer
        fetch them again if ``tp`` is still ours. aiokafka's position has moved past them, and
        the seek to the committed offsets that ends a rebalance skips a partition with nothing
        committed yet (it would stay past them: they would be lost). Only ever seeks back: the
        records may be from before a reassignment that started the partition further back.
        Offsets below the partition's committed offset are not read again."""
        consumer = self.app.consumer
        if self.app.should_stop:
            return
        offset = max(offset, consumer._committed_offset.get(tp) or 0)

        async def seek_back_in_the_consumer_thread() -> int | None:
            aiokafka_consumer = consumer._thread._ensure_consumer()
            if tp not in aiokafka_consumer.assignment():
                return None  # revoked: its next owner starts from the committed offset
            position = await aiokafka_consumer.position(tp)
            if offset >= position:
                return None
            aiokafka_consumer.seek(tp, offset)
            return position

        try:
            moved_from = await consumer._thread.call_thread(seek_back_in_the_consumer_thread)
        except Exception as exc:  # unassigned meanwhile: its next owner starts from the committed offset
            log.info("fetching dropped raw records again failed", partition=f"{tp.topic}/{tp.partition}",
                     error=f"{type(exc).__name__}: {exc}")
            return
        if moved_from is not None:
            consumer._read_offset[tp] = offset
            log.info("raw records dropped by a rebalance, fetched again", partition=f"{tp.topic}/{tp.partition}",
                     offset=offset, position_was=moved_from)

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
            log.info("raw partitions sought to their committed offsets",
                     committed={f"{tp.topic}/{tp.partition}": o for tp, o in
                                self.app.consumer._committed_offset.items() if tp.topic in self.lanes})

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
