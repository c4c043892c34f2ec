"""The Kafka sink: a bounded buffer in front of an aiokafka producer (acks=all, linger, compression).

* :meth:`KafkaSink.put` never blocks: the record joins the :class:`ProduceBuffer`; past the
  bound the oldest frames are dropped and accounted in a ``loss`` marker that is written in
  order once Kafka takes records again.
* :meth:`KafkaSink.wait_for_room` is the back-pressure point the connection loop awaits
  before each read: above ``pause_at_fill`` it waits (the event loop keeps running, so the
  websocket library still answers pings) until the fill is down to ``resume_at_fill``, at
  most ``max_pause_s``; then reads go on and the bound drops oldest-first, so a long Kafka
  outage neither kills the feed connection nor loses anything silently.
* A pump task waits up to ``linger_ms`` for a chunk of ``chunk_records`` to gather, builds it
  into one aiokafka batch per partition (``create_batch``/``send_batch``: one future per batch,
  not per record) and awaits every acknowledgement; failed records go back to the head of the
  buffer and are retried (at-least-once: a retried record can appear twice, with the same
  ``tp-conn``/``tp-seq``). Idempotence stays off (Tansu).
* The key (the connection id) is constant, so its partition is computed once, with aiokafka's
  own default partitioner (murmur2 of the key over the topic's partitions, exactly where
  ``send(key=...)`` would put it), and again only when the topic's partitions change.
* Frames too large for a shared batch (over half of ``batch_size``, or near
  ``max_request_bytes``) go alone through ``send()``, so the client's size check and a
  broker's refusal name the one frame; a batch refused as too large is retried one record
  at a time for the same reason.
* :meth:`KafkaSink.close` flushes everything accepted, within ``flush_timeout_s``.
"""

from __future__ import annotations

import asyncio
import time

from tickpipe.envelope import (H_CONN, H_CONTENT_TYPE, H_KIND, H_PROVIDER, H_RECV_NS, H_SEQ, H_SESSION, KIND_FRAME,
                               KIND_LOSS, RawRecord)
from tickpipe.histograms import observe_latencies
from tickpipe.kafka import KafkaSettings, client_kwargs, partition_for
from tickpipe.logs import get_logger
from tickpipe.producers import metrics
from tickpipe.producers.buffer import ProduceBuffer
from tickpipe.producers.settings import ProducerSettings

log = get_logger("tickpipe.producer.sink")
TOO_LARGE = ("MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError")
SINGLE_MARGIN = 4096  # a frame this close to max_request_bytes is sent alone (the client checks its exact size)


class EncodedText(dict):
    """str -> its UTF-8 bytes, encoded on first use (the few header values that repeat on every record)."""

    def __missing__(self, value: str) -> bytes:
        if len(self) >= 256:  # session ids change on every reconnect: keep it small
            self.clear()
        out = self[value] = value.encode()
        return out


def record_headers(record: RawRecord, text: EncodedText) -> list[tuple[str, bytes]]:
    """Exactly ``record.headers()``, with the repeated text values encoded once (``text``)."""
    headers = [(H_PROVIDER, text[record.provider]), (H_CONN, text[record.conn]), (H_SESSION, text[record.session]),
               (H_SEQ, b"%d" % record.seq), (H_RECV_NS, b"%d" % record.recv_ns),
               (H_CONTENT_TYPE, text[record.content_type]), (H_KIND, text[record.kind])]
    if record.extra_headers:
        headers.extend(record.extra_headers)
    return headers


