"""Market Prophit socket.io requests: handshake check, ``subscribe``/``unsubscribe``, bad input.

A request is ``{path, method, params}`` (Generation A) or ``{path, params}`` naming one of the
five Generation-B streams::

    420["subscribe",{"path":"/real-time/crowd-sentiment","method":"get","params":{"ticker":"AAPL"}}]
    430[null]

The ack carries ``null`` or an error text (shape unconfirmed); a failed request or an
unknown event also gets an ``err`` event ``{"message", "request"}``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import socketio

from tickpipe.emulators.marketprophit_data import ENDPOINTS, GEN_B_ENDPOINTS

if TYPE_CHECKING:
    from tickpipe.emulators.marketprophit import MarketProphitEmulator

TICKER = re.compile(r"^[A-Za-z][A-Za-z0-9.]{0,11}$")
ALL = "*"  # a Generation-B subscription without a ticker: every ticker


@dataclass(frozen=True)
class Subscription:
    path: str
    method: str | None  # None: a Generation-B request (``data`` events, no ``err`` events)
    params: dict
    ticker: str         # ALL for a Generation-B stream of every ticker

    @property
    def key(self) -> tuple[str, str]:
        return (self.path, self.ticker)


def parse_request(options: Any, entitled: tuple[str, ...]) -> Subscription | str:
    """The subscription a request names, or the error text to answer with."""
    if not isinstance(options, dict):
        return "Bad request: options must be an object {path, method, params}"
    path, method, params = options.get("path"), options.get("method"), options.get("params", {})
    if "method" not in options and path in GEN_B_ENDPOINTS:
        return _generation_b(path, params, entitled)
    if not isinstance(path, str) or path not in ENDPOINTS:
        return f"Unknown endpoint: {str(path)[:100]}"
    if path not in entitled:
        return f"Restricted endpoint: {path}"
    if not isinstance(method, str) or method.lower() != "get":
        return f"Bad request: method must be GET, got {str(method)[:20]}"
    if not isinstance(params, dict):
        return "Bad request: params must be an object"
    ticker = params.get("ticker")
    if not isinstance(ticker, str) or not TICKER.match(ticker):
        return "Bad request: params.ticker (a symbol) is required"
    return Subscription(path, method, params, ticker.upper())


def _generation_b(path: str, params: Any, entitled: tuple[str, ...]) -> Subscription | str:
    """``{path: "crowd-sentiment", params: {}}``: every ticker, or only ``params.ticker`` (unconfirmed)."""
    if path not in entitled:
        return f"Restricted endpoint: {path}"
    if not isinstance(params, dict):
        return "Bad request: params must be an object"
    ticker = params.get("ticker", ALL)
    if ticker is not ALL and (not isinstance(ticker, str) or not TICKER.match(ticker)):
        return "Bad request: params.ticker must be a symbol"
    return Subscription(path, None, params, ticker if ticker is ALL else ticker.upper())


class ProphitNamespace(socketio.AsyncNamespace):
    """The default namespace; handlers return the ack arguments."""

    def __init__(self, emulator: "MarketProphitEmulator") -> None:
        super().__init__("/")
        self.emu = emulator

    async def trigger_event(self, event: str, *args):
        if hasattr(self, f"on_{event}"):
            return await super().trigger_event(event, *args)
        sid = args[0]
        return await self.refuse(sid, f"Unknown event: {str(event)[:50]}", list(args[1:2]))

    async def on_connect(self, sid: str, environ: dict) -> None:
        self.emu.open_session(sid, environ["tickpipe.expires_at"])  # the server checked the token

    async def on_disconnect(self, sid: str) -> None:
        self.emu.close_session(sid)

    async def on_subscribe(self, sid: str, options: Any = None):
        await self.emu.slow()
        session = self.emu.sessions.get(sid)
        sub = parse_request(options, self.emu.settings.streaming_paths)
        if isinstance(sub, str) or session is None:
            return await self.refuse(sid, sub if isinstance(sub, str) else "Not connected", options)
        session.subs.setdefault(sub.key, sub)
        self.emu.journal.write("request", session.conn, action="subscribe", path=sub.path, ticker=sub.ticker)
        return (None,)

    async def on_unsubscribe(self, sid: str, options: Any = None):
        await self.emu.slow()
        session = self.emu.sessions.get(sid)
        sub = parse_request(options, self.emu.settings.streaming_paths)
        if isinstance(sub, str):
            return await self.refuse(sid, sub, options)
        if session is None or session.subs.pop(sub.key, None) is None:
            return await self.refuse(sid, f"Not subscribed: {sub.path} {sub.ticker}", options)
        self.emu.journal.write("request", session.conn, action="unsubscribe", path=sub.path, ticker=sub.ticker)
        return (None,)

    async def refuse(self, sid: str, message: str, request: Any):
        generation_b = isinstance(request, dict) and "method" not in request and request.get("path") in GEN_B_ENDPOINTS
        if not generation_b:  # Generation B had no err event: the ack alone says it
            await self.emit("err", {"message": message, "request": request}, room=sid)
        return (message,)
