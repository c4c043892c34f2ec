"""``tickpipe emulate coinbase-exchange``: the Coinbase Exchange websocket feed on loopback.

Websocket at ``/`` (subscribe/unsubscribe, optional HMAC-signed auth) and REST on the same
port: ``GET /products/<id>/book?level=1|2|3`` (with the product ``sequence``, consistent with
the stream, for resync), ``GET /products/<id>/trades?limit=&after=`` (backfill, newest first)
and ``GET /time``. One :class:`ExchangeEngine` is shared by all connections, so ``sequence``
is per product and engine-wide as on the real feed. Channels:
heartbeat, status, ticker, ticker_batch (ticker_1000), level2, level2_batch (level2_50),
matches (+ last_match), full, level3; user/balance/auctionfeed/rfq_matches are accepted
(auth as configured) but carry no data.

Faultable messages (``--faults`` drop/reorder/duplicate/malformed apply): full-channel
events and level3 arrays (contiguous product ``sequence``), ``match`` on the matches
channel and ``ticker`` (contiguous ``trade_id``). Not faultable: acks, errors, heartbeat,
status, snapshot, l2update (level2 promises delivery), last_match and the initial or
batched ticker. A ticker and the match of one trade share one ``sequence``.
"""

from __future__ import annotations

import asyncio
import time

import orjson
from aiohttp import WSMsgType, web

from tickpipe.emulators import coinbase_exchange_frames as frames
from tickpipe.emulators.base import Emulator, EmulatorOptions
from tickpipe.emulators.coinbase_exchange_engine import ExchangeEngine, iso_time
from tickpipe.emulators.coinbase_exchange_protocol import (
    AUTH_REQUIRED_REASON, BAD_AUTH, UNAUTHORIZED, CoinbaseExchangeEmulatorSettings, Request, ack, check_auth,
    error, has_auth_fields, parse_request)
from tickpipe.emulators.coinbase_exchange_session import Session, TokenBucket
from tickpipe.emulators.coinbase_exchange_stream import ExchangeStream, every


