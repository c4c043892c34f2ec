"""Continue ``tp-seq`` across producer restarts: find the last one this connection id wrote.

The envelope promises a per-connection counter that is never reset, so a restarted
``tickpipe produce`` must not start again at 1 (the integrity stage would take the new
frames for redeliveries). At startup the producer reads the tail of the one partition its
key (the connection id) hashes to, in growing windows, until it finds a record of its own
connection; the new process continues after that ``tp-seq``. If Kafka cannot be read in
time the producer starts at 1 and says so; its ``session_start`` marker has ``attempt`` 1.
"""

from __future__ import annotations

import asyncio

from tickpipe.envelope import H_CONN, H_SEQ
from tickpipe.fetchwait import govern_fetch_wait
from tickpipe.kafka import KafkaSettings, client_kwargs, partition_for
from tickpipe.logs import get_logger

log = get_logger("tickpipe.producer.resume")


async def partitions_of(consumer, topic: str) -> set[int]:
    """The partition ids of ``topic`` (a started AIOKafkaConsumer); ``RuntimeError`` if it does not exist."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()  # aiokafka has no public refresh
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise RuntimeError(f"topic {topic} does not exist")
    return partitions


async def last_seq(kafka: KafkaSettings, topic: str, conn: str, scan_max: int = 100_000, window: int = 500) -> int:
    """The highest ``tp-seq`` of ``conn`` in the tail of its partition (0: none within ``scan_max`` records)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None, enable_auto_commit=False,
                                request_timeout_ms=10_000)
    await consumer.start()
    govern_fetch_wait(consumer, "resume")
    try:
        partitions = await partitions_of(consumer, topic)
        tp = TopicPartition(topic, partition_for(conn.encode(), list(partitions)))
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        end = (await consumer.end_offsets([tp]))[tp]
        upper = end
        while upper > first and end - upper < scan_max:
            lower = max(first, upper - window)
            found = await _max_seq_between(consumer, tp, lower, upper, conn.encode())
            if found:
                return found
            upper, window = lower, window * 4
        return 0
    finally:
        await consumer.stop()


async def _max_seq_between(consumer, tp, lower: int, upper: int, conn: bytes) -> int:
    consumer.seek(tp, lower)
    best, empty_polls = 0, 0
    while empty_polls < 5:
        position = await consumer.position(tp)
        if position >= upper:
            return best
        batches = await consumer.getmany(tp, timeout_ms=1000, max_records=2000)
        empty_polls = 0 if batches.get(tp) else empty_polls + 1
        for message in batches.get(tp, ()):
            if message.offset >= upper:
                return best
            headers = dict(message.headers or ())
            if message.key == conn and headers.get(H_CONN) == conn:
                try:
                    best = max(best, int(headers.get(H_SEQ, b"0")))
                except ValueError:
                    continue
    return best


async def resume_seq(kafka: KafkaSettings, topic: str, conn: str, timeout_s: float) -> int:
    """:func:`last_seq` within ``timeout_s``; 0 (start at 1) with a warning when Kafka cannot tell."""
    try:
        seq = await asyncio.wait_for(last_seq(kafka, topic, conn), timeout_s)
    except Exception as exc:
        log.warning("cannot read the last tp-seq of this connection: starting at 1", conn=conn, topic=topic,
                    error=f"{type(exc).__name__}: {exc}")
        return 0
    if seq:
        log.info("continuing tp-seq of this connection", conn=conn, last_seq=seq)
    return seq
