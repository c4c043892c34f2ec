"""Financefeast Stream API v1 emulator: token in the first message, then a price firehose.

Protocol: ``../shared/protocols/financefeast.md``. One path, ``/ws``; the client's first
message must be ``{"type":"authenticate","data":{"token":"pk_..."}}``; the server answers
``authenticated`` and then pushes ``price`` messages for every symbol (no subscriptions)::

    {"type":"price","data":{"date":"2021-09-29T09:35:53","price":3.0424,"volume":181123,"symbol":"NZB.NZ"}}

Errors are ``{"type":"error","data":{"message":...}}``; a failed login is followed by a close
(code configurable, default 1008: the provider's form is unconfirmed). WebSocket pings are
answered by aiohttp; a JSON ``{"type":"ping"}`` gets ``{"type":"pong"}`` (configurable).

Faultability: the feed has no sequence number, trade id or message id, so a *dropped* price
message cannot be detected by any consumer and the ``drop`` fault is not applied. The
emulator makes ``date`` strictly increasing per symbol (at least one second apart, so the
simulated clock runs ahead of wall time at high rates); a *reorder* therefore shows up as
an event-time regression and a *duplicate* as a repeated event time per symbol, and a
*malformed* frame fails to parse. A message held back for a swap is always followed by
the same symbol's next price, so every injected reorder is visible per symbol. So ``price`` messages are faultable for reorder,
duplicate and malformed only; ``authenticated``/``error``/``pong`` never are.
Other faults: ``auth_fail`` refuses logins with the bad-token error, ``slow`` delays the
login reply, ``disconnect_every``/``close_code`` and ``stall_every``/``stall_for`` as usual;
``token_expiry`` and ``slow_client`` do not apply (tokens never expire; no such error).
Each connection draws from one shared simulated market (the real service broadcasts the
same prices to every stream; with one stream per token the difference does not show).
Journal ids of a price: ``{"kind": "price", "instrument", "date", "event_ns"}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson
from aiohttp import WSMsgType, web

from tickpipe.config import ConfigError, Secret, setting
from tickpipe.emulators.base import Emulator, paced
from tickpipe.emulators.market import MarketSim

AUTHENTICATED = "You have been authenticated to the Stream api. Data stream now starts"
NOT_AUTHORISED = "Token not authorised. Please check your token and try again"
NO_ACCESS = "Your subscription plan has no access to the Stream API. Please upgrade your plan"
STREAM_LIMIT = "You are at your stream limit of {limit} and cannot establish further streams until you remove one"
TOKEN_PREFIX = {"prod": "pk_", "test": "tk_"}
TOKEN_SHAPE = re.compile(r"^(pk|tk)_[A-Za-z0-9]{16,40}$")


@dataclass(frozen=True)
class FinancefeastSettings:
    """Section ``emulator_financefeast`` (env ``TICKPIPE_EMULATOR_FINANCEFEAST_<FIELD>``)."""

    token: Secret | None = setting(None, help="the one API token accepted (unset: any well-formed token of the region)")
    environment: str = setting("prod", choices=("prod", "test"), help="region: prod takes pk_ tokens, test tk_ tokens")
    stream_access: bool = setting(True, help="false: the plan has no stream access (every login is refused)")
    stream_limit: int = setting(0, minimum=0, help="concurrent streams per token (0: unlimited)")
    auth_timeout_s: float = setting(10.0, minimum=0, help="close a socket not authenticated by then (0: never; unconfirmed)")
    reject_close_code: int = setting(1008, minimum=1000, maximum=4999, help="close code after an error (unconfirmed)")
    reject_with_json: bool = setting(True, help="send the JSON error before closing (false: close code only; unconfirmed)")
    timezone: str = setting("UTC", help="time zone of data.date, an IANA name (unconfirmed: UTC or Pacific/Auckland)")
    answer_json_ping: bool = setting(True, help='answer {"type":"ping"} with {"type":"pong"} (unconfirmed)')

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise ConfigError(f"TICKPIPE_EMULATOR_FINANCEFEAST_TIMEZONE: unknown time zone {self.timezone!r}") from None


def message(kind: str, **data) -> str:
    return orjson.dumps({"type": kind, "data": data}).decode()


class FinancefeastEmulator(Emulator):
    provider = "financefeast"
    default_symbols = ("AIR.NZ", "FPH.NZ", "SPK.NZ", "MEL.NZ", "NZB.NZ", "NZC.NZ", "SUM020.NZ", "WIA080.NZ")
    settings_class = FinancefeastSettings

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.settings: FinancefeastSettings = self.options.credentials or FinancefeastSettings()
        self.zone = ZoneInfo(self.settings.timezone)
        self.sim = MarketSim((), seed=self.options.seed)
        starts = random.Random(self.options.seed)
        for sym in self.symbols:
            bond = any(ch.isdigit() for ch in sym)  # NZX debt tickers carry a number: SUM020.NZ
            start = "1.0000" if bond else f"{starts.randint(50, 3000) / 100:.2f}"
            self.sim.add_instrument(sym, tick="0.0001" if bond else "0.01", start_price=start)
        self.last_second: dict[str, int] = {}
        self.auth_attempts = 0
        self.streams: dict[str, int] = {}  # token -> open authenticated streams

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/ws", self.handle_ws)

    # ----- data -----
    def next_price(self, symbol: str | None = None) -> tuple[dict, dict]:
        """One price message (for ``symbol`` or a random one); its date is strictly after the symbol's last."""
        symbol = symbol or self.sim.symbol()
        now = int(datetime.now(timezone.utc).timestamp())
        second = max(now, self.last_second.get(symbol, 0) + 1)
        self.last_second[symbol] = second
        trade = self.sim.trade(symbol, second * 1_000_000_000)
        date = datetime.fromtimestamp(second, self.zone).strftime("%Y-%m-%dT%H:%M:%S")
        payload = {"date": date, "price": float(trade.price), "volume": int(trade.size), "symbol": symbol}
        ids = {"kind": "price", "instrument": symbol, "date": date, "event_ns": trade.ts_ns}
        return {"type": "price", "data": payload}, ids

    # ----- connection -----
    async def handle_ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=max(4 * self.options.max_frame_bytes, 1 << 24))
        await ws.prepare(request)
        self.track_socket(ws)
        conn = self.new_connection(path="/ws")
        token, reason = None, "client closed"
        try:
            token = await self.authenticate(ws, conn)
            if token is not None:
                reason = await self.stream(ws, request, conn)
            else:
                reason = "auth failed"
        except ConnectionError:
            reason = "connection lost"
        except asyncio.CancelledError:
            reason = "server stopping"
            raise
        finally:
            if token is not None:
                self.streams[token] -= 1
            self.untrack_socket(ws)
            if not ws.closed:
                with contextlib.suppress(ConnectionError):
                    await ws.close()
            self.journal.write("disconnect", conn, reason=reason, code=ws.close_code)
        return ws

    async def receive_json(self, ws: web.WebSocketResponse, timeout: float | None):
        """The next client message as a dict, or an error text (None when the socket closed)."""
        msg = await ws.receive(timeout=timeout)
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if msg.type is not WSMsgType.TEXT:
            return "Invalid message: only JSON text messages are supported"
        if len(msg.data) > self.options.max_frame_bytes:
            return f"Invalid message: larger than {self.options.max_frame_bytes} bytes"
        try:
            doc = orjson.loads(msg.data)
        except orjson.JSONDecodeError:
            return "Invalid message: not JSON"
        return doc if isinstance(doc, dict) else "Invalid message: expected a JSON object"

    async def reject(self, ws: web.WebSocketResponse, text: str) -> None:
        if self.settings.reject_with_json:
            await ws.send_str(message("error", message=text))
        await ws.close(code=self.settings.reject_close_code, message=text[:100].encode())

    async def authenticate(self, ws: web.WebSocketResponse, conn: int) -> str | None:
        """Wait for the authenticate message; return the token, or None after rejecting."""
        try:
            doc = await self.receive_json(ws, self.settings.auth_timeout_s or None)
        except asyncio.TimeoutError:
            await self.reject(ws, "Authentication timeout: send an authenticate message first")
            return None
        if doc is None:
            return None
        if isinstance(doc, str):
            await self.reject(ws, doc)
            return None
        data = doc.get("data")
        token = data.get("token") if isinstance(data, dict) else None
        if doc.get("type") != "authenticate" or not isinstance(token, str):
            await self.reject(ws, 'Invalid message: expected {"type":"authenticate","data":{"token":...}}')
            return None
        await self.slow()
        problem = self.token_problem(token)
        self.journal.write("auth", conn, ok=problem is None, error=problem)
        if problem:
            await self.reject(ws, problem)
            return None
        self.streams[token] = self.streams.get(token, 0) + 1
        await ws.send_str(message("authenticated", message=AUTHENTICATED))
        return token

    def token_problem(self, token: str) -> str | None:
        self.auth_attempts += 1
        fail = self.options.faults.auth_fail
        if fail < 0 or self.auth_attempts <= fail:
            return NOT_AUTHORISED
        expected = self.settings.token
        if expected is not None and token != expected.reveal():
            return NOT_AUTHORISED
        if not TOKEN_SHAPE.match(token) or not token.startswith(TOKEN_PREFIX[self.settings.environment]):
            return NOT_AUTHORISED
        if not self.settings.stream_access:
            return NO_ACCESS
        limit = self.settings.stream_limit
        if limit and self.streams.get(token, 0) >= limit:
            return STREAM_LIMIT.format(limit=limit)
        return None

    async def stream(self, ws: web.WebSocketResponse, request: web.Request, conn: int) -> str:
        """Push prices until the client leaves or a fault ends the connection; return the reason."""
        reader = self.spawn(self.read_loop(ws))
        plan = self.options.faults
        box = self.outbox(conn)
        box.plan = dataclasses.replace(plan, drop=0.0)  # a loss is undetectable here (no ids): never inject one
        rng = plan.rng(self.options.seed, conn)
        disconnect = self.periodic(plan.disconnect_every, rng)
        stall = self.periodic(plan.stall_every, rng)
        try:
            async for due in paced(self.options.rate):
                if reader.done() or ws.closed:
                    return "client closed"
                if disconnect.fired():
                    box.abandon()
                    await self.drop_connection(ws, request, conn, plan.close_code)
                    return "fault"
                if stall.fired():
                    self.journal.write("fault", conn, fault="stall", seconds=plan.stall_for)
                    await asyncio.sleep(plan.stall_for)
                for _ in range(due):
                    held = box.held_ids  # a swap must be within one symbol to be detectable
                    payload, ids = self.next_price(held["instrument"] if held else None)
                    for frame in box.push(payload, ids, faultable=True):
                        await self.send_frame(ws, frame)
            return "stopped"
        finally:
            reader.cancel()

    async def send_frame(self, ws: web.WebSocketResponse, frame) -> None:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame if isinstance(frame, str) else orjson.dumps(frame).decode())

    async def drop_connection(self, ws: web.WebSocketResponse, request: web.Request, conn: int, code: int) -> None:
        self.journal.write("fault", conn, fault="disconnect", code=code or 1006)
        if code:
            await ws.close(code=code, message=b"emulated disconnect")
        elif request.transport is not None:
            request.transport.abort()  # no close frame: the client sees 1006

    async def read_loop(self, ws: web.WebSocketResponse) -> None:
        """After login: answer JSON pings, reply to anything else with the provider's error."""
        while not ws.closed:
            doc = await self.receive_json(ws, None)
            if doc is None:
                return
            if isinstance(doc, str):
                await ws.send_str(message("error", message=doc))
            elif doc.get("type") == "ping" and self.settings.answer_json_ping:
                await ws.send_str(orjson.dumps({"type": "pong"}).decode())
            else:
                await ws.send_str(message("error", message=f"Unknown message type: {str(doc.get('type'))[:50]}"))