class CoinbaseExchangeEmulator(Emulator):
    provider = "coinbase-exchange"
    default_symbols = ("BTC-USD", "ETH-USD", "SOL-USD")
    settings_class = CoinbaseExchangeEmulatorSettings

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        super().__init__(options)
        self.settings: CoinbaseExchangeEmulatorSettings = self.options.credentials or CoinbaseExchangeEmulatorSettings()
        self.engine = ExchangeEngine(self.symbols, seed=self.options.seed)
        self.sessions: set[Session] = set()
        self.stream = ExchangeStream(self.engine, self.sessions, self.options.rate, self.settings.send_queue_cap)
        self.connects = TokenBucket(self.settings.connects_per_s, self.settings.connect_burst)
        self.rest_calls = TokenBucket(self.settings.rest_per_s, self.settings.rest_burst)
        self.auth_attempts = 0

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.handle_ws)
        app.router.add_get("/products/{pid}/book", self.handle_book)
        app.router.add_get("/products/{pid}/trades", self.handle_trades)
        app.router.add_get("/time", self.handle_time)

    async def start(self) -> "CoinbaseExchangeEmulator":
        await super().start()
        self.spawn(self._guarded("engine", self.stream.run()))
        self.spawn(self._guarded("level2_batch", every(self.settings.level2_batch_ms / 1000, self.stream.flush_level2_batch)))
        self.spawn(self._guarded("ticker_batch", every(self.settings.ticker_batch_s, self.stream.flush_ticker_batch)))
        return self

    # ----- REST -----
    async def _product(self, request: web.Request) -> tuple[str, web.Response | None]:
        """The product of a REST call, or the provider's refusal (rate limit, unknown product)."""
        await self.slow()
        pid = request.match_info["pid"]
        if not self.rest_calls.take():
            return pid, web.json_response({"message": "Public rate limit exceeded"}, status=429)
        if pid not in self.engine.products:
            return pid, web.json_response({"message": "NotFound"}, status=404)
        return pid, None

    async def handle_book(self, request: web.Request) -> web.Response:
        pid, refusal = await self._product(request)
        if refusal is not None:
            return refusal
        level = request.query.get("level", "1")
        if level not in ("1", "2", "3"):
            return web.json_response({"message": "Invalid level"}, status=400)
        return web.Response(body=orjson.dumps(frames.rest_book(self.engine, pid, int(level))),
                            content_type="application/json")

    async def handle_trades(self, request: web.Request) -> web.Response:
        pid, refusal = await self._product(request)
        if refusal is not None:
            return refusal
        try:
            limit = int(request.query.get("limit", "100"))
            after = int(request.query["after"]) if "after" in request.query else None
        except ValueError:
            return web.json_response({"message": "Invalid limit or after"}, status=400)
        if not 1 <= limit <= 1000:
            return web.json_response({"message": "Invalid limit"}, status=400)
        page = frames.rest_trades(self.engine, pid, limit, after)
        headers = {"CB-BEFORE": str(page[0]["trade_id"]), "CB-AFTER": str(page[-1]["trade_id"])} if page else {}
        return web.Response(body=orjson.dumps(page), content_type="application/json", headers=headers)

    async def handle_time(self, request: web.Request) -> web.Response:
        now = time.time_ns()
        return web.json_response({"iso": iso_time(now), "epoch": now / 1e9})

    # ----- websocket -----
    async def handle_ws(self, request: web.Request) -> web.StreamResponse:
        if not self.connects.take():
            return web.json_response({"message": "Too Many Requests"}, status=429)
        ws = web.WebSocketResponse(compress=True, max_msg_size=self.options.max_frame_bytes * 4, autoping=True,
                                   heartbeat=self.settings.server_ping_s or None)
        if not ws.can_prepare(request).ok:
            return web.json_response({"message": "websocket upgrade required"}, status=400)
        await ws.prepare(request)
        conn = self.new_connection(path=request.path, remote=request.remote)
        session = Session(conn, ws, request, self.outbox(conn), self.journal, self.settings.send_queue_cap)
        self.sessions.add(session)
        self.track_socket(ws)
        tasks = [self.spawn(self._guarded("sender", session.run_sender(), session)),
                 self.spawn(self._guarded("monitor", self._monitor(session), session))]
        inbound = TokenBucket(self.settings.inbound_per_s, self.settings.inbound_burst)
        try:
            async for msg in ws:
                if session.closed:
                    break
                if msg.type == WSMsgType.ERROR:
                    break
                if not inbound.take():
                    await session.close("ErrSlowRead", self.settings.error_close_code,
                                        error("ErrSlowRead", "client is sending too many messages"))
                    break
                await self._on_client_frame(session, msg.data)
        finally:
            self.sessions.discard(session)
            self.untrack_socket(ws)
            session.client_gone()
            for task in tasks:
                task.cancel()
        return ws

    async def _on_client_frame(self, session: Session, data) -> None:
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.options.max_frame_bytes:
            await session.close("Message too big", 1009, error("Message too big", f"{size} bytes"))
            return
        try:
            msg = orjson.loads(data)
        except orjson.JSONDecodeError:
            msg = None
        await self.slow()
        req = parse_request(msg, set(self.engine.products), self.settings)
        if isinstance(req, dict):
            self.log.info("client frame rejected", conn=session.conn, reason=req["reason"])
            session.send(req, {"kind": "error"})
            return
        session.subscribed = session.subscribed or req.kind == "subscribe"
        signed = await self._authenticate(session, msg)
        if signed is None:
            return
        for reason in req.errors:
            session.send(error(req.failure, reason), {"kind": "error"})
        if req.kind == "subscribe":
            self._subscribe(session, req, signed)
        else:
            self._unsubscribe(session, req)

    async def _authenticate(self, session: Session, msg: dict) -> bool | None:
        """True/False: signed or not; None: the request was refused with an auth error."""
        if not has_auth_fields(msg):
            return session.authenticated and self.settings.auth_carries_over
        self.auth_attempts += 1
        plan = self.options.faults
        refusal = check_auth(msg, self.settings, time.time())
        if refusal is None and (plan.auth_fail < 0 or self.auth_attempts <= plan.auth_fail):
            self.journal.write("fault", session.conn, fault="auth_fail", attempt=self.auth_attempts)
            refusal = error(BAD_AUTH, "invalid signature")
        if refusal is not None:
            self.log.info("auth refused", conn=session.conn, reason=refusal["reason"])
            if self.settings.bad_auth == "downgrade":
                return False
            session.send(refusal, {"kind": "error"})
            return None
        session.authenticated = True
        if plan.token_expiry and session.auth_expires is None:
            session.auth_expires = time.monotonic() + plan.token_expiry
        return True

    def _subscribe(self, session: Session, req: Request, signed: bool) -> None:
        added, refused = [], False
        for name, ids in req.channels.items():
            if name in self.settings.auth_channels and not signed:
                refused = True
                continue
            current = session.subs.setdefault(name, set())
            added += [(name, pid) for pid in sorted(ids - current)] or ([(name, "")] if name == "status" else [])
            current |= ids
        if refused:
            session.send(error(req.failure, AUTH_REQUIRED_REASON), {"kind": "error"})
        session.send(ack(session.subs, self.settings.ack_account_ids), {"kind": "subscriptions"})
        for name, pid in added:
            self._initial(session, name, pid)

    def _unsubscribe(self, session: Session, req: Request) -> None:
        for name, ids in req.channels.items():
            if name in session.subs:
                session.subs[name] -= ids
                if not ids or not session.subs[name]:
                    del session.subs[name]
        session.send(ack(session.subs, self.settings.ack_account_ids), {"kind": "subscriptions"})

    def _initial(self, session: Session, channel: str, pid: str) -> None:
        """What the feed sends once per new (channel, product)."""
        if channel in ("level2", "level2_50"):
            depth = self.settings.level2_batch_depth if channel == "level2_50" else 0
            session.send(frames.snapshot(self.engine, pid, self.settings.snapshot_time, depth),
                         {"kind": "snapshot", "instrument": pid})
        elif channel == "matches" and (match := frames.last_match(self.engine, pid)):
            session.send(match, frames.ids(match, "last_match"))
        elif channel in ("ticker", "ticker_1000") and (ticker := self.engine.products[pid].last_ticker):
            session.send(ticker, frames.ids(ticker, "ticker_initial"))
        elif channel == "status":
            session.send(frames.status(self.engine, self.settings.status_min_bytes), {"kind": "status"})
        elif channel == "level3" and (not session.level3_schema_sent or self.settings.level3_schema_per_subscribe):
            session.level3_schema_sent = True
            session.send({"type": "level3", "schema": frames.LEVEL3_SCHEMA}, {"kind": "level3_schema"})

    # ----- per-connection timers and faults -----
    async def _monitor(self, session: Session) -> None:
        plan, cfg, rng = self.options.faults, self.settings, session.outbox.rng
        disconnect = self.periodic(plan.disconnect_every, rng)
        stall = self.periodic(plan.stall_every, rng)
        next_heartbeat = next_status = time.monotonic() + cfg.heartbeat_interval_s
        next_unknown = time.monotonic() + cfg.unknown_type_every_s
        if cfg.status_interval_s:
            next_status = time.monotonic() + cfg.status_interval_s
        while not session.closed:
            await asyncio.sleep(0.05)
            now = time.monotonic()
            if not session.subscribed and now - session.started > cfg.subscribe_deadline_s:
                return await session.close("no subscribe within deadline", cfg.deadline_close_code)
            if session.overflowed:
                return await session.close("ErrSlowConsume", cfg.error_close_code, error("ErrSlowConsume", "too many queued messages"))
            if plan.slow_client and now - session.started > plan.slow_client:
                self.journal.write("fault", session.conn, fault="slow_client")
                return await session.close("ErrSlowConsume", cfg.error_close_code, error("ErrSlowConsume", "too many queued messages"))
            if session.auth_expires is not None and now > session.auth_expires:
                self.journal.write("fault", session.conn, fault="token_expiry")
                return await session.close("auth expired", cfg.error_close_code, error(UNAUTHORIZED, "request timestamp expired"))
            if disconnect.fired():
                self.journal.write("fault", session.conn, fault="disconnect", code=plan.close_code or 1006)
                return await session.close("fault", plan.close_code)
            if stall.fired():
                self.journal.write("fault", session.conn, fault="stall", seconds=plan.stall_for)
                session.stalled_until = now + plan.stall_for
            if now >= next_heartbeat:
                next_heartbeat = now + cfg.heartbeat_interval_s
                for pid in sorted(session.subs.get("heartbeat", ())):
                    beat = frames.heartbeat(self.engine, pid)
                    session.send(beat, {"kind": "heartbeat", "instrument": pid, "product_seq": beat["sequence"]})
            if cfg.unknown_type_every_s and session.subs and now >= next_unknown:
                next_unknown = now + cfg.unknown_type_every_s
                session.send({"type": "brand_new_type", "note": "clients must ignore unknown types"}, {"kind": "unknown_type"})
            if cfg.status_interval_s and "status" in session.subs and now >= next_status:
                next_status = now + cfg.status_interval_s
                session.send(frames.status(self.engine, cfg.status_min_bytes), {"kind": "status"})

    async def _guarded(self, what: str, coro, session: Session | None = None) -> None:
        """Run a background task; a socket error ends the connection, a bug is logged, never silent."""
        try:
            await coro
        except (ConnectionError, asyncio.TimeoutError) as exc:
            if session is not None:
                await session.close(f"{what}: {type(exc).__name__}", 1011)
        except Exception:
            self.log.exception("emulator task failed", task=what, conn=session.conn if session else None)
            if session is not None:
                await session.close(f"{what} failed", 1011)
