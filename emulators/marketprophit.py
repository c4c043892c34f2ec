"""Market Prophit emulator: ``POST /jwt`` and a socket.io 1.x (Engine.IO 3) stream on one port.

Protocol: ``../shared/protocols/marketprophit.md``. We imitate Generation A (June-Aug 2014):

1. ``POST /jwt`` with ``Authorization: Basic base64("sk_live_...:")`` -> ``{"token": <HS256 JWT>}``
   (claims ``email``, ``api``, entitlements, ``iat``/``exp``, ``jti``; the emulator remembers
   each token's issue time and rejects it ``token_lifetime_s`` later; default 5 h).
2. socket.io at ``/socket.io/`` with ``?token=<JWT>``; a bad, expired or missing token is
   refused at the handshake as socket.io 1.x middleware did: the ERROR packet
   ``44{"message":"jwt expired","code":"invalid_token","type":"UnauthorizedError"}`` (socketio-jwt
   style; the client's ``error``/``connect_error`` event), then a close; or HTTP 401 (setting).
3. ``subscribe`` / ``unsubscribe`` with ``{path, method, params}`` (``/real-time/...``, GET,
   ``params.ticker``) and an ack ``[null]`` or ``["<error text>"]``; a failed request also
   gets an ``err`` event, as does an unknown event.
4. ``res`` events, one per record, numbers as strings. Shape (unconfirmed, setting
   ``res_shape``): the REST body array (default) or ``{path, method, params, timestamp, results}``::

       42["res",[{"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"0.3671460543121055"}]]

Faultability: no sequence numbers, but every (path, ticker) stream's ``ts`` advances by
exactly its cadence (1 s or 60 s of simulated time per record), so a drop leaves a missing
``ts``, a swap an out-of-order ``ts`` (the held record is always followed by the same
stream's next one), a repeat a repeated ``ts``: ``res`` data is faultable, except the
user-sentiment streams (many users share a period on the real feed, so no consumer can
count periods there). A malformed frame is a ``res`` event whose payload is a garbage
string. Acks and ``err`` never are.
Other faults: ``auth_fail`` counts ``/jwt`` calls and handshakes together; ``slow`` delays
``/jwt``, the handshake check and every ack; ``token_expiry`` sets the token lifetime and ends
sessions at expiry; ``close_code`` closes the websocket with that code (0: a TCP abort; a
client still on long-polling gets a socket.io disconnect); ``slow_client`` does not apply.
Generation B requests ``{path, params}`` naming one of the five streams (``crowd-sentiment``
...) get ``data`` events ``{path, params, timestamp, results}`` with one record per ticker
(every emulated symbol, or ``params.ticker``: unconfirmed), and no ``err`` events.
Journal ids of a push: ``{"kind": "res"|"data", "path", "ticker" ("*": every ticker), "ts", "event_ns"}``.
Dependency: python-socketio 4.x / python-engineio 3.x (Engine.IO 3), see ``marketprophit_sio``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qs

import jwt
from aiohttp import web

from tickpipe.config import Secret, setting
from tickpipe.emulators.base import Emulator, paced
from tickpipe.emulators.marketprophit_data import ENDPOINTS, GEN_B_ENDPOINTS, SentimentStream, iso_ms, sequenced
from tickpipe.emulators.marketprophit_sio import ProphitServer, Py311Manager, install_tracked_websocket
from tickpipe.emulators.marketprophit_requests import ALL, ProphitNamespace, Subscription

KEY_SHAPE = re.compile(r"^sk_(live|test)_[A-Za-z0-9]{24}$")
CORS = {"Access-Control-Allow-Origin": "*"}
GARBAGE = ('{"truncated": [1, 2', "\ufffd\u0000{]", "[[[[", "not json at all")


@dataclass(frozen=True)
class MarketProphitSettings:
    """Section ``emulator_marketprophit`` (env ``TICKPIPE_EMULATOR_MARKETPROPHIT_<FIELD>``)."""

    secret_key: Secret | None = setting(None, help="the one API key accepted (unset: any sk_live_/sk_test_ + 24 alphanumerics)")
    jwt_signing_key: Secret | None = setting(None, help="HMAC key the JWTs are signed with (unset: random per run)")
    token_lifetime_s: float = setting(18000.0, minimum=0.1, help="JWT lifetime (docs: 5 h; a June-2014 token had 1 h)")
    end_sessions_at_expiry: bool = setting(False, help="drop an open socket when its token expires (unconfirmed; "
                                                       "the token_expiry fault always does)")
    res_shape: str = setting("array", choices=("array", "wrapper"),
                             help="res payload: the REST body array, or {path, method, params, timestamp, results} (unconfirmed)")
    streaming_paths: tuple[str, ...] = setting(tuple(ENDPOINTS) + tuple(GEN_B_ENDPOINTS),
                                               help="entitled paths, Gen A and Gen B (others: 'Restricted endpoint')")
    refuse_with_http: bool = setting(False, help="refuse a bad token with HTTP 401 on the handshake (python-socketio "
                                                 "style) instead of socket.io 1.x's ERROR packet (unconfirmed)")
    token_has_exp: bool = setting(True, help="put iat/exp claims in the JWT (June 2014 did; the Jul-Sep 2014 tokens "
                                                "had neither, so only the server knew the expiry)")
    ts_skew_s: float = setting(0.0, help="added to every record's ts (the Sep-2014 examples show +14400; unconfirmed)")
    ping_interval_s: float = setting(25.0, minimum=0.1, help="Engine.IO pingInterval (1.x default; unconfirmed)")
    ping_timeout_s: float = setting(60.0, minimum=0.1, help="Engine.IO pingTimeout (1.x default; unconfirmed)")


@dataclass
class Session:
    sid: str
    conn: int
    expires_at: float
    box: object
    subs: dict[tuple, Subscription] = field(default_factory=dict)
    turn: int = 0
    end_reason: str = "client closed"
    end_code: int | None = None
    task: asyncio.Task | None = None


class MarketProphitEmulator(Emulator):
    provider = "marketprophit"
    default_symbols = ("AAPL", "TSLA", "CSCO", "MSFT", "EURAUD")
    settings_class = MarketProphitSettings

    def __init__(self, options=None) -> None:
        super().__init__(options)
        self.settings: MarketProphitSettings = self.options.credentials or MarketProphitSettings()
        key = self.settings.jwt_signing_key
        self.signing_key = key.reveal() if key else secrets.token_urlsafe(32)
        self.lifetime = self.options.faults.token_expiry or self.settings.token_lifetime_s
        self.end_at_expiry = bool(self.options.faults.token_expiry) or self.settings.end_sessions_at_expiry
        self.issued: dict[str, float] = {}          # jti -> issue time
        self.sessions: dict[str, Session] = {}
        self.streams: dict[tuple[str, str], SentimentStream] = {}
        self.sockets: dict[str, tuple[web.WebSocketResponse, web.Request]] = {}
        self.auth_attempts = 0
        self.sio = ProphitServer(self.check_handshake, self.settings.refuse_with_http, async_mode="aiohttp", client_manager=Py311Manager(), logger=False,
                                   engineio_logger=False, cors_allowed_origins="*",
                                   ping_interval=self.settings.ping_interval_s,
                                   ping_timeout=self.settings.ping_timeout_s,
                                   max_http_buffer_size=self.options.max_frame_bytes)
        self.sio.eio.start_service_task = False     # started by start() as a task stop() cancels
        install_tracked_websocket(self.sio, self._websocket_opened, self.options.max_frame_bytes)
        self.sio.register_namespace(ProphitNamespace(self))

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/jwt", self.handle_jwt)
        self.sio.attach(app, socketio_path="socket.io")

    async def start(self) -> "MarketProphitEmulator":
        await super().start()
        self.spawn(self.sio.eio._service_task())    # Engine.IO ping-timeout sweeper
        return self

    async def stop(self) -> None:
        for sid in list(self.sessions):
            self.sessions[sid].end_reason = "server stopping"
            try:
                await asyncio.wait_for(self.sio.disconnect(sid), 1.0)
            except (asyncio.TimeoutError, ConnectionError):
                pass
        await super().stop()

    # ----- auth -----
    def auth_fault(self) -> bool:
        self.auth_attempts += 1
        fail = self.options.faults.auth_fail
        return fail < 0 or self.auth_attempts <= fail

    async def handle_jwt(self, request: web.Request) -> web.Response:
        await self.slow()
        key = basic_username(request.headers.get("Authorization", ""))
        expected = self.settings.secret_key
        ok = (not self.auth_fault() and key is not None and KEY_SHAPE.match(key) is not None
              and (expected is None or key == expected.reveal()))
        self.journal.write("auth", None, endpoint="/jwt", ok=ok)
        if not ok:
            body = {"error": {"type": "invalid_request_error", "message": "Invalid API key provided"}}
            return web.json_response(body, status=401, headers={**CORS, "WWW-Authenticate": 'Basic realm="api"'})
        now, jti = time.time(), uuid.uuid4().hex
        self.issued[jti] = now
        claims = {"email": "emulator@marketprophit.invalid", "api": True, "streaming_access": True,
                  "endpoint_paths": list(self.settings.streaming_paths), "jti": jti}
        if self.settings.token_has_exp:
            claims.update(iat=int(now), exp=int(now) + math.ceil(self.lifetime))
        token = jwt.encode(claims, self.signing_key, algorithm="HS256", headers={"typ": "JWT"})
        response = web.json_response({"token": token}, headers=CORS)
        response.set_cookie("igloo", "s%3A" + secrets.token_urlsafe(16))
        return response

    async def check_handshake(self, environ: dict) -> tuple[dict | None, float]:
        await self.slow()
        problem, expires_at = self.token_problem(environ)
        self.journal.write("auth", None, endpoint="/socket.io/", ok=problem is None, error=problem)
        return problem, expires_at

    def token_problem(self, environ: dict) -> tuple[dict | None, float]:
        """(socketio-jwt style error or None, expiry time) for a handshake's ``?token=``."""
        token = (parse_qs(environ.get("QUERY_STRING", "")).get("token") or [""])[0]
        if self.auth_fault():
            return unauthorized("Not authorized", "invalid_token"), 0.0
        if not token:
            return unauthorized("No authorization token was found", "credentials_required"), 0.0
        try:
            claims = jwt.decode(token, self.signing_key, algorithms=["HS256"], options={"verify_exp": False})
        except jwt.InvalidTokenError:
            return unauthorized("invalid signature", "invalid_token"), 0.0
        issued = self.issued.get(claims.get("jti"))
        if issued is None:
            return unauthorized("jwt not issued by this server", "invalid_token"), 0.0
        if time.time() >= issued + self.lifetime:
            return unauthorized("jwt expired", "invalid_token"), 0.0
        return None, issued + self.lifetime

    # ----- sessions -----
    def open_session(self, sid: str, expires_at: float) -> None:
        conn = self.new_connection(path="/socket.io/", sid=sid)
        box = self.outbox(conn)
        box.garbage = lambda rng: rng.choice(GARBAGE)
        session = Session(sid, conn, expires_at, box)
        self.sessions[sid] = session
        session.task = self.spawn(self.pump(session))

    def close_session(self, sid: str) -> None:
        session = self.sessions.pop(sid, None)
        self.sockets.pop(sid, None)
        if session is None:
            return
        if session.task is not None:
            session.task.cancel()
        session.box.abandon()
        self.journal.write("disconnect", session.conn, reason=session.end_reason, code=session.end_code)

    def _websocket_opened(self, sid: str, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.sockets[sid] = (ws, request)
        self.track_socket(ws)

    async def pump(self, session: Session) -> None:
        """Push ``res`` records for the session's subscriptions at the configured rate."""
        plan = self.options.faults
        rng = plan.rng(self.options.seed, session.conn)
        disconnect = self.periodic(plan.disconnect_every, rng)
        stall = self.periodic(plan.stall_every, rng)
        async for due in paced(self.options.rate):
            if self.end_at_expiry and time.time() >= session.expires_at:
                if self.options.faults.token_expiry:
                    self.journal.write("fault", session.conn, fault="token_expiry")
                session.end_reason = "token expired"
                await self.sio.disconnect(session.sid)
                return
            if disconnect.fired():
                await self.drop(session, plan.close_code)
                return
            if stall.fired():
                self.journal.write("fault", session.conn, fault="stall", seconds=plan.stall_for)
                await asyncio.sleep(plan.stall_for)
            for _ in range(due):
                sub = self.next_subscription(session)
                if sub is None:
                    break
                payload, ids = self.record(sub)
                for item in session.box.push(payload, ids, faultable=sequenced(sub.path)):
                    await self.sio.emit("res" if sub.method else "data", item, room=session.sid)

    def next_subscription(self, session: Session) -> Subscription | None:
        held = session.box.held_ids  # a swap must stay within one stream to be detectable
        if held is not None and (held["path"], held["ticker"]) in session.subs:
            return session.subs[(held["path"], held["ticker"])]
        if not session.subs:
            return None
        subs = list(session.subs.values())
        session.turn = (session.turn + 1) % len(subs)
        return subs[session.turn]

    def stream(self, path: str, ticker: str) -> SentimentStream:
        key = (path, ticker)
        return self.streams.get(key) or self.streams.setdefault(key, SentimentStream(path, ticker, self.options.seed))

    def record(self, sub: Subscription) -> tuple[object, dict]:
        """One push: Gen A ``res`` (one record) or Gen B ``data`` (one record per ticker, same period)."""
        tickers = self.symbols if sub.ticker == ALL else (sub.ticker,)
        recs = [self.stream(sub.path, t).next_record(time.time(), self.settings.ts_skew_s) for t in tickers]
        rec, ts = recs[0]
        ids = {"kind": "res" if sub.method else "data", "path": sub.path, "ticker": sub.ticker, "ts": rec["ts"],
               "event_ns": ts * 1_000_000_000}
        if sub.method and self.settings.res_shape == "array":
            return [rec], ids
        wrapper = {"path": sub.path, "method": sub.method, "params": sub.params, "timestamp": iso_ms(time.time()),
                   "results": [r for r, _ in recs]}
        if not sub.method:
            del wrapper["method"]
        return wrapper, ids

    async def drop(self, session: Session, code: int) -> None:
        """The disconnect fault: a close code on the websocket, or a TCP abort when ``code`` is 0."""
        session.box.abandon()
        session.end_reason, session.end_code = "fault", code or 1006
        self.journal.write("fault", session.conn, fault="disconnect", code=code or 1006)
        ws_request = self.sockets.get(session.sid)
        if ws_request is None:                      # still on long-polling: a socket.io disconnect
            await self.sio.disconnect(session.sid)
        elif code:
            await ws_request[0].close(code=code, message=b"emulated disconnect")
        elif ws_request[1].transport is not None:
            ws_request[1].transport.abort()


def basic_username(header: str) -> str | None:
    """The user part of ``Basic base64(user:password)`` (Market Prophit: key, empty password)."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, _, _ = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return user


def unauthorized(message: str, code: str) -> dict:
    return {"message": message, "code": code, "type": "UnauthorizedError"}
