"""One websocket client of the Coinbase Exchange emulator: subscriptions, send queue, faults.

Everything a client receives goes through the session's queue and then its
:class:`~tickpipe.emulators.faults.Outbox`, in order, so acks, initial data and the live
stream interleave as on the real feed and every frame is journaled once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web

from tickpipe.emulators.faults import Outbox


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; ``rate <= 0`` never runs dry."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Session:
    def __init__(self, conn: int, ws: web.WebSocketResponse, request: web.Request, outbox: Outbox,
                 journal, queue_cap: int) -> None:
        self.conn, self.ws, self.request, self.outbox, self.journal = conn, ws, request, outbox, journal
        self.queue: asyncio.Queue[tuple[Any, dict, bool]] = asyncio.Queue()
        self.queue_cap = queue_cap
        self.subs: dict[str, set[str]] = {}
        self.authenticated = False
        self.auth_expires: float | None = None
        self.subscribed = False            # a subscribe arrived (the 5 s deadline)
        self.level3_schema_sent = False
        self.started = time.monotonic()
        self.stalled_until = 0.0
        self.closed = False
        self.overflowed = False

    def wants(self, channel: str, pid: str) -> bool:
        products = self.subs.get(channel)
        return products is not None and pid in products

    def send(self, payload: Any, ids: dict, faultable: bool = False) -> None:
        """Queue a frame (dict/list: serialised here; str/bytes: as is) for the sender task."""
        if self.closed:
            return
        if self.queue.qsize() >= self.queue_cap:
            self.overflowed = True
            return
        if not isinstance(payload, (str, bytes)):
            payload = orjson.dumps(payload).decode()
        self.queue.put_nowait((payload, ids, faultable))

    async def run_sender(self) -> None:
        """Drain the queue through the outbox onto the socket; pauses while stalled."""
        while not self.closed:
            payload, ids, faultable = await self.queue.get()
            delay = self.stalled_until - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            for frame in self.outbox.push(payload, ids, faultable):
                if self.ws.closed:
                    return
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame)

    async def close(self, reason: str, code: int, notice: dict | None = None) -> None:
        """End the connection once: optional error notice, journal, close frame (code 0: drop TCP)."""
        if self.closed:
            return
        self.closed = True
        self.outbox.abandon()
        self.journal.write("disconnect", self.conn, reason=reason, code=code or 1006)
        if not self.ws.closed:
            try:
                if notice is not None:
                    await self.ws.send_str(orjson.dumps(notice).decode())
                if code == 0:
                    transport = self.request.transport
                    if transport is not None:
                        transport.abort()
                else:
                    await self.ws.close(code=code, message=reason.encode()[:120])
            except (ConnectionError, RuntimeError):
                pass

    def client_gone(self) -> None:
        """The client closed or the socket failed: journal it unless we closed it ourselves."""
        if not self.closed:
            self.closed = True
            self.outbox.abandon()
            self.journal.write("disconnect", self.conn, reason="client", code=self.ws.close_code or 1006)
