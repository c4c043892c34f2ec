"""The worked example of producers/base.py, end to end: a real websocket feed and the real broker."""

from __future__ import annotations

import asyncio

from tickpipe.config import Secret
from tickpipe.envelope import CT_JSON, CT_MSGPACK, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.runner import Producer

from tests.producers.core_support import EchoAdapter, EchoSettings, FeedServer, declare_echo_topics, fast_settings, read_raw, wait_for


async def test_example_adapter_records_every_frame_verbatim_in_order(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=200, binary_every=7) as feed:
        adapter = EchoAdapter(EchoSettings(url=feed.url, key=Secret("good-key-123"), symbols=("AAPL", "MSFT")),
                              fast_settings())
        producer = Producer(adapter, kafka_settings, conn_id="echo-7")
        stop = asyncio.Event()
        task = asyncio.ensure_future(producer.run(stop))
        await wait_for(lambda: producer.ready()[0], what="producer ready")
        await wait_for(lambda: len(feed.connections[0].sent) >= 60, what="60 frames sent")
        stop.set()
        assert await asyncio.wait_for(task, 15) == 0

    conn = feed.connections[0]
    assert {"action": "unsubscribe", "symbols": ["AAPL", "MSFT"]} in conn.received  # SIGTERM path unsubscribes
    records = await read_raw(kafka_settings, "echo", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= 1)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))          # tp-seq: no gap, markers count
    assert {r.conn for r in records} == {"echo-7"} and {r.provider for r in records} == {"echo"}
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    assert decode_marker(records[-1].payload)["reason"] == "shutdown"
    frames = [r for r in records if r.kind == KIND_FRAME]
    expected = [f.encode() if isinstance(f, str) else f for f in conn.sent]
    assert [f.payload for f in frames] == expected                                # verbatim, in order, all of them
    assert {f.session for f in records} == {records[0].session}
    for f, sent in zip(frames, conn.sent):
        assert f.content_type == (CT_JSON if isinstance(sent, str) else CT_MSGPACK)
    recv_ns = [f.recv_ns for f in frames]
    assert recv_ns == sorted(recv_ns) and recv_ns[0] > 1_600_000_000 * 10**9
