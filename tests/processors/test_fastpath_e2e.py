"""``processors/fastpath.py`` in the real ``tickpipe process`` on the real broker: rebalances and SIGTERM.

The normalizer (``tests/processors/fastpath_recorder.py``) logs every frame the fast path hands
to the pipeline, with the worker's pid: a frame logged twice was processed twice.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time

from tests.processors.support import SMALL_TOPICS
from tests.processors.test_process_e2e import PRICE, frame, process_child
from tickpipe.admin import declare_topics
from tickpipe.kafka import client_kwargs
from tickpipe.topics import raw_topic

RECORDER = "financefeast=tests.processors.fastpath_recorder:normalize"


async def produce_frames(kafka_settings, conns: list[str], per_conn: int) -> dict[int, int]:
    """``per_conn`` price frames (tp-seq 1..) for each connection; records per raw partition."""
    from aiokafka import AIOKafkaProducer

    await declare_topics(kafka_settings, SMALL_TOPICS)
    producer = AIOKafkaProducer(**client_kwargs(kafka_settings), acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = []
        for seq in range(1, per_conn + 1):
            for conn in conns:
                key, value, headers = frame(seq, PRICE % (seq % 10, "1.25", "3", "NZB.NZ"))
                futures.append(await producer.send(raw_topic("financefeast", kafka_settings.topic_prefix), value,
                                                   key=conn.encode(), headers=_with_conn(headers, conn)))
        sent = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return dict(collections.Counter(meta.partition for meta in sent))


def _with_conn(headers: list, conn: str) -> list:
    return [(k, conn.encode() if k == "tp-conn" else v) for k, v in headers]


async def committed(kafka_settings, group: str, partitions: int) -> dict[int, int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**client_kwargs(kafka_settings), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        topic = raw_topic("financefeast", kafka_settings.topic_prefix)
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


def logged(path) -> list[tuple[int, str, int]]:
    if not path.exists():
        return []
    return [(int(pid), conn, int(seq)) for pid, conn, seq in (line.split() for line in path.read_text().splitlines())]


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


def worker(kafka_settings, tmp_path, name: str, log, delay_s: float, batch_max: int = 100):
    child = process_child(kafka_settings, tmp_path, name, normalizers=RECORDER)
    child.env.update({"TICKPIPE_TEST_FRAMES_LOG": str(log), "TICKPIPE_TEST_FRAME_DELAY_S": str(delay_s),
                      "TICKPIPE_PROCESSOR_BATCH_MAX": str(batch_max)})
    return child


def test_a_worker_joining_and_one_leaving_lose_nothing_and_process_nothing_twice(kafka_settings, tmp_path):
    log = tmp_path / "frames.log"
    # one connection per raw partition, 2,000 frames each: whichever partition the second worker gets
    # has frames left
    conns = ["ff-0", "ff-1"]
    per_partition = asyncio.run(produce_frames(kafka_settings, conns, per_conn=2000))
    assert len(per_partition) == 2  # both raw partitions have records: each worker gets one
    want = {(conn, seq) for conn in conns for seq in range(1, 2001)}
    with worker(kafka_settings, tmp_path, "first", log, delay_s=0.003) as first:
        wait_for(lambda: len(logged(log)) >= 200, 30, "the first worker processes")
        with worker(kafka_settings, tmp_path, "second", log, delay_s=0.003) as second:
            # the second worker got a partition and processed from where the first one stopped
            wait_for(lambda: second.process.pid in {pid for pid, _, _ in logged(log)}, 40,
                     "the second worker takes over")
            second.signal(signal.SIGTERM)  # it leaves: its partition goes back to the first
            assert second.process.wait(30) == 0
        wait_for(lambda: {(c, s) for _, c, s in logged(log)} >= want, 60, "every frame processed")
        time.sleep(2.0)  # a commit interval: the offsets of the last batches are committed
        first.signal(signal.SIGTERM)
        assert first.process.wait(30) == 0
    frames = logged(log)
    twice = [key for key, n in collections.Counter((c, s) for _, c, s in frames).items() if n > 1]
    assert not twice, f"processed twice: {twice[:10]} ({len(twice)})"
    assert {(c, s) for _, c, s in frames} == want
    assert {pid for pid, _, _ in frames} == {first.process.pid, second.process.pid}
    group = f"proc-{kafka_settings.topic_prefix}"
    assert asyncio.run(committed(kafka_settings, group, 2)) == per_partition


def test_sigterm_completes_and_commits_the_batch_in_flight_and_nothing_after_it(kafka_settings, tmp_path):
    log = tmp_path / "frames.log"
    per_partition = asyncio.run(produce_frames(kafka_settings, ["ff-0", "ff-1"], per_conn=1500))
    with worker(kafka_settings, tmp_path, "first", log, delay_s=0.005, batch_max=200) as first:
        wait_for(lambda: len(logged(log)) >= 250, 40, "the first worker processes")  # inside its second batch
        first.signal(signal.SIGTERM)
        assert first.process.wait(30) == 0
    done = logged(log)
    assert 250 <= len(done) < 3000
    group = f"proc-{kafka_settings.topic_prefix}"
    # the batch in flight was completed and committed, and no batch was started after it
    assert sum(asyncio.run(committed(kafka_settings, group, 2)).values()) == len(done)

    with worker(kafka_settings, tmp_path, "second", log, delay_s=0):
        wait_for(lambda: len(logged(log)) >= 3000, 40, "the rest processed")
        time.sleep(2.0)
    frames = logged(log)
    assert sorted((c, s) for _, c, s in frames) == sorted((c, s) for c in ("ff-0", "ff-1") for s in range(1, 1501))
    assert asyncio.run(committed(kafka_settings, group, 2)) == per_partition
