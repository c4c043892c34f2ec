"""tp-seq is never reset for a connection id: a restarted producer continues where the last one stopped."""

from __future__ import annotations

from tickpipe.envelope import KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.resume import last_seq, partition_for
from tickpipe.topics import raw_topic

from tests.producers.core_support import FeedServer, declare_echo_topics, echo_producer, read_raw, running, wait_for


async def _run_once(kafka, feed, conn_id: str, frames: int) -> int:
    producer = echo_producer(kafka, feed, conn_id=conn_id)
    async with running(producer):
        await wait_for(lambda: producer.ready()[0] and producer.recorder.seq > frames, what=f"{frames} frames")
    return producer.recorder.seq


async def test_a_restarted_producer_continues_tp_seq_of_its_connection_id(kafka_settings):
    await declare_echo_topics(kafka_settings)
    topic = raw_topic("echo", kafka_settings.topic_prefix)
    # a neighbour in the same partition writes more than one scan window after echo-a
    other = next(c for c in (f"echo-b{i}" for i in range(50)) if partition_for(c.encode(), [0, 1]) ==
                 partition_for(b"echo-a", [0, 1]))
    async with FeedServer(rate=500) as feed:
        last_a = await _run_once(kafka_settings, feed, "echo-a", 30)
        last_other = await _run_once(kafka_settings, feed, other, 1200)
        assert await last_seq(kafka_settings, topic, "echo-a") == last_a
        last_a2 = await _run_once(kafka_settings, feed, "echo-a", 20)
        assert await _run_once(kafka_settings, feed, "echo-new", 5) > 5   # unknown id: from 1
    records = await read_raw(kafka_settings, "echo", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= 4)
    mine = [r for r in records if r.conn == "echo-a"]
    assert [r.seq for r in mine] == list(range(1, last_a2 + 1))             # one unbroken counter over two processes
    restart = mine[last_a]
    assert restart.kind == KIND_SESSION_START and decode_marker(restart.payload)["attempt"] == 1
    assert [r.seq for r in records if r.conn == other] == list(range(1, last_other + 1))
    assert [r.seq for r in records if r.conn == "echo-new"][0] == 1
    for conn in ("echo-a", other):   # the partition we scan is the one the producer wrote to
        part = partition_for(conn.encode(), [0, 1])
        held = await read_raw(kafka_settings, "echo", lambda rs: any(r.conn == conn for r in rs), timeout=3,
                              partitions=[part])
        assert any(r.conn == conn for r in held)