class KafkaSink:
    def __init__(self, kafka: KafkaSettings, settings: ProducerSettings, provider: str, topic: str,
                 new_loss) -> None:
        self.kafka, self.settings, self.provider, self.topic = kafka, settings, provider, topic
        self.buffer = ProduceBuffer(settings.buffer_max_frames, settings.buffer_max_bytes, new_loss)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._chunk_ready = asyncio.Event()  # set by put() while the pump lingers and a full chunk is there
        self._lingering = False
        self._closing = False
        self._overflow = False
        self._producer = None
        self._pump_task: asyncio.Task | None = None
        self._dropping = False
        self._outage_since: float | None = None
        self._partitions: tuple[int, ...] = ()
        self._routes: dict[str, tuple[bytes, int]] = {}  # connection id -> (key, partition)
        self._text = EncodedText()
        self._single_above = min(settings.batch_size // 2, settings.max_request_bytes - SINGLE_MARGIN)
        self.paused = False  # True while wait_for_room() holds the reads back
        self.pauses = 0
        self.delivered = 0
        self._m = {name: getattr(metrics, name).labels(provider) for name in (
            "frames_produced", "bytes_produced", "frames_dropped", "produce_retries", "buffered_frames",
            "buffered_bytes", "buffer_fill_ratio", "reading_paused", "paused_seconds", "loss_markers",
            "produce_latency")}
        # the buffer gauges are read when /metrics is scraped: always current, no cost per record
        b = self.buffer
        self._m["buffered_frames"].set_function(lambda: b.total_count)
        self._m["buffered_bytes"].set_function(lambda: b.total_bytes)
        self._m["buffer_fill_ratio"].set_function(lambda: min(1.0, b.fill()))

    # ----- the loop's side -----
    def put(self, record: RawRecord) -> None:
        buffer = self.buffer
        dropped = buffer.append(record)
        if dropped:
            self._m["frames_dropped"].inc(len(dropped))
            if not self._dropping:
                self._dropping = True
                log.warning("buffer full: dropping oldest frames (a loss marker will record them)",
                            provider=self.provider, bound_frames=buffer.max_frames)
        self._wake.set()
        if self._lingering and len(buffer) >= self.settings.chunk_records:
            self._chunk_ready.set()

    async def wait_for_room(self) -> bool:
        """Wait while the buffer is above ``pause_at_fill``; True if reads were paused."""
        fill = self.buffer.fill()
        if self._overflow:
            if fill > self.settings.resume_at_fill:
                return False  # reading on through an outage; the bound drops oldest
            self._overflow = False
            log.info("buffer drained: back-pressure over", provider=self.provider)
        if fill < self.settings.pause_at_fill:
            return False
        self.pauses += 1
        self._room.clear()
        self._m["reading_paused"].set(1)
        self.paused = True
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._room.wait(), self.settings.max_pause_s)
        except asyncio.TimeoutError:
            self._overflow = True
            log.warning("Kafka is not keeping up: reading on, oldest frames will be dropped past the bound",
                        provider=self.provider, paused_s=round(time.monotonic() - started, 3))
        finally:
            self.paused = False
            self._m["reading_paused"].set(0)
            self._m["paused_seconds"].inc(time.monotonic() - started)
        return True

    # ----- lifecycle -----
    async def start(self) -> "KafkaSink":
        self._pump_task = asyncio.ensure_future(self._pump())
        return self

    async def close(self, timeout: float | None = None) -> int:
        """Flush what was accepted, then stop. Returns how many records could not be delivered."""
        self._closing = True  # no more lingering
        self._chunk_ready.set()
        self._wake.set()
        timeout = self.settings.flush_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while self.buffer.total_count and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        left = self.buffer.total_count
        if self._pump_task:
            self._pump_task.cancel()
            await asyncio.gather(self._pump_task, return_exceptions=True)
        await self._stop_producer()
        if left:
            log.error("shutdown: records accepted but not delivered to Kafka", provider=self.provider,
                      undelivered=left, topic=self.topic)
        else:
            log.info("sink flushed", provider=self.provider, delivered=self.delivered)
        return left

    # ----- the pump -----
    async def _pump(self) -> None:
        failures = 0
        while True:
            try:
                if not len(self.buffer):
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                await self._ensure_producer()
                await self._linger()
                chunk = self.buffer.take(self.settings.chunk_records)
                failed = await self._send(chunk)
                if failed:
                    self.buffer.give_back(failed)
                    self._m["produce_retries"].inc(len(failed))
                    self._kafka_trouble(f"{len(failed)} records not acknowledged")
                    failures += 1
                    await asyncio.sleep(min(2.0, 0.1 * 2 ** min(failures, 5)))
                else:
                    failures = 0
                    self._kafka_fine()
                if self.buffer.fill() <= self.settings.resume_at_fill:
                    self._room.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the pump die: log, back off, go on
                failures += 1
                self._kafka_trouble(f"{type(exc).__name__}: {exc}")
                await self._stop_producer()
                await asyncio.sleep(min(2.0, 0.1 * 2 ** min(failures, 5)))

    async def _linger(self) -> None:
        """Kafka's ``linger_ms``, kept here: wait until a full chunk is buffered or the oldest buffered
        record has waited ``linger_ms`` (the batches themselves are sent at once)."""
        linger_s = self.settings.linger_ms / 1000
        if linger_s <= 0 or self._closing or len(self.buffer) >= self.settings.chunk_records:
            return
        oldest_ns = self.buffer.oldest_recv_ns()
        wait = linger_s if oldest_ns is None else min(linger_s, linger_s - (time.time_ns() - oldest_ns) / 1e9)
        if wait <= 0:
            return
        self._chunk_ready.clear()
        self._lingering = True
        try:
            await asyncio.wait_for(self._chunk_ready.wait(), wait)
        except asyncio.TimeoutError:
            pass
        finally:
            self._lingering = False

    async def _ensure_producer(self) -> None:
        if self._producer is not None:
            return
        from aiokafka import AIOKafkaProducer

        s = self.settings
        producer = AIOKafkaProducer(
            **client_kwargs(self.kafka), acks="all", enable_idempotence=False, linger_ms=s.linger_ms,
            compression_type=None if s.compression == "none" else s.compression, max_batch_size=s.batch_size,
            max_request_size=s.max_request_bytes, request_timeout_ms=s.request_timeout_ms, retry_backoff_ms=200)
        try:
            await producer.start()
        except BaseException:
            await producer.stop()
            raise
        self._producer = producer
        log.info("Kafka producer connected", provider=self.provider, topic=self.topic)

    async def _stop_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:
                log.debug("Kafka producer stop failed", error=str(exc))

    def _route(self, conn: str) -> tuple[bytes, int]:
        """Key and partition of a connection's records (its partition computed once per partition set)."""
        route = self._routes.get(conn)
        if route is None:
            key = conn.encode()
            route = self._routes[conn] = (key, partition_for(key, self._partitions))
        return route

    async def _send(self, chunk: list[RawRecord]) -> list[RawRecord]:
        """Produce ``chunk``, await every acknowledgement; return the records that failed, in order."""
        producer, topic = self._producer, self.topic
        text, single_above = self._text, self._single_above
        pending: list[tuple[asyncio.Future, list[RawRecord]]] = []  # (ack, records), in the order sent
        building: dict[int, tuple[object, list[RawRecord]]] = {}     # partition -> (open batch, its records)
        failed: list[RawRecord] = []

        async def submit(partition: int) -> None:
            batch, records = building[partition]
            batch.close()  # nothing else joins it, and it goes without lingering: the pump lingered
            pending.append((await producer.send_batch(batch, topic, partition=partition), records))
            del building[partition]

        i = 0
        try:
            partitions = tuple(await producer.partitions_for(topic))
            if partitions != self._partitions:
                self._partitions, self._routes = partitions, {}
            routes = self._routes
            for i, record in enumerate(chunk):
                key, partition = routes.get(record.conn) or self._route(record.conn)
                headers = record_headers(record, text)
                timestamp = record.recv_ns // 1_000_000
                if len(record.payload) > single_above:
                    if partition in building:
                        await submit(partition)  # keeps the order within the partition
                    try:
                        fut = await producer.send(topic, value=record.payload, key=key, partition=partition,
                                                  headers=headers, timestamp_ms=timestamp)
                    except Exception as exc:
                        if self._rejected(record, exc):
                            continue
                        raise
                    pending.append((fut, [record]))
                    continue
                open_ = building.get(partition)
                if open_ is None:
                    open_ = building[partition] = (producer.create_batch(), [])
                if open_[0].append(timestamp=timestamp, key=key, value=record.payload, headers=headers) is None:
                    await submit(partition)  # full: send it, start the next
                    open_ = building[partition] = (producer.create_batch(), [])
                    open_[0].append(timestamp=timestamp, key=key, value=record.payload, headers=headers)
                open_[1].append(record)
            i = len(chunk)
            for partition in list(building):
                await submit(partition)
        except Exception as exc:
            # what was not handed over fails: the open batches and the records from the one that failed on
            log.debug("Kafka send failed", error=f"{type(exc).__name__}: {exc}")
            failed = [r for _, records in building.values() for r in records] + chunk[i:]
        results = await asyncio.gather(*(fut for fut, _ in pending), return_exceptions=True)
        done: list[RawRecord] = []
        for (_, records), result in zip(pending, results):
            if not isinstance(result, BaseException):
                done.extend(records)
            elif type(result).__name__ in TOO_LARGE and len(records) > 1:
                log.debug("Kafka refused a batch as too large: sending its records one by one",
                          error=type(result).__name__, records=len(records))
                failed.extend(await self._send_singly(records, done))
            else:
                failed.extend(r for r in records if not self._rejected(r, result))
        self._delivered(done)
        if failed:
            failed_ids = {id(r) for r in failed}
            failed = [r for r in chunk if id(r) in failed_ids]
        return failed

    async def _send_singly(self, records: list[RawRecord], done: list[RawRecord]) -> list[RawRecord]:
        """One ``send()`` per record (to find which one Kafka refuses); delivered ones join ``done``."""
        pending, failed = [], []
        for n, record in enumerate(records):
            key, partition = self._routes.get(record.conn) or self._route(record.conn)
            try:
                fut = await self._producer.send(self.topic, value=record.payload, key=key, partition=partition,
                                                headers=record_headers(record, self._text),
                                                timestamp_ms=record.recv_ns // 1_000_000)
            except Exception as exc:
                if self._rejected(record, exc):
                    continue
                failed = records[n:]
                break
            pending.append((record, fut))
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        for (record, _), result in zip(pending, results):
            if not isinstance(result, BaseException):
                done.append(record)
            elif not self._rejected(record, result):
                failed.append(record)
        return failed

    def _delivered(self, done: list[RawRecord]) -> None:
        """Account acknowledged records: the metrics once per chunk, the buffer's in-flight counts."""
        if not done:
            return
        now_ns = time.time_ns()
        observe_latencies(self._m["produce_latency"], now_ns, [r.recv_ns for r in done])
        self._m["bytes_produced"].inc(sum(len(r.payload) for r in done))
        for record in done:
            if record.kind == KIND_LOSS:
                self._m["loss_markers"].inc()
                log.warning("loss marker written", provider=self.provider, seq=record.seq)
        self._m["frames_produced"].inc(len(done))
        self.delivered += len(done)
        self.buffer.settle(done)

    def _kafka_trouble(self, error: str) -> None:
        """Log the start of a Kafka outage once (then debug until it is over)."""
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            log.warning("Kafka is not taking records: buffering, reads pause past the high watermark",
                        provider=self.provider, topic=self.topic, error=error, buffered=self.buffer.total_count)
        else:
            log.debug("Kafka still not taking records", provider=self.provider, error=error)

    def _kafka_fine(self) -> None:
        if self._outage_since is not None:
            log.info("Kafka takes records again", provider=self.provider, outage_s=round(time.monotonic() - self._outage_since, 3),
                     dropped_so_far=self.buffer.dropped_frames)
            self._outage_since = None
            self._dropping = False

    def _rejected(self, record: RawRecord, exc: BaseException) -> bool:
        """A frame too large for Kafka is dropped with accounting; retrying it would block the connection."""
        if type(exc).__name__ not in TOO_LARGE or record.kind != KIND_FRAME:
            return False
        self.buffer.reject(record)
        self._m["frames_dropped"].inc()
        log.error("Kafka refused a frame as too large; dropped, a loss marker records it", provider=self.provider,
                  seq=record.seq, size=len(record.payload), error=type(exc).__name__)
        return True
