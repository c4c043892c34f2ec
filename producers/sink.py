"""The Kafka sink: a bounded buffer in front of an aiokafka producer (acks=all, linger, compression).

* :meth:`KafkaSink.put` never blocks: the record joins the :class:`ProduceBuffer`; past the
  bound the oldest frames are dropped and accounted in a ``loss`` marker that is written in
  order once Kafka takes records again.
* :meth:`KafkaSink.wait_for_room` is the back-pressure point the connection loop awaits
  before each read: above ``pause_at_fill`` it waits (the event loop keeps running, so the
  websocket library still answers pings) until the fill is down to ``resume_at_fill``, at
  most ``max_pause_s``; then reads go on and the bound drops oldest-first, so a long Kafka
  outage neither kills the feed connection nor loses anything silently.
* A pump task hands chunks to aiokafka and awaits every acknowledgement; failed records go
  back to the head of the buffer and are retried (at-least-once: a retried record can
  appear twice, with the same ``tp-conn``/``tp-seq``). Idempotence stays off (Tansu).
* :meth:`KafkaSink.close` flushes everything accepted, within ``flush_timeout_s``.
"""

from __future__ import annotations

import asyncio
import time

from tickpipe.envelope import KIND_FRAME, KIND_LOSS, RawRecord
from tickpipe.kafka import KafkaSettings, client_kwargs
from tickpipe.logs import get_logger
from tickpipe.producers import metrics
from tickpipe.producers.buffer import ProduceBuffer
from tickpipe.producers.settings import ProducerSettings

log = get_logger("tickpipe.producer.sink")
TOO_LARGE = ("MessageSizeTooLargeError", "RecordTooLargeError", "RecordListTooLargeError")


class KafkaSink:
    def __init__(self, kafka: KafkaSettings, settings: ProducerSettings, provider: str, topic: str,
                 new_loss) -> None:
        self.kafka, self.settings, self.provider, self.topic = kafka, settings, provider, topic
        self.buffer = ProduceBuffer(settings.buffer_max_frames, settings.buffer_max_bytes, new_loss)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._overflow = False
        self._producer = None
        self._pump_task: asyncio.Task | None = None
        self._dropping = False
        self._outage_since: float | None = None
        self.pauses = 0
        self.delivered = 0
        self._m = {name: getattr(metrics, name).labels(provider) for name in (
            "frames_produced", "bytes_produced", "frames_dropped", "produce_retries", "buffered_frames",
            "buffered_bytes", "buffer_fill_ratio", "reading_paused", "paused_seconds", "loss_markers",
            "produce_latency")}

    # ----- the loop's side -----
    def put(self, record: RawRecord) -> None:
        dropped = self.buffer.append(record)
        if dropped:
            self._m["frames_dropped"].inc(len(dropped))
            if not self._dropping:
                self._dropping = True
                log.warning("buffer full: dropping oldest frames (a loss marker will record them)",
                            provider=self.provider, bound_frames=self.buffer.max_frames)
        self._gauges()
        self._wake.set()

    async def wait_for_room(self) -> None:
        fill = self.buffer.fill()
        if self._overflow:
            if fill > self.settings.resume_at_fill:
                return  # reading on through an outage; the bound drops oldest
            self._overflow = False
            log.info("buffer drained: back-pressure over", provider=self.provider)
        if fill < self.settings.pause_at_fill:
            return
        self.pauses += 1
        self._room.clear()
        self._m["reading_paused"].set(1)
        started = time.monotonic()
        try:
            await asyncio.wait_for(self._room.wait(), self.settings.max_pause_s)
        except asyncio.TimeoutError:
            self._overflow = True
            log.warning("Kafka is not keeping up: reading on, oldest frames will be dropped past the bound",
                        provider=self.provider, paused_s=round(time.monotonic() - started, 3))
        finally:
            self._m["reading_paused"].set(0)
            self._m["paused_seconds"].inc(time.monotonic() - started)

    # ----- lifecycle -----
    async def start(self) -> "KafkaSink":
        self._pump_task = asyncio.ensure_future(self._pump())
        return self

    async def close(self, timeout: float | None = None) -> int:
        """Flush what was accepted, then stop. Returns how many records could not be delivered."""
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
                self._gauges()
                if self.buffer.fill() <= self.settings.resume_at_fill:
                    self._room.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the pump die: log, back off, go on
                failures += 1
                self._kafka_trouble(f"{type(exc).__name__}: {exc}")
                await self._stop_producer()
                await asyncio.sleep(min(2.0, 0.1 * 2 ** min(failures, 5)))

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

    async def _send(self, chunk: list[RawRecord]) -> list[RawRecord]:
        """Produce ``chunk``, await every acknowledgement; return the records that failed, in order."""
        pending: list[tuple[RawRecord, asyncio.Future]] = []
        failed: list[RawRecord] = []
        for i, record in enumerate(chunk):
            try:
                fut = await self._producer.send(self.topic, value=record.payload, key=record.key,
                                                headers=record.headers(), timestamp_ms=record.recv_ns // 1_000_000)
            except Exception as exc:
                if self._rejected(record, exc):
                    continue
                log.debug("Kafka send failed", error=f"{type(exc).__name__}: {exc}")
                failed = chunk[i:]
                break
            pending.append((record, fut))
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        now_ns = time.time_ns()
        done: list[RawRecord] = []
        for (record, _), result in zip(pending, results):
            if isinstance(result, BaseException):
                if not self._rejected(record, result):
                    failed.append(record)
                continue
            done.append(record)
            self._m["produce_latency"].observe(max(0, now_ns - record.recv_ns) / 1e9)
            self._m["bytes_produced"].inc(len(record.payload))
            if record.kind == KIND_LOSS:
                self._m["loss_markers"].inc()
                log.warning("loss marker written", provider=self.provider, seq=record.seq)
        if failed:
            failed_ids = {id(r) for r in failed}
            failed = [r for r in chunk if id(r) in failed_ids]
        self._m["frames_produced"].inc(len(done))
        self.delivered += len(done)
        self.buffer.settle(done)
        return failed

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

    def _gauges(self) -> None:
        b = self.buffer
        self._m["buffered_frames"].set(b.total_count)
        self._m["buffered_bytes"].set(b.total_bytes)
        self._m["buffer_fill_ratio"].set(min(1.0, b.fill()))
