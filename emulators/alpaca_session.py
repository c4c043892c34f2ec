"""One Alpaca client connection: lifecycle, auth deadline, and the data pump with its faults.

:class:`StreamSession` is shared by the v2/crypto protocol (:mod:`.alpaca_v2`) and the legacy
v1 protocol (:mod:`.alpaca_v1`); they supply the greeting, the message handler and the framing.
Faults here: ``disconnect_every`` (+ ``close_code``), ``stall_every``/``stall_for``,
``slow_client`` (v2 only: the 407 error, then a close); message faults go through the Outbox.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import TYPE_CHECKING, Any, Iterable

from aiohttp import WSMsgType, web

from tickpipe.emulators.alpaca_feed import Event, EventSource, Subscriptions
from tickpipe.emulators.alpaca_wire import Codec
from tickpipe.emulators.base import paced

if TYPE_CHECKING:
    from tickpipe.emulators.alpaca import AlpacaEmulator, Feed


class StreamSession:
    def __init__(self, emu: "AlpacaEmulator", feed: "Feed", request: web.Request) -> None:
        self.emu, self.feed, self.request = emu, feed, request
        self.settings = emu.settings
        self.codec = Codec(None if feed.legacy else request.headers.get("Content-Type"))  # v1: JSON only
        self.ws = web.WebSocketResponse(compress=True, max_msg_size=4 * emu.options.max_frame_bytes,
                                        heartbeat=self.settings.server_ping_s or None)
        self.subs = Subscriptions(feed.channels)
        self.lock = asyncio.Lock()          # one writer at a time; state changes and their acks are atomic
        self.account: str | None = None     # set once authenticated
        self.source: EventSource | None = None
        self.close_reason = "client"
        self.close_code: int | None = None
        self.conn = 0

    # ----- provided by the protocol -----
    async def opened(self) -> None:
        """Right after the upgrade (v2 greets; v1 says nothing)."""

    async def handle(self, data: str | bytes) -> None:
        raise NotImplementedError

    def render(self, event: Event) -> dict:
        raise NotImplementedError

    def frames(self, payloads: list[Any]) -> list[str | bytes]:
        """Sendable frames for data payloads (dicts) and malformed-frame faults (str/bytes), in order."""
        raise NotImplementedError

    async def auth_timed_out(self) -> None:
        await self.close("auth_timeout", self.settings.error_close_code)

    async def slow_client(self) -> None:
        """The ``slow_client`` fault; protocols without a slow-client error ignore it."""

    # ----- lifecycle -----
    async def serve(self) -> web.WebSocketResponse:
        emu = self.emu
        await self.ws.prepare(self.request)
        self.conn = emu.new_connection(path=self.feed.path, encoding=self.codec.name)
        self.outbox = emu.outbox(self.conn)
        emu.track_socket(self.ws)
        tasks = [emu.spawn(self._auth_deadline()), emu.spawn(self._pump())]
        try:
            await self.opened()
            async for msg in self.ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    await self._dispatch(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        except ConnectionResetError:  # the client went away while we answered it
            pass
        finally:
            for task in tasks:
                task.cancel()
            self.outbox.abandon()
            if self.account is not None:
                emu.release(self.feed.path, self.account)
            emu.untrack_socket(self.ws)
            if emu.stopping.is_set() and self.close_reason == "client":
                self.close_reason = "shutdown"
            emu.journal.write("disconnect", self.conn, reason=self.close_reason,
                              code=self.close_code or self.ws.close_code)
        return self.ws

    async def _dispatch(self, data: str | bytes) -> None:
        try:
            await self.handle(data)
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as exc:  # never let one client's message take the server down
            self.emu.log.error("alpaca emulator: message handler failed", conn=self.conn, error=repr(exc))
            await self.internal_error()

    async def internal_error(self) -> None:
        """Reply to a failure of our own (v2: 500 internal error)."""

    async def close(self, reason: str, code: int) -> None:
        self.close_reason, self.close_code = reason, code
        await self.ws.close(code=code, message=reason.encode())

    async def send(self, obj: Any) -> None:
        await self.send_raw(self.codec.encode(obj))

    async def send_raw(self, frame: str | bytes) -> None:
        if isinstance(frame, str):
            await self.ws.send_str(frame)
        else:
            await self.ws.send_bytes(frame)

    async def send_events(self, events: Iterable[Event]) -> None:
        """Push events through the fault outbox and send what comes out. Call with ``lock`` held."""
        payloads: list[Any] = []
        for event in events:
            payloads.extend(self.outbox.push(self.render(event), event.ids(), faultable=event.faultable))
        for frame in self.frames(payloads):
            await self.send_raw(frame)

    def _held_trade(self) -> str | None:
        ids = self.outbox.held_ids
        return ids["instrument"] if ids and ids["kind"] == "trade" else None

    def start_streaming(self, market) -> None:
        """Authenticated: draw events from the account's market from now on."""
        rng = random.Random(f"{self.emu.options.seed}:{self.conn}:data")
        self.source = EventSource(market, self.subs, rng, self.feed.delay_ns, self.feed.crypto)

    async def _auth_deadline(self) -> None:
        await asyncio.sleep(self.settings.auth_timeout_s)
        if self.account is None and not self.ws.closed:
            async with self.lock:
                await self.auth_timed_out()

    async def _pump(self) -> None:
        plan, emu = self.emu.options.faults, self.emu
        rng = random.Random(f"{emu.options.seed}:{self.conn}:periodic")
        disconnect = emu.periodic(plan.disconnect_every, rng)
        stall = emu.periodic(plan.stall_every, rng)
        slow_at = time.monotonic() + plan.slow_client if plan.slow_client else None
        try:
            async for n in paced(emu.options.rate):
                if self.ws.closed:
                    return
                if slow_at is not None and time.monotonic() >= slow_at:
                    slow_at = None
                    async with self.lock:
                        await self.slow_client()
                if disconnect.fired():
                    await self._drop(plan.close_code)
                    return
                if stall.fired():
                    emu.journal.write("fault", self.conn, fault="stall", seconds=plan.stall_for)
                    await asyncio.sleep(plan.stall_for)
                    stall = emu.periodic(plan.stall_every, rng)  # the next one counts from the end
                    continue
                if self.source is not None:
                    async with self.lock:
                        await self.send_events(self.source.tick(n, self._held_trade))
        except ConnectionResetError:  # the client went away mid-send; serve() journals it
            return

    async def _drop(self, close_code: int) -> None:
        """The ``disconnect_every`` fault: a close frame with ``close_code``, or (0) a dead TCP connection."""
        self.outbox.abandon()
        if close_code:
            await self.close("fault", close_code)
            return
        self.close_reason, self.close_code = "fault", 1006
        transport = self.request.transport
        if transport is not None:
            transport.abort()
