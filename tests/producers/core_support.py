"""Test helpers for the producer core: a tiny real websocket feed, the example adapter, a raw-topic reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tickpipe.config import Secret, setting
from tickpipe.envelope import RawRecord
from tickpipe.producers.base import AuthError, FeedAdapter, ResyncTarget, Session, Transport
from tickpipe.producers.settings import ProducerSettings
from tickpipe.producers.transport import open_websocket
from tickpipe.topics import TopicSpec, control_topic, create_missing, raw_topic

PROVIDER = "echo"


# ----- the worked example adapter of producers/base.py -----
@dataclass(frozen=True)
class EchoSettings:
    key: Secret = setting(help="API key (or TICKPIPE_ECHO_KEY_FILE)")   # required fields first
    url: str = setting("wss://feed.example/ws", help="websocket endpoint")
    symbols: tuple[str, ...] = setting(("AAPL",), help="instruments to subscribe")


class EchoAdapter(FeedAdapter):
    provider = PROVIDER
    settings_class = EchoSettings

    async def connect(self) -> Transport:
        return await open_websocket(self.settings.url, self.loop_settings)

    async def authenticate(self, session: Session) -> None:
        await session.send_json({"action": "auth", "key": self.settings.key.reveal()})
        reply = await session.recv_json()
        if reply.get("status") != "ok":
            raise AuthError(f"auth rejected: {reply.get('msg')}", permanent=True)

    async def subscribe(self, session: Session) -> None:
        await session.send_json({"action": "subscribe", "symbols": list(self.settings.symbols)})

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        if target.instrument not in self.settings.symbols:
            return False
        await session.send_json({"action": "unsubscribe", "symbols": [target.instrument]})
        await session.send_json({"action": "subscribe", "symbols": [target.instrument]})
        return True

    async def unsubscribe(self, session: Session) -> None:
        await session.send_json({"action": "unsubscribe", "symbols": list(self.settings.symbols)})


def fast_settings(**overrides) -> ProducerSettings:
    """Loop settings with test-sized timers."""
    base = dict(backoff_initial_s=0.05, backoff_max_s=0.3, stale_after_s=5.0, auth_timeout_s=3.0,
                connect_timeout_s=3.0, linger_ms=5, request_timeout_ms=3000, flush_timeout_s=8.0)
    base.update(overrides)
    return ProducerSettings(**base)


# ----- a real websocket feed on loopback -----
@dataclass
class FeedConnection:
    ws: ServerConnection
    received: list = field(default_factory=list)   # client messages, parsed
    sent: list = field(default_factory=list)       # frames we sent, exactly
    subscribed: set = field(default_factory=set)


class FeedServer:
    """Speaks the echo protocol: auth, subscribe/unsubscribe, then ``rate`` trades/s per symbol."""

    def __init__(self, key: str = "good-key-123", rate: float = 50.0, binary_every: int = 0,
                 echo_bad_key: bool = False, ping_interval: float | None = 20, ping_timeout: float | None = 20) -> None:
        self.key, self.rate, self.binary_every, self.echo_bad_key = key, rate, binary_every, echo_bad_key
        self.pings = dict(ping_interval=ping_interval, ping_timeout=ping_timeout)
        self.connections: list[FeedConnection] = []
        self.streaming = asyncio.Event()
        self.streaming.set()
        self.refuse = False
        self.upgrade_status: int | None = None   # answer the HTTP upgrade with this status instead
        self._server = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    async def __aenter__(self) -> "FeedServer":
        self._server = await serve(self._handle, "127.0.0.1", 0, process_request=self._upgrade, **self.pings)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self._server.close()
        await self._server.wait_closed()

    async def drop_all(self, code: int = 1011, reason: str = "injected drop") -> None:
        for conn in list(self.connections):
            await conn.ws.close(code, reason)

    def _upgrade(self, connection: ServerConnection, request):
        if self.upgrade_status:
            self.connections.append(FeedConnection(connection))
            return connection.respond(self.upgrade_status, "refused\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        conn = FeedConnection(ws)
        self.connections.append(conn)
        if self.refuse:
            await ws.close(1013, "try again later")
            return
        sender = asyncio.ensure_future(self._stream(conn))
        try:
            async for message in ws:
                doc = json.loads(message)
                conn.received.append(doc)
                if doc.get("action") == "auth":
                    if doc.get("key") == self.key:
                        await self._send(conn, '{"status": "ok"}')
                    else:
                        why = f"invalid key {doc.get('key')}" if self.echo_bad_key else "invalid key"
                        await self._send(conn, json.dumps({"status": "error", "msg": why}))
                        await ws.close(4001, "unauthorized")
                elif doc.get("action") == "subscribe":
                    conn.subscribed.update(doc["symbols"])
                    await self._send(conn, json.dumps({"T": "subscription", "symbols": sorted(conn.subscribed)}))
                elif doc.get("action") == "ping":
                    await self._send(conn, '{"T":"pong"}')
                elif doc.get("action") == "unsubscribe":
                    conn.subscribed.difference_update(doc["symbols"])
        except ConnectionClosed:
            pass
        finally:
            # let the sender meet the closed connection itself: cancelling it inside ws.send() would
            # leave a frame in ``sent`` that may never have been written
            await asyncio.wait({sender}, timeout=1 / self.rate + 0.5)
            sender.cancel()

    async def _send(self, conn: FeedConnection, frame) -> None:
        conn.sent.append(frame)
        try:
            await conn.ws.send(frame)
        except ConnectionClosed:
            conn.sent.remove(frame)  # never on the wire
            raise

    async def _stream(self, conn: FeedConnection) -> None:
        n = 0
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(1 / self.rate)
                await self.streaming.wait()
                for symbol in sorted(conn.subscribed):
                    n += 1
                    if self.binary_every and n % self.binary_every == 0:
                        frame = b"\x81\xa1n" + n.to_bytes(4, "big")   # raw bytes, not valid UTF-8
                    else:
                        frame = f'[{{"T":"t", "S":"{symbol}","n":{n},"note":"caf\u00e9"}}]'
                    await self._send(conn, frame)


# ----- Kafka side -----
async def declare_echo_topics(kafka, provider: str = PROVIDER, raw_partitions: int = 2) -> None:
    """The raw and control topics of ``provider`` (default: the echo feed's)."""
    from tickpipe.admin import admin_client

    specs = [TopicSpec(raw_topic(provider, kafka.topic_prefix), raw_partitions, 3600_000),
             TopicSpec(control_topic(provider, kafka.topic_prefix), 1, 3600_000)]
    async with admin_client(kafka) as admin:
        await create_missing(admin, specs)


async def read_raw(kafka, provider: str, until, timeout: float = 15.0, partitions=None) -> list[RawRecord]:
    """Every record of ``raw.<provider>`` (or of ``partitions``) from the beginning, until ``until(records)`` holds."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from tickpipe.kafka import client_kwargs

    topic = raw_topic(provider, kafka.topic_prefix)
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None, enable_auto_commit=False)
    await consumer.start()
    records: list[RawRecord] = []
    try:
        parts = [TopicPartition(topic, p) for p in sorted(partitions or consumer.partitions_for_topic(topic) or [0])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        deadline = asyncio.get_running_loop().time() + timeout
        while not until(records) and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=300)
            for batch in batches.values():
                for m in batch:
                    record = RawRecord.from_kafka(m.key, m.value, m.headers)
                    assert m.key == record.conn.encode(), "the Kafka key must be the connection id"
                    records.append(record)
    finally:
        await consumer.stop()
    return records


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(producer):
    """Run ``producer`` in this event loop; on exit stop it (the SIGTERM path) and check it flushed."""
    stop = asyncio.Event()
    task = asyncio.ensure_future(producer.run(stop))
    try:
        yield task
    finally:
        stop.set()
        code = await asyncio.wait_for(task, 20)
    assert code == 0, "the producer lost accepted records at shutdown"


def echo_producer(kafka, feed: FeedServer, conn_id: str = "echo-1", symbols=("AAPL", "MSFT"), **settings):
    from tickpipe.producers.runner import Producer

    adapter = EchoAdapter(EchoSettings(url=feed.url, key=Secret("good-key-123"), symbols=symbols), fast_settings(**settings))
    return Producer(adapter, kafka, conn_id=conn_id)
