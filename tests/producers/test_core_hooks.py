"""Optional adapter hooks and failure paths of the loop: keepalive, token refresh, in-band errors,
HTTP refusals, unreachable feeds, and a callback-fed (socket.io style) transport."""

from __future__ import annotations

import asyncio
import contextlib
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tickpipe.config import Secret
from tickpipe.envelope import KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers import metrics
from tickpipe.producers.base import FeedError
from tickpipe.producers.runner import Producer
from tickpipe.producers.transport import QueueTransport

from tests.producers.core_support import (EchoAdapter, EchoSettings, FeedServer, declare_echo_topics, echo_producer,
                                          fast_settings, read_raw, running, wait_for)


def _producer(kafka, feed, adapter_cls, **settings):
    adapter = adapter_cls(EchoSettings(url=feed.url, key=Secret("good-key-123"), symbols=("AAPL",)), fast_settings(**settings))
    return Producer(adapter, kafka, conn_id="echo-h")


def _ends(records):
    return [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]


class PingingAdapter(EchoAdapter):
    keepalive_interval_s = 0.1

    async def keepalive(self, session):
        await session.send_json({"action": "ping"})


class ExpiringTokenAdapter(EchoAdapter):
    connects = 0

    async def connect(self):
        type(self).connects += 1          # a real adapter fetches a fresh token here
        return await super().connect()

    def session_deadline(self):
        return time.time() + 0.4


class StrictAdapter(EchoAdapter):
    async def on_frame(self, session, frame):
        if isinstance(frame, str) and '"n":20,' in frame:
            raise FeedError("feed reported an error in-band")


async def test_keepalive_hook_sends_in_band_pings_while_ready(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=20) as feed:
        async with running(_producer(kafka_settings, feed, PingingAdapter)):
            await wait_for(lambda: feed.connections and sum(m == {"action": "ping"} for m in feed.connections[0].received) >= 3,
                           what="pings")


async def test_session_deadline_reconnects_at_once_with_fresh_credentials_and_everything_resubscribed(kafka_settings):
    await declare_echo_topics(kafka_settings)
    ExpiringTokenAdapter.connects = 0
    async with FeedServer(rate=50) as feed:
        async with running(_producer(kafka_settings, feed, ExpiringTokenAdapter, backoff_initial_s=30, backoff_max_s=30)):
            await wait_for(lambda: len(feed.connections) >= 3 and feed.connections[2].subscribed == {"AAPL"},
                           timeout=5, what="two refreshes")   # a backoff of up to 30 s would miss this
    assert ExpiringTokenAdapter.connects >= 3
    records = await read_raw(kafka_settings, "echo", lambda rs: len(_ends(rs)) >= 3)
    assert [e["reason"] for e in _ends(records)][:2] == ["token_refresh", "token_refresh"]


async def test_an_in_band_error_ends_the_session_with_its_reason_and_the_frame_recorded(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=100) as feed:
        async with running(_producer(kafka_settings, feed, StrictAdapter)):
            await wait_for(lambda: len(feed.connections) >= 2 and feed.connections[1].subscribed, what="reconnect")
    records = await read_raw(kafka_settings, "echo", lambda rs: len(_ends(rs)) >= 2)
    first_end = _ends(records)[0]
    assert first_end["reason"] == "error" and "FeedError: feed reported an error in-band" == first_end["error"]
    end_index = next(i for i, r in enumerate(records) if r.kind == KIND_SESSION_END)
    assert b'"n":20,' in records[end_index - 1].payload          # the offending frame is kept, right before the end


async def test_http_401_on_upgrade_is_a_permanent_auth_failure(kafka_settings):
    await declare_echo_topics(kafka_settings)
    before = metrics.auth_failures.labels("echo")._value.get()
    async with FeedServer() as feed:
        feed.upgrade_status = 401
        producer = echo_producer(kafka_settings, feed, auth_retry_min_s=0.3, auth_retry_max_s=0.3)
        async with running(producer):
            await wait_for(lambda: producer.loop.auth_failures >= 2, what="two refusals")
            assert not producer.ready()[0]
            assert metrics.auth_failing.labels("echo")._value.get() == 1
            feed.upgrade_status = None
            await wait_for(lambda: producer.ready()[0], what="accepted after the fix")
            assert metrics.auth_failing.labels("echo")._value.get() == 0
    assert metrics.auth_failures.labels("echo")._value.get() - before >= 2


async def test_unreachable_feed_is_retried_with_backoff_and_counted(kafka_settings):
    from tickpipe.broker import free_port

    await declare_echo_topics(kafka_settings)
    before = metrics.reconnects.labels("echo", "connect_failed")._value.get()

    class Nowhere:
        url = f"ws://127.0.0.1:{free_port()}/ws"

    producer = echo_producer(kafka_settings, Nowhere, backoff_initial_s=0.05, backoff_max_s=0.2)
    async with running(producer):
        await wait_for(lambda: producer.loop.attempts >= 4, what="several attempts")
    assert metrics.reconnects.labels("echo", "connect_failed")._value.get() - before >= 3


class CallbackAdapter(EchoAdapter):
    """Like a socket.io adapter: a client reads on its own and pushes events into a QueueTransport."""

    async def connect(self):
        ws = await connect(self.settings.url, proxy=None)

        async def pump():
            with contextlib.suppress(ConnectionClosed):
                async for message in ws:
                    transport.push(message)
            transport.closed(ws.close_code, ws.close_reason or "")

        transport = QueueTransport(send=ws.send, close=ws.close)
        self._pump = asyncio.ensure_future(pump())
        return transport


async def test_a_callback_fed_transport_runs_in_the_same_loop(kafka_settings):
    await declare_echo_topics(kafka_settings)
    async with FeedServer(rate=100) as feed:
        async with running(_producer(kafka_settings, feed, CallbackAdapter)):
            await wait_for(lambda: feed.connections and len(feed.connections[0].sent) > 20, what="frames")
            await feed.drop_all(4000, "bye")
            await wait_for(lambda: len(feed.connections) >= 2 and len(feed.connections[1].sent) > 5, what="reconnect")
    records = await read_raw(kafka_settings, "echo", lambda rs: len(_ends(rs)) >= 2)
    first = _ends(records)[0]
    assert (first["reason"], first["close_code"], first["close_reason"]) == ("closed", 4000, "bye")
    s1 = records[0].session
    assert [r.payload for r in records if r.kind == KIND_FRAME and r.session == s1] == \
        [f.encode() for f in feed.connections[0].sent]
    assert sum(r.kind == KIND_SESSION_START for r in records) == 2
