"""The shared connection loop against a real websocket feed and the real broker."""

from __future__ import annotations

import aiohttp

from tickpipe.envelope import KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.service import OpsServer

from tests.producers.core_support import FeedServer, declare_echo_topics, echo_producer, read_raw, running, wait_for


def _sessions(records):
    """{session id: [records]} in topic order."""
    out: dict[str, list] = {}
    for r in records:
        out.setdefault(r.session, []).append(r)
    return out


async def test_server_drop_reconnects_with_new_session_and_resubscribes_everything(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=200) as feed:
        producer = echo_producer(kafka_settings, feed)
        async with running(producer):
            await wait_for(lambda: producer.ready()[0] and len(feed.connections[0].sent) > 30, what="first session")
            await feed.drop_all(1011, "injected drop")
            await wait_for(lambda: len(feed.connections) == 2 and producer.ready()[0], what="reconnect")
            await wait_for(lambda: len(feed.connections[1].sent) > 30, what="second session frames")
        first, second = feed.connections
    assert second.received[:2] == [{"action": "auth", "key": "good-key-123"},
                                   {"action": "subscribe", "symbols": ["AAPL", "MSFT"]}]
    records = await read_raw(kafka_settings, "echo", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) == 2)
    assert [r.seq for r in records] == list(range(1, len(records) + 1))   # one counter across sessions
    sessions = list(_sessions(records).values())
    assert len(sessions) == 2
    s1, s2 = sessions
    assert [s1[0].kind, s1[-1].kind, s2[0].kind, s2[-1].kind] == [KIND_SESSION_START, KIND_SESSION_END] * 2
    end1, start2 = decode_marker(s1[-1].payload), decode_marker(s2[0].payload)
    assert (end1["reason"], end1["close_code"], end1["close_reason"]) == ("closed", 1011, "injected drop")
    assert start2["previous_session"] == s1[0].session and start2["attempt"] == 2
    assert decode_marker(s2[-1].payload)["reason"] == "shutdown"
    assert [r.payload for r in s1 if r.kind == KIND_FRAME] == [f.encode() for f in first.sent]
    got2 = [r.payload for r in s2 if r.kind == KIND_FRAME]
    assert got2 == [f.encode() for f in second.sent[:len(got2)]] and len(got2) > 30


async def test_staleness_watchdog_reconnects_a_silent_feed(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=100) as feed:
        producer = echo_producer(kafka_settings, feed, stale_after_s=0.6)
        async with running(producer):
            await wait_for(lambda: producer.ready()[0], what="ready")
            feed.streaming.clear()                       # the socket stays open but goes quiet
            await wait_for(lambda: len(feed.connections) >= 2, what="a reconnect after silence")
            feed.streaming.set()
            await wait_for(lambda: producer.ready()[0], what="ready again")
    records = await read_raw(kafka_settings, "echo", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= 2)
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert ends[0]["reason"] == "stale" and "no frame for 0.6s" in ends[0]["error"]


async def test_readyz_follows_connection_state(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=50) as feed, aiohttp.ClientSession() as http:
        producer = echo_producer(kafka_settings, feed)
        ops = OpsServer("127.0.0.1", 0)
        ops.add_readiness("feed", producer.ready)
        await ops.start()

        async def readyz() -> int:
            async with http.get(f"http://127.0.0.1:{ops.port}/readyz") as resp:
                return resp.status

        try:
            assert await readyz() == 503                 # not started: not connected
            async with running(producer):
                await wait_for(lambda: producer.ready()[0], what="ready")
                assert await readyz() == 200
                feed.refuse = True
                await feed.drop_all()
                await wait_for(lambda: len(feed.connections) >= 3, what="refused reconnects")
                assert await readyz() == 503
                assert not producer.ready()[0]
                feed.refuse = False
                await wait_for(lambda: producer.ready()[0], timeout=10, what="ready again")
                assert await readyz() == 200
        finally:
            await ops.stop()


async def test_resync_request_on_control_topic_resubscribes_that_instrument(kafka_settings):
    from aiokafka import AIOKafkaProducer

    from tickpipe.kafka import client_kwargs
    from tickpipe.producers.control import resync_request
    from tickpipe.producers.metrics import control_rejected, resyncs
    from tickpipe.topics import control_topic

    await declare_echo_topics(kafka_settings)
    rejected_before = control_rejected.labels("echo")._value.get()
    unknown_before = resyncs.labels("echo", "unknown")._value.get()
    async with FeedServer(rate=50) as feed:
        producer = echo_producer(kafka_settings, feed, conn_id="echo-r")
        async with running(producer):
            await wait_for(lambda: producer.ready()[0] and producer.control.positioned.is_set(), what="following")
            kafka = AIOKafkaProducer(**client_kwargs(kafka_settings))
            await kafka.start()
            try:
                topic = control_topic("echo", kafka_settings.topic_prefix)
                await kafka.send_and_wait(topic, b"{not json", key=b"echo")
                await kafka.send_and_wait(topic, resync_request("ZZZZ", reason="gap"), key=b"echo")
                await kafka.send_and_wait(topic, resync_request("AAPL", reason="gap", conn="echo-other"), key=b"echo")
                await kafka.send_and_wait(topic, resync_request("MSFT", reason="gap"), key=b"echo")
            finally:
                await kafka.stop()
            conn = feed.connections[0]
            await wait_for(lambda: {"action": "subscribe", "symbols": ["MSFT"]} in conn.received, what="resubscribe")
        assert conn.received[2:4] == [{"action": "unsubscribe", "symbols": ["MSFT"]},
                                      {"action": "subscribe", "symbols": ["MSFT"]}]
        assert {"action": "unsubscribe", "symbols": ["AAPL"]} not in conn.received   # meant for another connection
        assert len(feed.connections) == 1                                            # no reconnect needed
    assert control_rejected.labels("echo")._value.get() == rejected_before + 1
    assert resyncs.labels("echo", "unknown")._value.get() == unknown_before + 1
