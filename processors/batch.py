"""The hot path: a batch of consumed raw records -> produced outputs, acknowledged only when delivered.

At-least-once: :meth:`BatchProcessor.process` returns after every output of the batch is
acknowledged by the broker (acks=all), and the Faust agent acks (commits) the batch's
source offsets only after that. A crash in between replays the batch: consumers of the
clean topics must tolerate duplicates (the integrity stage reports them).

Per batch, with Faust's aiokafka producer: the outputs are grouped per (topic, partition)
into aiokafka record batches (``create_batch``/``send_batch`` on the aiokafka producer under
Faust's, :func:`batch_producer`): one future per group, not per output. The partition is the
one aiokafka's default partitioner gives the key (``tickpipe.kafka.partition_for``, cached per
key: keys are instruments and repeat), exactly where ``send(key=...)`` would put the record.
Outputs over half the batch size, or without a key, go alone through ``send`` (after the
open group of their partition, so a partition keeps its order). Every group's
acknowledgement is awaited; the groups the broker refused are sent again after a pause,
until it takes them. With any other producer (``AiokafkaSender``, test doubles): one
``send`` per output, one ``flush``, then the delivery futures.

The state (:meth:`BatchProcessor.process_pipelined`, what the fast path calls): once a batch's
outputs are acknowledged, its state is committed to the tables in the same turn (so commits
keep batch order), but the acknowledgement of that changelog write is awaited outside it:
the next batch is normalized and sent meanwhile, one broker round trip less between two
batches. The caller acks the batch's offsets only when that write is acknowledged too; the
writes are awaited in batch order. A write the broker never took (``processors/statewrites.py``)
fails that batch's ``saved`` and every later one's with ``StateNotSaved``: nothing more is acked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any, Iterable, Protocol

from tickpipe.histograms import observe_latencies
from tickpipe.kafka import partition_for
from tickpipe.logs import get_logger
from tickpipe.processors.deadletter import Source
from tickpipe.processors.metrics import BATCH_SIZE, END_TO_END, PRODUCE_ERRORS
from tickpipe.processors.pipeline import Pipeline
from tickpipe.processors.records import ALERT_KIND, CONTROL_KIND, DEAD_LETTER_KIND, TICK_KINDS
from tickpipe.processors.redelivery import Redelivery
from tickpipe.processors.statewrites import StateNotSaved, StateWrites
from tickpipe.topics import alerts_topic, control_topic, dlq_topic, tick_topic

log = get_logger("tickpipe.processors.batch")
DEFAULT_BATCH_BYTES = 16384  # aiokafka's and Faust's default max_batch_size


class Producer(Protocol):
    """What the batch processor needs from a producer (Faust's, or a bare aiokafka one)."""

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: Any) -> Any: ...

    async def flush(self) -> None: ...


class AiokafkaSender:
    """A started ``AIOKafkaProducer`` as a :class:`Producer` (outside Faust: tools, benchmarks)."""

    def __init__(self, producer) -> None:
        self._producer = producer

    async def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None,
                   timestamp: float | None, headers: Any) -> Any:
        return await self._producer.send(topic, value, key=key, partition=partition, headers=headers)

    async def flush(self) -> None:
        await self._producer.flush()


