"""End offsets read from the log itself, for brokers whose ListOffsets answer falls short.

Faust recovers a table by reading its changelog up to the partition's end offset (ListOffsets
"latest"), then stops. Tansu answers ListOffsets with the first offset of the last record batch
plus one, so a recovery stopped there and a restarted or rebalanced worker lost the state
written last (the rest of that batch): it took redelivered frames for new ones, emitting them
twice, and dropped the records its reorder window still held. :func:`true_end_offsets` starts
from the answer and reads on until the log has nothing more; on a broker that answers
correctly it reads the one last record and returns the answer unchanged.
"""

from __future__ import annotations

import time
from typing import Mapping

from aiokafka import AIOKafkaConsumer, TopicPartition

from tickpipe.fetchwait import govern_fetch_wait
from tickpipe.logs import get_logger

log = get_logger("tickpipe.processors.end_offsets")


async def true_end_offsets(client_kwargs: dict, reported: Mapping[TopicPartition, int],
                           fetch_max_wait_ms: int = 100, patience_s: float = 5.0) -> dict[TopicPartition, int]:
    """``reported`` end offsets raised to one past the last record each partition really holds."""
    ends = dict(reported)
    probe = {tp: end for tp, end in ends.items() if end and end > 0}
    if not probe:
        return ends
    consumer = AIOKafkaConsumer(**client_kwargs, enable_auto_commit=False, group_id=None,
                                fetch_max_wait_ms=fetch_max_wait_ms, isolation_level="read_uncommitted")
    await consumer.start()
    ladder = govern_fetch_wait(consumer, "end-offsets")
    try:
        consumer.assign(list(probe))
        for tp, end in probe.items():
            consumer.seek(tp, end - 1)
        unread = set(probe)  # the record at end - 1 exists: wait for it (a first fetch can come back empty)
        deadline = time.monotonic() + patience_s
        while True:
            batches = await consumer.getmany(timeout_ms=(ladder.wait_ms if ladder else fetch_max_wait_ms) * 3)
            for tp, records in batches.items():
                ends[tp] = max(ends[tp], records[-1].offset + 1)
                unread.discard(tp)
            if not batches and ((not unread and not _behind(consumer, ends, probe)) or time.monotonic() > deadline):
                break
        if unread:
            log.warning("end offsets not confirmed from the log", partitions=sorted(f"{tp.topic}/{tp.partition}"
                                                                                    for tp in unread))
    finally:
        await consumer.stop()
    moved = {f"{tp.topic}/{tp.partition}": (reported[tp], ends[tp]) for tp in probe if ends[tp] != reported[tp]}
    if moved:
        log.info("end offsets corrected from the log", partitions=moved)
    return ends


def _behind(consumer, ends: Mapping[TopicPartition, int], tps) -> list[TopicPartition]:
    """Partitions whose last fetch answer gave a high watermark past what was read (a starved answer)."""
    return [tp for tp in tps if (high := consumer.highwater(tp)) is not None and high > ends[tp]]


def read_ends_from_the_log(app, client_kwargs: dict, fetch_max_wait_ms: int = 100) -> None:
    """Make the Faust app's table recovery use :func:`true_end_offsets` (its consumer thread's
    ``_highwaters`` is what recovery asks)."""
    thread = getattr(app.consumer, "_thread", None)
    highwaters = getattr(thread, "_highwaters", None)
    if highwaters is None:  # another Faust driver: keep its own answer
        return

    async def highwaters_from_the_log(partitions):
        reported = await highwaters(partitions)
        if getattr(thread.consumer, "in_transaction", False):
            return reported
        return await true_end_offsets(client_kwargs, reported, fetch_max_wait_ms)

    thread._highwaters = highwaters_from_the_log
