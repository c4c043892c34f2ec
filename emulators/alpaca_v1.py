"""The legacy v1 data stream (``/stream``): JSON objects ``{"stream": ..., "data": ...}``.

    > {"action":"authenticate","data":{"key_id":"AK...","secret_key":"..."}}
    < {"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}
    > {"action":"listen","data":{"streams":["T.SPY","Q.SPY","AM.SPY"]}}
    < {"stream":"listening","data":{"streams":["T.SPY","Q.SPY","AM.SPY"]}}
    < {"stream":"T.SPY","data":{"ev":"T","T":"SPY","i":117537207,"x":2,"p":283.63,"s":2,"t":1587407015152775000,"c":[14,37,41],"z":2}}

The server says nothing first. ``listen`` adds, ``unlisten`` removes, and the ack lists every
active channel. Unavailable channels, and T./Q. channels beyond the symbol limit, are left
out of the ack silently. v1 has no error codes: bad input is answered on the ``listening``
stream with ``{"error": ...}`` (the wording for bad syntax is our own; unconfirmed).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tickpipe.emulators.alpaca_feed import Event
from tickpipe.emulators.alpaca_session import StreamSession
from tickpipe.emulators.alpaca_wire import v1_message

PREFIXES = ("alpacadatav1/", "polyfeed/")
CHANNEL_OF = {"T": "trades", "Q": "quotes", "AM": "bars"}
PREFIX_OF = {v: k for k, v in CHANNEL_OF.items()}
STREAM_RE = re.compile(r"^(T|Q|AM)\.([A-Z][A-Z0-9.\-]{0,15}|\*)$")
ALREADY = "your connection is already authenticated"
REJECTED = "your connection is rejected while another connection is open under the same account"


def parse_stream(name: str) -> tuple[str, str] | None:
    """``alpacadatav1/T.SPY`` -> (``trades``, ``SPY``); None for names v1 does not serve (``T.*`` too)."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            name = name[len(prefix):]
    m = STREAM_RE.match(name)
    if not m or (m.group(2) == "*" and m.group(1) != "AM"):
        return None
    return CHANNEL_OF[m.group(1)], m.group(2)


def listening(**data: Any) -> dict:
    return {"stream": "listening", "data": data}


def authorization(action: str, status: str) -> dict:
    return {"stream": "authorization", "data": {"action": action, "status": status}}


class V1Session(StreamSession):
    async def handle(self, data: str | bytes) -> None:
        try:
            msg = orjson.loads(data) if len(data) <= self.emu.options.max_frame_bytes else None
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("data", {}), dict):
            return await self._reply(listening(error="invalid syntax"))
        action, body = msg.get("action"), msg.get("data") or {}
        if action == "authenticate":
            await self.emu.slow()
            await self._authenticate(body)
        elif action in ("listen", "unlisten"):
            if self.account is None:
                return await self._reply(authorization("listen", "unauthorized"))
            await self.emu.slow()
            await self._listen(action, body.get("streams"))
        else:
            await self._reply(listening(error="invalid syntax"))

    def render(self, event: Event) -> dict:
        return v1_message(event, self.emu.bar_ns)

    def frames(self, payloads: list[Any]) -> list[str | bytes]:
        """One object per frame; a malformed-frame fault is a frame of its own."""
        return [self.codec.encode(p) if isinstance(p, dict) else p for p in payloads]

    async def internal_error(self) -> None:
        await self._reply(listening(error="internal error"))

    async def _reply(self, obj: dict) -> None:
        async with self.lock:
            await self.send(obj)

    async def _authenticate(self, body: dict) -> None:
        async with self.lock:
            if self.account is not None:
                return await self.send(listening(error=ALREADY))
            token = body.get("oauth_token")
            key, secret = ("oauth", token) if token is not None else (body.get("key_id"), body.get("secret_key"))
            code, account = self.emu.admit(self.feed, key, secret, self.conn)
            if code == 406:
                return await self.send(listening(error=REJECTED))
            if code:
                return await self.send(authorization("authenticate", "unauthorized"))
            self.account = account
            self.start_streaming(self.emu.market(self.feed, account))
            await self.send(authorization("authenticate", "authorized"))

    async def _listen(self, action: str, streams: Any) -> None:
        if not isinstance(streams, list) or not all(isinstance(s, str) for s in streams):
            return await self._reply(listening(error="invalid syntax"))
        chosen = [c for c in map(parse_stream, streams) if c is not None]
        async with self.lock:
            for channel, symbol in chosen:
                if action == "unlisten":
                    self.subs.remove(channel, [symbol])
                elif channel == "bars" or not self._at_limit(symbol):
                    self.subs.add(channel, [symbol])
            names = [f"{PREFIX_OF[ch]}.{s}" for ch in self.feed.channels for s in self.subs.listed(ch)]
            await self.send(listening(streams=names))

    def _at_limit(self, symbol: str) -> bool:
        """Would one more T./Q. symbol break the symbol limit (30 channels in v1)?"""
        limit = self.settings.symbol_limit
        listed = {s for ch in ("trades", "quotes") for s in self.subs.listed(ch)}
        return limit > 0 and symbol not in listed and len(listed) >= limit
