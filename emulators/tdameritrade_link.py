"""One streamer WebSocket connection: requests in, responses/notify/data out, faults applied.

Three loops per connection: the reader (client requests), the data pump (paced market
events: each event is a trade or a quote change on one subscribed key, sent to every
service subscribed to that key) and the supervisor (heartbeats, periodic disconnects and
stalls, slow-client and empty-subscription stops, token expiry). A data frame::

    {"data": [{"service": "TIMESALE_EQUITY", "timestamp": 1590599684000, "command": "SUBS",
               "content": [{"seq": 43, "key": "MSFT", "1": 1590599683785, "2": 179.64, "3": 100.0, "4": 111626}]}]}
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from tickpipe.emulators.base import paced
from tickpipe.emulators.streamer_fields import SCHWAB, SEQUENCE, WHOLE, delivery
from tickpipe.emulators.tdameritrade_records import (asset_of, book_values, chart_values, image_extras,
                                                     level_one_values, render, screener_values, timesale_values)
from tickpipe.emulators.tdameritrade_session import RequestError, StreamerSession, check_request, parse_frame

ONE_SESSION_MSG = ("This Streamer was disconnected because of another connection for this username and password. "
                   "Each user may only have one Streamer open at a time.")


class StreamerLink:
    def __init__(self, emu, ws: web.WebSocketResponse, request: web.Request, conn: int) -> None:
        self.emu, self.ws, self.request, self.conn = emu, ws, request, conn
        self.settings = emu.settings
        self.session = StreamerSession(emu.flavour, self.settings.symbol_limit)
        self.outbox = emu.outbox(conn)
        self.rng = random.Random(emu.options.seed * 7919 + conn)
        self.lock = asyncio.Lock()
        self.closed = False
        self.login_at: float | None = None
        self.login_token: str | None = None
        self.stalled_until = 0.0

    # ----- output -----
    async def send(self, frame: Any) -> None:
        if self.closed or self.ws.closed:
            return
        async with self.lock:
            try:
                if isinstance(frame, bytes):
                    await self.ws.send_bytes(frame)
                else:
                    await self.ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())
            except ConnectionError:   # the peer went away mid-send: the reader loop ends the connection
                pass

    async def notify(self, service: str, code: int, msg: str) -> None:
        await self.send({"notify": [{"service": service, "timestamp": time.time_ns() // 1_000_000,
                                     "content": {"code": code, "msg": msg}}]})

    async def close(self, reason: str, code: int = 1000) -> None:
        """Journal and close; code 0 drops the TCP connection without a close frame."""
        if self.closed:
            return
        self.closed = True
        self.outbox.abandon()
        self.emu.journal.write("disconnect", self.conn, reason=reason, code=code or 1006)
        if code == 0 and self.request.transport is not None:
            self.request.transport.abort()
        else:
            await self.ws.close(code=code, message=reason.encode()[:120])

    # ----- main loop -----
    async def run(self) -> None:
        tasks = [self.emu.spawn(self.pump()), self.emu.spawn(self.supervise())]
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self.on_frame(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await self.send(self.session.response({}, 21, "Bad command formatting: binary frames are not accepted"))
                if self.closed:
                    break
        finally:
            for task in tasks:
                task.cancel()
            if not self.closed:
                self.closed = True
                self.outbox.abandon()
                self.emu.journal.write("disconnect", self.conn, reason="client closed", code=self.ws.close_code)
            self.emu.forget(self)

    async def on_frame(self, text: str) -> None:
        try:
            requests = parse_frame(text, self.emu.options.max_frame_bytes)
        except RequestError as exc:
            await self.send(self.session.response({}, exc.code, exc.msg))
            return
        for req in requests:
            await self.emu.slow()
            if self.closed:
                return
            try:
                await self.on_request(check_request(req))
            except RequestError as exc:
                await self.send(self.session.response(req, exc.code, exc.msg))
            except Exception as exc:  # a bug must cost one request, never the server
                self.emu.log.error("request failed", conn=self.conn, error=f"{type(exc).__name__}: {exc}")
                await self.send(self.session.response(req, 9, "UNKNOWN_FAILURE"))

    async def on_request(self, req: dict) -> None:
        service, command = str(req["service"]), str(req["command"])
        if service == "ADMIN" and command == "LOGIN":
            await self.login(req)
        elif self.session.user is None:
            raise RequestError(20, "Stream connection not found: LOGIN first")
        elif service == "ADMIN" and command == "LOGOUT":
            await self.send(self.session.response(req, 0, "SUCCESS"))
            await self.close("logout")
        elif service == "CHART_HISTORY_FUTURES" and command == "GET" and delivery(self.emu.flavour, service):
            await self.send(self.session.response(req, 0, "GET command succeeded"))
            await self.send(self.emu.chart_history(req))
        else:
            await self.send(self.session.response(req, 0, self.session.apply(req)))
            await self.announce()

    async def login(self, req: dict) -> None:
        outcome = self.emu.authenticate(req, self.conn)
        if isinstance(outcome, Exception):
            await self.send(self.session.response(req, 3, str(outcome)))
            await self.close("login denied")
            return
        user, token = outcome
        other = self.emu.sessions.get(user)
        if other is not None and other is not self and not other.closed:
            if self.settings.second_connection == "reject_new":
                await self.send(self.session.response(req, 12, ONE_SESSION_MSG))
                await self.close("second connection")
                return
            await other.notify("ADMIN", 12, ONE_SESSION_MSG)
            await other.close("replaced by a newer connection")
        self.emu.sessions[user] = self
        self.session.user, self.login_token = user, token
        self.login_at = self.session.empty_since = time.monotonic()
        msg = "server=s0166bdv-1;status=NP" if self.emu.flavour == SCHWAB else "08-4"
        await self.send(self.session.response(req, 0, msg))

    # ----- data -----
    async def pump(self) -> None:
        async for due in paced(self.emu.options.rate):
            if self.closed:
                return
            if self.session.user is None or time.monotonic() < self.stalled_until:
                continue
            for i in range(due):
                subs = self.session.subscribed()
                if not subs or self.closed:
                    break
                await self.event(self.rng.choice(subs)[1], subs)
                if i % 16 == 15:
                    await self.backpressure()

    async def backpressure(self, limit: int = 1 << 18) -> None:
        """Let the reader run, and wait while the socket's send buffer is full (rate 0 = as fast as the client reads)."""
        await asyncio.sleep(0)
        transport = self.request.transport
        while transport is not None and not self.closed and transport.get_write_buffer_size() > limit:
            await asyncio.sleep(0.005)

    async def announce(self) -> None:
        """First records right after SUBS/ADD: level-one images, books, account-activity greeting."""
        pending, self.session.announce = self.session.announce, []
        for service, key in pending:
            if service == "ACCT_ACTIVITY":
                record = {"seq": self.session.next_seq(service, key), "key": key,
                          "1": self.emu.identity.account_id, "2": "SUBSCRIBED", "3": ""}
                await self.emit(service, key, record, {"kind": "account_activity"}, False)
            elif delivery(self.emu.flavour, service) != SEQUENCE:
                await self.emit_service(service, key, None, None)

    async def event(self, key: str, subs: list[tuple[str, str, str]]) -> None:
        services = [svc for svc, k, _ in subs if k == key]
        asset = asset_of(services[0])
        market = self.emu.market
        market.instrument(key, asset)
        trade = bar = None
        if self.rng.random() < 0.6:
            trade, bar = market.trade(key, asset)
        else:
            market.sim.book_changes(key)
        for service in services:
            await self.emit_service(service, key, trade, bar)

    async def emit_service(self, service: str, key: str, trade, bar) -> None:
        flavour, session, market = self.emu.flavour, self.session, self.emu.market
        sub = session.subs.get(service)
        if sub is None or key not in sub.keys:
            return
        fields, kind = sub.fields, delivery(flavour, service)
        asset = asset_of(service)
        market.instrument(key, asset)
        base = {"service": service, "instrument": key}
        if session.is_change(service):
            values = level_one_values(market, key, asset)
            record = session.cache.record(flavour, service, key, values, fields,
                                          image_extras(key, asset, self.settings.delayed))
            if record is not None:
                await self.emit(service, key, record, {"kind": "quote", **base}, False)
        elif service.startswith("TIMESALE") and trade is not None:
            record = {"key": key, **render(flavour, service, timesale_values(trade), fields)}
            ids = {"kind": "trade", **base, "trade_id": trade.trade_id, "event_ns": trade.ts_ns}
            if service != "TIMESALE_OPTIONS":   # captures show no seq there
                record = {"seq": session.next_seq(service, key), **record}
                ids["product_seq"] = record["seq"]
            await self.emit(service, key, record, ids, True)
        elif service.startswith("CHART_") and bar is not None:
            seq = session.next_seq(service, key)
            values = chart_values(bar, self.settings.chart_sequence_base_min)
            record = {"seq": seq, "key": key, **render(flavour, service, values, fields)}
            await self.emit(service, key, record, {"kind": "bar", **base, "product_seq": seq,
                                                   "event_ns": bar.start_ns}, True)
        elif service.endswith("_BOOK"):
            record = {"key": key, **render(flavour, service, book_values(market, key), fields)}
            await self.emit(service, key, record, {"kind": "book", **base}, False)
        elif service.startswith("SCREENER_"):
            record = {"key": key, **render(flavour, service, screener_values(market, key), fields)}
            await self.emit(service, key, record, {"kind": "screener", **base}, False)
        elif kind == WHOLE and service not in ("CHART_HISTORY_FUTURES",):
            record = self.emu.misc_record(service, key, fields)
            if record is not None:
                await self.emit(service, key, record, {"kind": service.lower(), **base}, False)

    async def emit(self, service: str, key: str, record: dict, ids: dict, faultable: bool) -> None:
        command = self.session.subs[service].keys.get(key, "SUBS") if service in self.session.subs else "SUBS"
        frame = orjson.dumps({"data": [{"service": service, "timestamp": time.time_ns() // 1_000_000,
                                        "command": command, "content": [record]}]}).decode()
        for payload in self.outbox.push(frame, ids, faultable=faultable):
            await self.send(payload)

    # ----- supervision -----
    async def supervise(self, tick: float = 0.05) -> None:
        plan, settings = self.emu.options.faults, self.settings
        disconnect = self.emu.periodic(plan.disconnect_every, self.rng)
        stall = self.emu.periodic(plan.stall_every, self.rng)
        next_heartbeat = 0.0
        while not self.closed:
            await asyncio.sleep(tick)
            now = time.monotonic()
            if self.session.user is None:
                continue
            if disconnect.fired():
                await self.close("fault", plan.close_code)
                return
            if now >= self.stalled_until and stall.fired() and plan.stall_for > 0:
                self.emu.journal.write("fault", self.conn, fault="stall", seconds=plan.stall_for)
                self.stalled_until = now + plan.stall_for
                stall.due += plan.stall_for          # the next stall is counted from the end of this one
            if now < self.stalled_until:
                continue
            if plan.slow_client and now - self.login_at >= plan.slow_client:
                self.emu.journal.write("fault", self.conn, fault="slow_client", seconds=plan.slow_client)
                await self.stop_streaming("Stop streaming due to slow client")
                return
            empty = self.session.empty_since
            if settings.empty_stop_s and empty is not None and now - empty >= settings.empty_stop_s:
                await self.stop_streaming("Stop streaming due to empty subscription")
                return
            if settings.drop_on_token_expiry and self.emu.tokens.state(self.login_token or "") == "expired":
                await self.notify("ADMIN", 3, "Login Denied.: token is invalid or has expired.")
                await self.close("token expired")
                return
            if settings.heartbeat_s and now >= next_heartbeat:
                next_heartbeat = now + settings.heartbeat_s
                await self.send({"notify": [{"heartbeat": str(time.time_ns() // 1_000_000)}]})

    async def stop_streaming(self, msg: str) -> None:
        await self.notify("ADMIN", 30, msg)
        await self.close(msg.lower())
