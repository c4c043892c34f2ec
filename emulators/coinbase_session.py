"""One client connection of the Coinbase Advanced Trade emulator: subscriptions, ordering, timers.

Everything a connection sends goes through one queue and one writer task, so the
per-connection ``sequence_num`` (assigned by the writer, before the fault outbox, so a
dropped frame leaves a hole) always follows send order. A frame as sent::

    {"channel":"heartbeats","client_id":"","timestamp":"2026-09-05T22:10:30.260465255Z",
     "sequence_num":4,"events":[{"current_time":"2026-09-05 22:10:30.25788961 +0000 UTC m=+3.2","heartbeat_counter":3}]}

The clock task sends heartbeats (1/s), candle updates (1/s), ``ticker_batch`` (every
``ticker_batch_s``), ``status`` and ``user`` updates, and fires the connection faults
(disconnect, stall, token expiry, slow client) plus the subscribe deadline and idle close.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING

import orjson
from aiohttp import web

from tickpipe.emulators.coinbase_market import go_time, rfc3339
from tickpipe.emulators.coinbase_user import PORTFOLIO_ID, UserAccount

if TYPE_CHECKING:
    from tickpipe.emulators.coinbase import CoinbaseEmulator

CLOCK_S = 0.05


class CoinbaseSession:
    def __init__(self, emu: "CoinbaseEmulator", ws: web.WebSocketResponse, request: web.Request,
                 conn: int, user_endpoint: bool) -> None:
        self.emu, self.ws, self.request, self.conn = emu, ws, request, conn
        self.settings = emu.settings
        self.user_endpoint = user_endpoint
        self.subs: dict[str, list[str]] = {}   # channel -> product ids, in subscription order
        self.queue: asyncio.Queue = asyncio.Queue()
        self.outbox = emu.outbox(conn)
        self.rng = emu.options.faults.rng(emu.options.seed, conn)
        self.seq = 0
        self.heartbeat_counter = 0
        self.started = time.monotonic()
        self.started_ns = time.time_ns()
        self.last_sent = self.started
        self.subscribed = False
        self.auth_at: float | None = None   # when the connection's first JWT-authenticated subscribe was accepted
        self.close_reason: str | None = None
        self.aborted = False  # a fault broke the connection: nothing queued is sent (or journaled) any more
        self.close_code: int | None = None
        self.stalled_until = 0.0
        self.msg_times: deque = deque()     # recent client message times, for the optional rate limit
        self.account: UserAccount | None = None
        self._sent_candles: dict[str, dict] = {}
        self._batched: dict[str, dict] = {}
        plan = emu.options.faults
        self._disconnect = emu.periodic(plan.disconnect_every, self.rng)
        self._stall = emu.periodic(plan.stall_every, self.rng)
        self._tasks = [emu.spawn(self._writer()), emu.spawn(self._clock())]

    # ----- queueing (any task) -----
    def frame(self, channel: str, events: list[dict], ids: dict, faultable: bool = True) -> None:
        """Queue one enveloped frame; ``ids`` names it in the journal (``seq`` is added when sent)."""
        if self.close_reason is None:
            self.queue.put_nowait(("frame", channel, events, ids, faultable))

    def error(self, message: str) -> None:
        """Queue Coinbase's un-enveloped error frame (no ``sequence_num``)."""
        if self.close_reason is None:
            self.queue.put_nowait(("error", message))
            if self.settings.error_closes:
                self.close("error", 1008)

    def close(self, reason: str, code: int) -> None:
        """Close after everything queued so far has been sent; ``code`` 0 drops TCP with no close frame."""
        if self.close_reason is None:
            self.close_reason, self.close_code = reason, code
            self.queue.put_nowait(("close", reason, code))

    def abort(self, reason: str, code: int) -> None:
        """Close now, dropping whatever is still queued (a fault: the connection just breaks)."""
        self.close_reason, self.close_code, self.aborted = reason, code, True
        self.emu.spawn(self._shut(code, reason))

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        self.outbox.abandon()

    @property
    def backlog(self) -> int:
        return 0 if time.monotonic() < self.stalled_until else self.queue.qsize()

    # ----- writer -----
    async def _writer(self) -> None:
        try:
            while True:
                item = await self.queue.get()
                if self.aborted:  # frames written after the close frame reach no client: not sent
                    return
                wait = self.stalled_until - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if item[0] == "frame":
                    await self._send_frame(*item[1:])
                    if self.seq % 64 == 0:
                        await asyncio.sleep(0)   # don't starve the reader (and clients sharing the loop)
                elif item[0] == "error":
                    self.emu.journal.write("error_reply", self.conn, message=item[1])
                    await self.ws.send_str(orjson.dumps({"type": "error", "message": item[1]}).decode())
                else:
                    await self._shut(item[2], item[1])
                    return
        except (ConnectionError, RuntimeError):
            pass  # the socket went away under us; the handler journals the disconnect

    async def _send_frame(self, channel: str, events: list[dict], ids: dict, faultable: bool) -> None:
        doc = {"channel": channel, "client_id": "", "timestamp": rfc3339(time.time_ns()),
               "sequence_num": self.seq, "events": events}
        if not self.settings.send_client_id:
            del doc["client_id"]
        ids = {**ids, "channel": channel, "seq": self.seq}
        self.seq += 1
        for payload in self.outbox.push(orjson.dumps(doc).decode(), ids, faultable):
            if isinstance(payload, bytes):
                await self.ws.send_bytes(payload)
            else:
                await self.ws.send_str(payload)
        self.last_sent = time.monotonic()

    async def _shut(self, code: int, reason: str) -> None:
        if code == 0:
            if self.request.transport is not None:
                self.request.transport.abort()
        else:
            await self.ws.close(code=code, message=reason.encode()[:120])

    # ----- clock -----
    async def _clock(self) -> None:
        next_second = self.started + 1.0
        next_batch = self.started + self.settings.ticker_batch_s
        next_status = self.started + self.settings.status_every_s
        next_user = self.started + self.settings.user_update_s
        while self.close_reason is None:
            await asyncio.sleep(CLOCK_S)
            now = time.monotonic()
            self._connection_faults(now)
            if now >= next_second:
                next_second += 1.0
                self._heartbeat()
                self._candles()
            if now >= next_batch:
                next_batch += self.settings.ticker_batch_s
                self._ticker_batch()
            if now >= next_status:
                next_status += self.settings.status_every_s
                if self.subs.get("status"):
                    self.frame("status", [{"type": "update", "products": [
                        self.emu.market.status_product(p) for p in self.subs["status"]]}], {"kind": "status"})
            if now >= next_user:
                next_user += self.settings.user_update_s
                self._user_update()

    def _connection_faults(self, now: float) -> None:
        plan, s, journal = self.emu.options.faults, self.settings, self.emu.journal
        if not self.subscribed and s.subscribe_deadline_s and now - self.started > s.subscribe_deadline_s:
            self.close("no_subscribe", 1000)
        elif s.idle_close_s and "heartbeats" not in self.subs and now - self.last_sent > s.idle_close_s:
            self.close("idle", 1000)
        elif self._disconnect.fired():
            code = plan.close_code
            journal.write("fault", self.conn, fault="disconnect", code=code or 1006, after_seq=self.seq - 1)
            self.abort("fault", code)
        elif self._stall.fired() and plan.stall_for > 0:
            journal.write("fault", self.conn, fault="stall", seconds=plan.stall_for, after_seq=self.seq - 1)
            self.stalled_until = now + plan.stall_for
        elif plan.token_expiry and self.auth_at is not None and now - self.auth_at > plan.token_expiry:
            journal.write("fault", self.conn, fault="token_expiry", seconds=plan.token_expiry)
            self.error("authentication failure")
            self.close("token_expiry", 1008)
        elif plan.slow_client and now - self.started > plan.slow_client:
            journal.write("fault", self.conn, fault="slow_client", seconds=plan.slow_client)
            self.error(s.slow_client_message)
            self.close("slow_client", 1008)

    def _heartbeat(self) -> None:
        if "heartbeats" in self.subs:
            now = time.time_ns()
            self.heartbeat_counter += 1
            self.frame("heartbeats", [{"current_time": go_time(now, self.started_ns),
                                       "heartbeat_counter": self.heartbeat_counter}],
                       {"kind": "heartbeat", "heartbeat_counter": self.heartbeat_counter, "event_ns": now})

    def _candles(self) -> None:
        for product in self.subs.get("candles", ()):
            candle = self.emu.market.candle(product)
            if candle is not None and candle != self._sent_candles.get(product):
                self._sent_candles[product] = candle
                self.frame("candles", [{"type": "update", "candles": [candle]}],
                           {"kind": "candle", "instrument": product, "start": candle["start"]})

    def _ticker_batch(self) -> None:
        changed = []
        for product in self.subs.get("ticker_batch", ()):
            ticker = self.emu.market.ticker(product, batch=True)
            if ticker != self._batched.get(product):
                self._batched[product] = ticker
                changed.append(ticker)
        if changed:
            self.frame("ticker_batch", [{"type": "update", "tickers": changed}],
                       {"kind": "ticker_batch", "instruments": [t["product_id"] for t in changed]})

    def _user_update(self) -> None:
        if "user" in self.subs and self.account is not None:
            event = self.account.fill_one()
            if event is not None:
                self.frame("user", [event], {"kind": "user", "order_id": event["orders"][0]["order_id"]})

    # ----- subscriptions -----
    def subscriptions_ack(self) -> None:
        listed = {ch: (["heartbeats"] if ch == "heartbeats" else
                       list(products) or ([PORTFOLIO_ID] if ch in ("user", "futures_balance_summary") else []))
                  for ch, products in self.subs.items()}
        self.frame("subscriptions", [{"subscriptions": listed}], {"kind": "subscriptions"},
                   faultable=self.settings.fault_acks)

    def user_account(self, products: list[str]) -> UserAccount:
        if self.account is None:
            market = self.emu.market
            chosen = products or list(market.products)
            self.account = UserAccount(chosen, {p: market.price(p) for p in chosen}, self.rng,
                                       rfc3339(time.time_ns(), 6))
        return self.account