class BatchProcessor:
    """Runs one provider's :class:`Pipeline` over batches and produces the outputs."""

    def __init__(self, pipeline: Pipeline, producer: Producer, topic_prefix: str = "",
                 redelivery_settings: dict | None = None, kill_after_batches: int = 0,
                 state_writes: StateWrites | None = None) -> None:
        """``redelivery_settings``: keyword arguments of :class:`Redelivery` but the provider and the
        topics (the Faust app passes the Kafka client's); without them nothing is deduplicated
        after a restore. ``state_writes``: the changelog writes of the Faust app's state tables
        (without it a state write is taken as saved once the producer is flushed)."""
        self.pipeline = pipeline
        self.producer = producer
        self.topics = {kind: tick_topic(kind, topic_prefix) for kind in TICK_KINDS}
        self.topics[ALERT_KIND] = alerts_topic(topic_prefix)
        self.topics[DEAD_LETTER_KIND] = dlq_topic(pipeline.provider, topic_prefix)
        self.topics[CONTROL_KIND] = control_topic(pipeline.provider, topic_prefix)
        self.redelivery = Redelivery(pipeline.provider, topics=self.topics.values(), **redelivery_settings) \
            if redelivery_settings is not None else None
        self._batch_gauge = BATCH_SIZE.labels(pipeline.provider)
        self._latency = END_TO_END.labels(pipeline.provider)
        self._kill_after = kill_after_batches   # fault injection: see ProcessorSettings
        self.retrying = False  # readiness: false while the broker refuses our records
        # one batch or tick at a time: a tick saving state while a batch's outputs are still
        # being delivered would vouch for frames whose records may never arrive
        self._turn = asyncio.Lock()
        # topic -> (its partitions as the producer's metadata holds them, key -> partition)
        self._routes: dict[str, tuple[frozenset, dict[bytes, int]]] = {}
        self._saving: asyncio.Future | None = None  # the last batch's state write (process_pipelined)
        self.state_writes = state_writes
        self._state_lost: StateNotSaved | None = None  # a tick's state write failed: no batch is acked again

    async def process(self, messages: Iterable[tuple[bytes | None, bytes | None, Any, Source]]) -> int:
        """Handle (key, value, headers, source) tuples and deliver every output; returns how many tuples.

        Delivery failures are retried (capped backoff) until the broker acknowledges: the
        caller acks the batch's offsets only after this returns (outputs and state acknowledged).
        """
        count, saved = await self.process_pipelined(messages)
        await saved
        return count

    async def process_pipelined(self, messages: Iterable[tuple[bytes | None, bytes | None, Any, Source]]
                                ) -> tuple[int, asyncio.Future]:
        """:meth:`process` without waiting for the state write: returns (how many tuples, ``saved``)
        once every output is acknowledged and the state vouching for them is saved to the tables
        (their changelog writes sent). The next batch can start meanwhile; ``saved`` completes
        when this batch's state write is acknowledged, never before the previous batch's: only
        then may the caller ack the batch's offsets. It raises :class:`StateNotSaved` if this or an
        earlier state write failed."""
        async with self._turn:
            count = await self._process(messages)
            return count, self._state_saved_in_order()

    def _state_saved_in_order(self) -> asyncio.Future:
        previous = self._saving

        async def flush_after_previous() -> None:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            if previous is not None and not previous.cancelled() and previous.exception() is not None:
                raise StateNotSaved("an earlier batch's state was not saved")
            if self._state_lost is not None:
                raise self._state_lost
            await self._flush_state()
        self._saving = asyncio.ensure_future(flush_after_previous())
        return self._saving

    async def _process(self, messages) -> int:
        handle = self.pipeline.handle
        topics = self.topics
        outputs = []
        count = 0
        for key, value, headers, source in messages:
            count += 1
            for out in handle(key, value, headers, source).outputs:
                outputs.append((topics[out.kind], out))
        self._batch_gauge.set(count)
        outputs = await self._not_delivered_before(outputs)
        await self._deliver_all(outputs)
        self._observe_latency(outputs)
        if self._kill_after and any(out.kind in TICK_KINDS for _topic, out in outputs):
            self._die_in_the_window()
        self._commit_state()
        return count

    def _die_in_the_window(self) -> None:
        """Fault injection: the worst moment to die, outputs acknowledged and their state not saved."""
        self._kill_after -= 1
        if self._kill_after == 0:
            log.warning("fault injection: SIGKILL after delivery, before the state is saved",
                        provider=self.pipeline.provider)
            os.kill(os.getpid(), signal.SIGKILL)

    def _observe_latency(self, outputs: list) -> None:
        """End-to-end latency of every clean record just acknowledged: producer receive -> Kafka
        (one histogram update per bucket: they were acknowledged at one instant)."""
        recv_times = [out.record.get("recv_time") for _topic, out in outputs if out.kind in TICK_KINDS]
        observe_latencies(self._latency, time.time_ns(), [t for t in recv_times if t])

    async def tick(self) -> None:
        """Deliver what the pipeline's checks release as time passes (held records, STALE)."""
        async with self._turn:
            result = self.pipeline.tick(time.time_ns())
            outputs = await self._not_delivered_before([(self.topics[out.kind], out) for out in result.outputs])
            await self._deliver_all(outputs)
            self._commit_state()
            try:
                await self._flush_state()
            except StateNotSaved as exc:
                log.error("state not saved; no batch is acknowledged from now on", provider=self.pipeline.provider,
                          error=str(exc))
                self._state_lost = exc  # the next batch's ``saved`` fails: the worker stops there

    async def _flush_state(self) -> None:
        """Send the state just saved now: the tables' changelog writes wait in the producer's
        buffer otherwise, and a worker killed meanwhile leaves delivered outputs whose frames
        its successor does not recognise when they are redelivered (duplicates downstream).
        Raises :class:`StateNotSaved` if a changelog write failed meanwhile."""
        try:
            await self.producer.flush()
        except Exception as exc:
            raise StateNotSaved(f"state flush failed: {type(exc).__name__}: {exc}") from exc
        if self.state_writes is not None:
            await self.state_writes.settle()  # Faust's flush can return before a write is out

    def _commit_state(self) -> None:
        """The normalizer and the checks save their state only once the outputs it vouches for
        are delivered (with the output marks it vouches up to)."""
        self.pipeline.state.commit()
        marks = self.redelivery.current_marks() if self.redelivery is not None else None
        for check in self.pipeline.checks:
            commit = getattr(check, "commit", None)
            if commit is not None and marks:
                commit(marks)
            elif commit is not None:
                commit()

    async def _not_delivered_before(self, outputs: list) -> list:
        """Drop the outputs a worker before a state restore already delivered (``processors/redelivery.py``);
        before the first delivery, start the marks."""
        redelivery = self.redelivery
        if redelivery is None:
            return outputs
        saved = [marks for check in self.pipeline.checks
                 for marks in getattr(check, "take_restored_marks", list)()]
        await self._until_done(redelivery.ensure_marks, "reading the output topics' end offsets")
        if saved:
            await self._until_done(lambda: redelivery.restored(saved), "reading the outputs of a restored state")
        if not redelivery.armed:
            return outputs
        seen = redelivery.already_delivered
        return [(topic, out) for topic, out in outputs if not seen(topic, out.value)]

    async def _until_done(self, step, what: str) -> None:
        delay = 0.1
        while True:
            try:
                await step()
                self.retrying = False
                return
            except Exception as exc:
                self.retrying = True
                log.error(f"{what} failed; retrying", provider=self.pipeline.provider,
                          error=f"{type(exc).__name__}: {exc}", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _deliver_all(self, outputs: list) -> None:
        delay = 0.1
        while outputs:
            outputs = await self._deliver(outputs)
            if outputs:
                self.retrying = True
                log.error("produce failed; retrying", provider=self.pipeline.provider, records=len(outputs),
                          retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.retrying = False

    async def _deliver(self, outputs: list) -> list:
        """Send once, await every acknowledgement; return the outputs the broker did not acknowledge."""
        producer = batch_producer(self.producer)
        if producer is None:
            return await self._deliver_singly(outputs)
        return await self._deliver_batched(producer, outputs)

    async def _deliver_singly(self, outputs: list) -> list:
        """One ``send`` per output, flush once, then the futures (producers without a batch API)."""
        send = self.producer.send
        pending, failed = [], []
        for topic, out in outputs:
            try:
                pending.append((topic, out, await send(topic, out.key, out.value, None, None, out.headers)))
            except Exception as exc:
                self._failed(topic, exc)
                failed.append((topic, out))
        if pending:
            try:
                await self.producer.flush()
            except Exception as exc:
                log.warning("producer flush failed", error=f"{type(exc).__name__}: {exc}")
        for topic, out, fut in pending:
            try:
                metadata = fut.result() if fut.done() else await fut
                if self.redelivery is not None and metadata is not None:
                    self.redelivery.delivered(topic, metadata.partition, metadata.offset)
            except Exception as exc:
                self._failed(topic, exc)
                failed.append((topic, out))
        return failed

    async def _deliver_batched(self, producer, outputs: list) -> list:
        """One aiokafka record batch per (topic, partition) (more when one fills up), closed and sent
        at once; every acknowledgement awaited. Returns the outputs of the groups that failed, in order."""
        single_above = getattr(self.producer, "max_batch_size", None) or DEFAULT_BATCH_BYTES
        single_above //= 2
        pending: list[tuple[Any, str, list]] = []  # (ack future, topic, its outputs), in the order sent
        building: dict[tuple[str, int], tuple[Any, list]] = {}  # (topic, partition) -> (open batch, its outputs)
        failed: list = []

        async def submit(tp: tuple[str, int]) -> None:
            batch, items = building.pop(tp)
            batch.close()  # nothing else joins it: it goes at once
            try:
                pending.append((await producer.send_batch(batch, tp[0], partition=tp[1]), tp[0], items))
            except Exception as exc:
                self._failed(tp[0], exc, len(items))
                failed.extend(items)

        async def send_alone(item, partition: int | None) -> None:
            topic, out = item
            try:
                pending.append((await producer.send(topic, out.value, key=out.key, partition=partition,
                                                    headers=out.headers or []), topic, [item]))
            except Exception as exc:
                self._failed(topic, exc)
                failed.append(item)

        routes = await self._current_routes(producer, {topic for topic, _out in outputs})
        for item in outputs:
            topic, out = item
            route = routes.get(topic)
            if route is None:  # the topic's partitions are unknown (the broker is away): retried
                failed.append(item)
                continue
            partitions, partition_of = route
            key = out.key
            if key is None:
                await send_alone(item, None)
                continue
            partition = partition_of.get(key)
            if partition is None:
                partition = partition_of[key] = partition_for(key, partitions)
            tp = (topic, partition)
            if len(out.value) > single_above:
                if tp in building:
                    await submit(tp)  # keeps the partition's order
                await send_alone(item, partition)
                continue
            open_ = building.get(tp)
            if open_ is None:
                open_ = building[tp] = (producer.create_batch(), [])
            if open_[0].append(timestamp=None, key=key, value=out.value, headers=out.headers or []) is None:
                await submit(tp)  # full: send it, start the next
                open_ = building[tp] = (producer.create_batch(), [])
                open_[0].append(timestamp=None, key=key, value=out.value, headers=out.headers or [])
            open_[1].append(item)
        for tp in list(building):
            await submit(tp)
        delivered = self.redelivery.delivered if self.redelivery is not None else None
        for fut, topic, items in pending:
            try:
                metadata = fut.result() if fut.done() else await fut
            except Exception as exc:
                self._failed(topic, exc, len(items))
                failed.extend(items)
                continue
            if delivered is not None and metadata is not None:
                # a batch's future holds its base offset; its records follow one by one
                delivered(topic, metadata.partition, metadata.offset + len(items) - 1)
        if failed:
            failed_ids = {id(item) for item in failed}
            failed = [item for item in outputs if id(item) in failed_ids]
        return failed

    async def _current_routes(self, producer, topics) -> dict[str, tuple[frozenset, dict[bytes, int]]]:
        """Each topic's partitions (as the producer's metadata holds them) and its cached key ->
        partition map, started again when the partitions change; a topic whose metadata cannot be
        had is left out."""
        routes = self._routes
        for topic in topics:
            try:
                partitions = frozenset(await producer.partitions_for(topic))
            except Exception as exc:
                log.warning("partitions of an output topic unknown", topic=topic, error=f"{type(exc).__name__}: {exc}")
                routes.pop(topic, None)
                continue
            if not partitions:
                routes.pop(topic, None)
                continue
            route = routes.get(topic)
            if route is None or route[0] != partitions:
                routes[topic] = (partitions, {})
        return routes

    def _failed(self, topic: str, exc: BaseException, records: int = 1) -> None:
        PRODUCE_ERRORS.labels(topic).inc(records)
        log.warning("record not delivered", topic=topic, records=records, error=f"{type(exc).__name__}: {exc}")


def batch_producer(producer):
    """The started aiokafka producer whose ``create_batch``/``send_batch`` take a batch's outputs, or None.

    ``producer`` itself when it has them (a bare ``AIOKafkaProducer``); for Faust's aiokafka
    ``Producer`` (``faust.transport.drivers.aiokafka``), the aiokafka producer it starts and keeps
    in ``_producer`` (None until started): the sends go there directly, as Faust's own ``send``
    does without a transactional id (Faust's ``on_produce_message`` signal is not sent for them,
    nothing here listens to it). Any other producer (``AiokafkaSender``, test doubles): None,
    the outputs are sent one by one.
    """
    if hasattr(producer, "send_batch") and hasattr(producer, "create_batch"):
        return producer
    if type(producer).__module__ != "faust.transport.drivers.aiokafka":
        return None
    inner = getattr(producer, "_producer", None)
    if inner is None or not hasattr(inner, "send_batch") or not hasattr(inner, "create_batch"):
        return None
    return inner


def event_messages(events) -> list[tuple[bytes | None, bytes | None, Any, Source]]:
    """(key, value, headers, source) of Faust events consumed with the raw serializer."""
    out = []
    for event in events:
        msg = event.message
        out.append((msg.key, msg.value, msg.headers, Source(msg.topic, msg.partition, msg.offset)))
    return out
