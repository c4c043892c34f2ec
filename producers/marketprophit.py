"""Market Prophit producer adapter: ``POST /jwt``, then socket.io (Engine.IO 3) with ``?token=``.

Session (``../shared/protocols/marketprophit.md``)::

    POST /jwt  Authorization: Basic base64("sk_live_...:")  ->  {"token": "<JWT>"}
    GET  /socket.io/?EIO=3&transport=polling&token=<JWT>  (then the websocket upgrade)
    > 420["subscribe",{"path":"/real-time/crowd-sentiment","method":"get","params":{"ticker":"AAPL"}}]
    < 430[null]
    < 42["res",[{"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"0.3671460543121055"}]]

What is recorded: each socket.io *event* the server emits (``res``, ``err`` and Gen-B
``data`` by default, setting ``events``) as the JSON text ``[event_name, payload]`` of
exactly what python-socketio hands to the handler, content type
``application/x-socketio-event+json``; acks are replies to our calls, not events, and are
checked but not recorded. Engine.IO framing (``42``, pings) never reaches Kafka.

Subscriptions come from configuration as ``path?param=value&...``: a ``/real-time/...``
path is a Generation-A request ``{path, method, params}``, any other name a Generation-B
``{path, params}``. A refused subscribe (ack with an error) is permanent: bad config.

Token lifetime: the JWT is fetched on every connect; ``session_deadline()`` ends the
session before it expires (``token_refresh_s`` after the fetch, or a tenth of the
lifetime before its ``exp``, whichever is sooner), so the loop reconnects at once with a
fresh token and resubscribes everything. A server that ends the socket at expiry anyway
is a plain disconnect: reconnect, new token, resubscribe. Keepalive is Engine.IO's own
ping/pong, done by the library.

Dependency: python-socketio 4.x / python-engineio 3.x, the Python client of Engine.IO 3
(socket.io 1.x/2.x servers); 5.x speaks only Engine.IO 4.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import engineio.asyncio_client
import jwt
import socketio

from tickpipe.config import Secret, register_secret, setting
from tickpipe.envelope import CT_SOCKETIO
from tickpipe.producers.base import AuthError, FeedAdapter, FeedError, ResyncTarget, Session, Transport
from tickpipe.producers.transport import QueueTransport

# engineio 3.x installs its own SIGINT handler (it stops the event loop) on the first
# connect; tickpipe's run_service handles signals, so tell engineio it already did.
engineio.asyncio_client.async_signal_handler_set = True


@dataclass(frozen=True)
class MarketProphitSettings:
    """Section ``marketprophit`` (env ``TICKPIPE_MARKETPROPHIT_<FIELD>``)."""

    secret_key: Secret = setting(help="API secret key sk_live_... (or TICKPIPE_MARKETPROPHIT_SECRET_KEY_FILE)")
    url: str = setting("https://open.marketprophit.com", help="base URL of POST /jwt and of socket.io")
    subscriptions: tuple[str, ...] = setting(("/real-time/crowd-sentiment?ticker=AAPL",),
                                             help="comma-separated 'path?param=value' (Gen A /real-time/...; else Gen B)")
    method: str = setting("get", help="method field of Generation-A subscribe requests")
    events: tuple[str, ...] = setting(("res", "err", "data"), help="socket.io events recorded")
    transports: tuple[str, ...] = setting(("polling", "websocket"), help="Engine.IO transports, in order of use")
    socketio_path: str = setting("socket.io", help="socket.io endpoint path")
    token_refresh_s: float = setting(3000.0, minimum=1.0, help="reconnect with a fresh JWT this long after fetching one")


def parse_subscription(spec: str, method: str) -> dict:
    """``/real-time/crowd-sentiment?ticker=AAPL`` -> ``{"path", "method", "params"}`` (Gen B: no method)."""
    parts = urlsplit(spec.strip())
    request: dict[str, Any] = {"path": parts.path}
    if parts.path.startswith("/real-time/"):
        request["method"] = method
    request["params"] = dict(parse_qsl(parts.query))
    return request


class MarketProphitAdapter(FeedAdapter):
    provider = "marketprophit"
    settings_class = MarketProphitSettings
    content_type = CT_SOCKETIO
    loop_defaults = {"stale_after_s": 150.0}  # per-minute streams push every 60 s

    def __init__(self, settings: MarketProphitSettings, loop_settings: Any = None) -> None:
        super().__init__(settings, loop_settings)
        self.requests = [parse_subscription(s, settings.method) for s in settings.subscriptions]
        self.client: socketio.AsyncClient | None = None
        self.deadline: float | None = None

    async def fetch_token(self) -> str:
        basic = base64.b64encode(f"{self.settings.secret_key.reveal()}:".encode()).decode()
        url = self.settings.url.rstrip("/") + "/jwt"
        async with aiohttp.ClientSession() as http:
            async with http.post(url, headers={"Authorization": f"Basic {basic}"}) as resp:
                body = await resp.read()
        if resp.status in (401, 403):
            raise AuthError(f"marketprophit POST /jwt refused the secret key (HTTP {resp.status})")
        if resp.status != 200:
            raise FeedError(f"marketprophit POST /jwt answered HTTP {resp.status}")
        try:
            token = json.loads(body)["token"]
        except (ValueError, KeyError, TypeError):
            raise FeedError("marketprophit POST /jwt answered without a token") from None
        if not isinstance(token, str) or not token:
            raise FeedError("marketprophit POST /jwt answered with an empty token")
        register_secret(token, short_lived=True)  # it travels in URLs: keep it out of every log line
        self.deadline = self.refresh_at(token, time.time())
        return token

    def refresh_at(self, token: str, fetched: float) -> float:
        deadline = fetched + self.settings.token_refresh_s
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.InvalidTokenError:
            return deadline
        exp, iat = claims.get("exp"), claims.get("iat", fetched)
        if isinstance(exp, (int, float)) and isinstance(iat, (int, float)):
            deadline = min(deadline, exp - (exp - iat) / 10)
        return deadline

    async def connect(self) -> Transport:
        token = await self.fetch_token()
        client = socketio.AsyncClient(reconnection=False)
        transport = QueueTransport(close=client.disconnect)
        for event in self.settings.events:
            client.on(event, recorder(event, transport))
        client.on("disconnect", lambda: transport.closed(None, "socket.io disconnect"))
        answer: asyncio.Future = asyncio.get_running_loop().create_future()
        client.on("connect", lambda: answer.done() or answer.set_result(None))
        client.on("connect_error", lambda error=None: answer.done() or answer.set_result(error or "refused"))
        try:
            await client.connect(f"{self.settings.url.rstrip('/')}?token={token}",
                                 transports=list(self.settings.transports), socketio_path=self.settings.socketio_path)
            refusal = await asyncio.wait_for(answer, self.loop_settings.connect_timeout_s)
        except socketio.exceptions.ConnectionError as exc:
            refusal = answer.result() if answer.done() else str(exc)
        except BaseException:
            await client.disconnect()
            raise
        if refusal is not None:  # socket.io 1.x refuses with an ERROR packet after the Engine.IO handshake
            await client.disconnect()
            raise FeedError(f"marketprophit socket.io handshake refused: {str(refusal)[:200]}")
        self.client = client
        return transport

    async def subscribe(self, session: Session) -> None:
        for request in self.requests:
            try:
                await self.request("subscribe", request)
            except AuthError:
                await record_err_event(session)
                raise

    async def unsubscribe(self, session: Session) -> None:
        for request in self.requests:
            await self.request("unsubscribe", request)

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        """Unsubscribe and resubscribe the subscriptions of ``target.instrument`` (and path, if given)."""
        chosen = [r for r in self.requests if r["params"].get("ticker") == target.instrument
                  and target.channel in (None, r["path"])]
        for request in chosen:
            await self.request("unsubscribe", request)
            await self.request("subscribe", request)
        return bool(chosen)

    def session_deadline(self) -> float | None:
        return self.deadline

    async def request(self, event: str, options: dict) -> None:
        assert self.client is not None
        try:
            error = await self.client.call(event, options, timeout=self.loop_settings.auth_timeout_s)
        except socketio.exceptions.TimeoutError:
            raise FeedError(f"marketprophit {event} {options['path']}: no ack") from None
        if error is not None:
            raise AuthError(f"marketprophit refused {event} {options['path']} {options['params']}: {str(error)[:200]}")

    def endpoint(self) -> str:
        return self.settings.url.split("?", 1)[0]


async def record_err_event(session: Session, timeout: float = 1.0) -> None:
    """Read (so record) frames until the ``err`` event that accompanies a refusal, before the session ends."""
    try:
        while not (await session.recv(timeout=timeout)).startswith('["err"'):
            pass
    except FeedError:
        pass  # no err event (Generation B servers send none): the ack said it all


def binary(value: Any) -> dict:
    """A socket.io binary attachment (bytes), which JSON cannot hold: base64 under ``$binary``."""
    if isinstance(value, (bytes, bytearray)):
        return {"$binary": base64.b64encode(value).decode()}
    raise TypeError(f"cannot record a {type(value).__name__} in a socket.io event")


def recorder(event: str, transport: QueueTransport):
    """A handler recording ``[event, *args]`` as JSON text, exactly what the library decoded."""

    def handle(*args) -> None:
        transport.push(json.dumps([event, *args], ensure_ascii=False, separators=(",", ":"), default=binary))

    return handle
