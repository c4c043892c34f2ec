"""Coinbase Advanced Trade WebSocket emulator (``tickpipe emulate coinbase``).

Speaks the protocol of ``wss://advanced-trade-ws.coinbase.com`` on ``ws://HOST:PORT/``
(all channels) and of the user endpoint on ``ws://HOST:PORT/user`` (``heartbeats``,
``user``, ``futures_balance_summary`` only); see ``shared/protocols/coinbase.md``. A client
sends one channel per message, with a fresh JWT when it authenticates::

    {"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2","jwt":"eyJhbGciOiJFUzI1NiIs..."}

and gets a ``subscriptions`` ack listing the whole subscription set, then a snapshot and
updates (``level2`` answers on channel ``l2_data`` with sides ``bid``/``offer``). A JWT,
whenever present, is verified (:mod:`.coinbase_jwt`) and is required for ``user`` and
``futures_balance_summary``; a bad one, and any unknown channel, gets
``{"type":"error","message":"authentication failure"}``. Unknown product ids are dropped
from the ack silently. No subscribe within 5 s closes the connection.

Market data is one shared market per emulator: ``rate`` market events per second (each
1-3 trades of one subscribed product, and the book changes they cause) fan out to every
connection subscribed to that product, so trade ids per product only grow and every
``level2`` subscriber sees every book change.

Faultable frames: every enveloped frame (data, heartbeats, status, user) carries the
per-connection ``sequence_num``, so all of them are faultable at connection scope; the
``subscriptions`` acks only when ``fault_acks`` is on (handshake replies). Error frames
carry no sequence number and are never faulted. The other faults:

| fault | here |
| --- | --- |
| disconnect_every / close_code | close with that code (0: drop TCP, journaled as 1006) |
| stall_every / stall_for | the connection's writer pauses; frames queue up, none are lost |
| slow | delay before answering each subscribe/unsubscribe |
| auth_fail | the first N JWT checks (all with -1) fail with ``authentication failure`` |
| token_expiry | that long after the first accepted JWT: ``authentication failure``, close 1008 |
| slow_client | that long after connect: error ``slow_client_message``, close 1008 |
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import orjson
from aiohttp import WSMsgType, web

from tickpipe.config import Secret, setting
from tickpipe.emulators.base import Emulator, EmulatorOptions, paced
from tickpipe.emulators.coinbase_jwt import JwtRejected, JwtVerifier, load_public_keys
from tickpipe.emulators.coinbase_market import CANDLE_S, CoinbaseMarket
from tickpipe.emulators.coinbase_session import CoinbaseSession
from tickpipe.emulators.coinbase_user import futures_balance_summary

CHANNELS = ("heartbeats", "candles", "status", "ticker", "ticker_batch", "level2", "market_trades",
            "user", "futures_balance_summary")
USER_ENDPOINT_CHANNELS = ("heartbeats", "user", "futures_balance_summary")
AUTH_CHANNELS = ("user", "futures_balance_summary")
NO_PRODUCT_CHANNELS = ("heartbeats", "futures_balance_summary")
AUTH_FAILURE = "authentication failure"
HIGH_WATER = 500    # frames queued for one connection before the market waits for it


@dataclass(frozen=True)
class CoinbaseEmulatorSettings:
    key_name: Secret | None = setting(None, help="CDP API key name the JWT kid and sub must equal (unset: any)")
    public_keys: Secret | None = setting(
        None, help="PEM public key(s), P-256 and/or Ed25519, JWT signatures must verify against "
                   "(unset: any well-formed JWT is accepted)")
    send_client_id: bool = setting(True, help='send "client_id":"" in every frame (docs: yes; 2026 live frames: absent)')
    subscribe_deadline_s: float = setting(5.0, minimum=0, help="close a connection with no subscribe after this long (0: never)")
    jwt_lifetime_s: float = setting(120.0, minimum=1, help="longest accepted JWT lifetime (exp - nbf)")
    trades_newest_first: bool = setting(True, help="list the trades inside one market_trades frame newest first")
    fault_acks: bool = setting(False, help="let drop/reorder/duplicate/malformed faults hit subscriptions acks too")
    error_closes: bool = setting(False, help="close the socket after every error frame (unconfirmed)")
    idle_close_s: float = setting(90.0, minimum=0, help="close a connection without heartbeats after this long with nothing sent (0: never)")
    messages_per_s: float = setting(0.0, minimum=0, help="client messages per second per connection before 'rate limit exceeded' (docs: 8 per IP; 0: off)")
    connections_per_s: float = setting(0.0, minimum=0, help="websocket upgrades per second per client IP before HTTP 429 (docs: 8; 0: off)")
    ticker_batch_s: float = setting(5.0, minimum=0.05, help="ticker_batch interval")
    status_every_s: float = setting(30.0, minimum=0.05, help="status update interval")
    user_update_s: float = setting(2.0, minimum=0.05, help="interval of user-channel order updates")
    candle_s: int = setting(CANDLE_S, minimum=1, help="candle length in seconds (Coinbase: 300)")
    slow_client_message: str = setting("slow consumer: connection closed", help="error text of the slow_client fault (unconfirmed)")


class CoinbaseEmulator(Emulator):
    provider = "coinbase"
    default_symbols = ("BTC-USD", "ETH-USD", "SOL-USD")
    settings_class = CoinbaseEmulatorSettings

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        super().__init__(options)
        self.settings: CoinbaseEmulatorSettings = self.options.credentials or CoinbaseEmulatorSettings()
        s = self.settings
        keys = load_public_keys(s.public_keys.reveal()) if s.public_keys else None
        self.verifier = JwtVerifier(keys, s.key_name.reveal() if s.key_name else None, s.jwt_lifetime_s)
        self.market = CoinbaseMarket(self.symbols, self.options.seed, s.candle_s)
        self.sessions: list[CoinbaseSession] = []
        self._auth_attempts = 0
        self._upgrades: dict[str, deque] = {}   # client IP -> recent upgrade times
        self._demand = asyncio.Event()
        self._market_task: asyncio.Task | None = None

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self._websocket)
        app.router.add_get("/user", self._websocket)

    # ----- connection -----
    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        upgrades = self._upgrades.setdefault(request.remote or "", deque())
        if _over_limit(upgrades, self.settings.connections_per_s):
            self.journal.write("rejected", None, peer=request.remote, status=429)
            return web.Response(status=429, text="too many connections\n")
        ws = web.WebSocketResponse(max_msg_size=4 * self.options.max_frame_bytes, compress=False)
        await ws.prepare(request)
        conn = self.new_connection(path=request.path, peer=request.remote)
        session = CoinbaseSession(self, ws, request, conn, user_endpoint=request.path == "/user")
        self.track_socket(ws)
        self.sessions.append(session)
        if self._market_task is None:
            self._market_task = self.spawn(self._market_loop())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._on_text(session, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._reject(session, "failure to parse message", "binary frame")
        finally:
            session.stop()
            self.sessions.remove(session)
            self.untrack_socket(ws)
            reason = session.close_reason or ("shutdown" if self.stopping.is_set() else "client")
            code = ws.close_code if session.close_code is None else (session.close_code or 1006)
            self.journal.write("disconnect", conn, reason=reason, code=code)
        return ws

    def _reject(self, session: CoinbaseSession, message: str, why: str) -> None:
        self.journal.write("bad_input", session.conn, reason=why)
        self.log.info("client message rejected", conn=session.conn, reason=why)
        session.error(message)

    async def _on_text(self, s: CoinbaseSession, text: str) -> None:
        if len(text) > self.options.max_frame_bytes:
            self._reject(s, "message too large", f"{len(text)} characters")
            s.close("oversize", 1009)
            return
        if _over_limit(s.msg_times, self.settings.messages_per_s):
            self._reject(s, "rate limit exceeded", "too many messages")
            return
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError:
            return self._reject(s, "failure to parse message", "not JSON")
        if not isinstance(doc, dict) or doc.get("type") not in ("subscribe", "unsubscribe"):
            kind = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
            return self._reject(s, "unknown message type", f"type {str(kind)[:40]!r}")
        channel = doc.get("channel")
        allowed = USER_ENDPOINT_CHANNELS if s.user_endpoint else CHANNELS
        if not isinstance(channel, str) or channel not in allowed:
            return self._reject(s, AUTH_FAILURE, f"unknown channel {str(channel)[:40]!r}")
        products = doc.get("product_ids") or []
        if not isinstance(products, list) or not all(isinstance(p, str) for p in products):
            return self._reject(s, "product_ids must be an array of strings", "bad product_ids")
        token = doc.get("jwt")
        if (token is not None or channel in AUTH_CHANNELS) and not self._authenticate(s, token):
            return s.error(AUTH_FAILURE)
        await self.slow()
        if doc["type"] == "subscribe":
            self._subscribe(s, channel, products)
        else:
            self._unsubscribe(s, channel, products)

    def _authenticate(self, s: CoinbaseSession, token: object) -> bool:
        self._auth_attempts += 1
        fail = self.options.faults.auth_fail
        if fail < 0 or self._auth_attempts <= fail:
            self.journal.write("fault", s.conn, fault="auth_fail", attempt=self._auth_attempts)
            return False
        try:
            self.verifier.verify(token)
        except JwtRejected as exc:
            self.journal.write("auth", s.conn, ok=False, reason=str(exc))
            self.log.info("jwt rejected", conn=s.conn, reason=str(exc))
            return False
        self.journal.write("auth", s.conn, ok=True)
        if s.auth_at is None:
            s.auth_at = time.monotonic()
        return True

    # ----- subscriptions -----
    def _subscribe(self, s: CoinbaseSession, channel: str, products: list[str]) -> None:
        s.subscribed = True
        valid = [p for p in dict.fromkeys(products) if p in self.market.products]
        if channel in NO_PRODUCT_CHANNELS:
            s.subs.setdefault(channel, [])
        elif valid or channel == "user":   # a product channel with no known product is not subscribed at all
            current = s.subs.setdefault(channel, [])
            current.extend(p for p in valid if p not in current)
        s.subscriptions_ack()
        self._snapshots(s, channel, valid)
        self._demand.set()

    def _unsubscribe(self, s: CoinbaseSession, channel: str, products: list[str]) -> None:
        if not products or channel in NO_PRODUCT_CHANNELS:
            s.subs.pop(channel, None)
        elif channel in s.subs:
            s.subs[channel] = [p for p in s.subs[channel] if p not in products]
            if not s.subs[channel]:
                del s.subs[channel]
        s.subscriptions_ack()

    def _snapshots(self, s: CoinbaseSession, channel: str, products: list[str]) -> None:
        m = self.market
        if channel == "user":
            for event in s.user_account(products).snapshot_events():
                s.frame("user", [event], {"kind": "user_snapshot", "orders": len(event["orders"])})
        elif channel == "futures_balance_summary":
            s.frame(channel, [futures_balance_summary()], {"kind": "balance_snapshot"})
        elif not products:
            return
        elif channel == "status":
            s.frame("status", [{"type": "snapshot", "products": [m.status_product(p) for p in products]}],
                    {"kind": "status_snapshot", "instruments": products})
        elif channel in ("ticker", "ticker_batch"):
            tickers = [m.ticker(p, batch=channel == "ticker_batch") for p in products]
            s.frame(channel, [{"type": "snapshot", "tickers": tickers}], {"kind": f"{channel}_snapshot", "instruments": products})
        elif channel == "level2":
            for p in products:
                s.frame("l2_data", [{"type": "snapshot", "product_id": p, "updates": m.book_snapshot(p)}],
                        {"kind": "l2_snapshot", "instrument": p})
        elif channel == "market_trades":
            trades = sorted((t for p in products for t in m.recent_trades(p)), key=lambda t: -t.ts_ns)
            s.frame(channel, [{"type": "snapshot", "trades": [m.trade_json(t) for t in trades]}],
                    {"kind": "trades_snapshot", "trade_ids": [t.trade_id for t in trades]})
        elif channel == "candles":
            candles = [c for c in (m.candle(p) for p in products) if c is not None]
            s.frame(channel, [{"type": "snapshot", "candles": candles}], {"kind": "candles_snapshot", "instruments": products})

    # ----- the shared market -----
    def _wanted_products(self) -> list[str]:
        wanted = {p for s in self.sessions for ch in ("market_trades", "ticker", "ticker_batch", "level2", "candles")
                  for p in s.subs.get(ch, ())}
        return [p for p in self.market.products if p in wanted]

    async def _market_loop(self) -> None:
        rng = self.market.sim.rng
        async for due in paced(self.options.rate):
            for n in range(due):
                if n % 32 == 31:
                    await asyncio.sleep(0)   # as fast as possible, but let the connections' writers run
                products = self._wanted_products()
                if not products:
                    self._demand.clear()
                    await self._demand.wait()
                    break
                if any(s.backlog > HIGH_WATER for s in self.sessions):
                    await asyncio.sleep(0.005)
                    break
                self._market_event(rng.choice(products), rng.randint(1, 3))

    def _market_event(self, product: str, count: int) -> None:
        now = time.time_ns()
        trades = self.market.trades(product, count, now)
        book = self.market.book_updates(product, now)
        listed = trades[::-1] if self.settings.trades_newest_first else trades
        trade_event = {"type": "update", "trades": [self.market.trade_json(t) for t in listed]}
        trade_ids = [t.trade_id for t in trades]
        ticker = self.market.ticker(product)
        for s in self.sessions:
            if product in s.subs.get("market_trades", ()):
                s.frame("market_trades", [trade_event],
                        {"kind": "trades", "instrument": product, "trade_ids": trade_ids, "event_ns": now})
            if product in s.subs.get("ticker", ()):
                s.frame("ticker", [{"type": "update", "tickers": [ticker]}],
                        {"kind": "ticker", "instrument": product, "trade_id": trade_ids[-1], "event_ns": now})
            if book and product in s.subs.get("level2", ()):
                s.frame("l2_data", [{"type": "update", "product_id": product, "updates": book}],
                        {"kind": "l2", "instrument": product, "levels": len(book), "event_ns": now})


def _over_limit(stamps: deque, per_second: float) -> bool:
    """Count one more event in ``stamps`` (a one-second window); True when it exceeds ``per_second``."""
    if not per_second:
        return False
    now = time.monotonic()
    while stamps and now - stamps[0] > 1.0:
        stamps.popleft()
    stamps.append(now)
    return len(stamps) > per_second
