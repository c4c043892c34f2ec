"""The v2 stock and v1beta3 crypto stream protocol (``/v2/{iex,sip,delayed_sip,test}``, ``/v1beta3/crypto/*``).

    < [{"T":"success","msg":"connected"}]
    > {"action":"auth","key":"PK...","secret":"..."}
    < [{"T":"success","msg":"authenticated"}]
    > {"action":"subscribe","trades":["AAPL"],"bars":["*"]}
    < [{"T":"subscription","trades":["AAPL"],"quotes":[],"bars":["*"],...,"corrections":["AAPL"],"cancelErrors":["AAPL"]}]
    < [{"T":"t","S":"AAPL","i":628,"x":"K","p":162.92,"s":3,"c":["@"],"z":"C","t":"2023-04-06T11:54:26.838232225Z"}]

Errors are ``[{"T":"error","code":N,"msg":"..."}]`` with Alpaca's codes and texts (400-410, 500).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Mapping

from tickpipe.emulators.alpaca_feed import Event
from tickpipe.emulators.alpaca_session import StreamSession
from tickpipe.emulators.alpaca_wire import control, decode_client, error, v2_message

IMPLIED_CHANNELS = ("corrections", "cancelErrors")  # follow `trades`; clients cannot ask for them
KNOWN_CHANNELS = frozenset({"trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
                            "imbalances", "orderbooks", "news", "pricing"})


def header_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """Credentials on the upgrade request: APCA-API-KEY-ID/-SECRET-KEY, or Authorization Bearer/Basic."""
    key, secret = headers.get("APCA-API-KEY-ID"), headers.get("APCA-API-SECRET-KEY")
    if key is not None or secret is not None:
        return key or "", secret or ""
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return "oauth", value.strip()
    if scheme.lower() == "basic":
        try:
            key, _, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return key, secret
    return None


class V2Session(StreamSession):
    async def opened(self) -> None:
        async with self.lock:
            await self.send(control("success", msg="connected"))
            creds = header_credentials(self.request.headers)
            if creds is not None:
                await self._authenticate(*creds, announce=self.settings.header_auth_announce)

    async def handle(self, data: str | bytes) -> None:
        if len(data) > self.emu.options.max_frame_bytes:
            return await self._error(400)
        try:
            msg = decode_client(data)
        except ValueError:
            return await self._error(400)
        if not isinstance(msg, dict):
            return await self._error(400)
        action = msg.get("action")
        if action == "auth":
            await self.emu.slow()
            async with self.lock:
                await self._authenticate(msg.get("key"), msg.get("secret"))
        elif action in ("subscribe", "unsubscribe"):
            if self.account is None:
                return await self._error(401)
            await self.emu.slow()
            await self._change(action, msg)
        else:
            await self._error(400)

    def render(self, event: Event) -> dict:
        return v2_message(event, self.codec, self.feed.crypto, self.settings.quote_size_lots)

    def frames(self, payloads: list[Any]) -> list[str | bytes]:
        """Data messages batched into arrays; a malformed-frame fault stands alone between them."""
        out: list[str | bytes] = []
        batch: list[dict] = []
        for payload in payloads:
            if isinstance(payload, dict):
                batch.append(payload)
                continue
            if batch:
                out.append(self.codec.encode(batch))
                batch = []
            out.append(self.codec.raw(payload))
        if batch:
            out.append(self.codec.encode(batch))
        return out

    async def auth_timed_out(self) -> None:
        await self.send(error(404))
        await super().auth_timed_out()

    async def slow_client(self) -> None:
        await self.send(error(407))
        await self.close("slow_client", self.settings.error_close_code)

    async def internal_error(self) -> None:
        await self._error(500)

    async def _error(self, code: int) -> None:
        async with self.lock:
            await self.send(error(code))

    async def _authenticate(self, key: Any, secret: Any, announce: bool = True) -> None:
        """Answer an auth attempt (``lock`` held)."""
        if self.account is not None:
            return await self.send(error(403))
        code, account = self.emu.admit(self.feed, key, secret, self.conn)
        if code:
            await self.send(error(code))
            if self.settings.close_on_auth_error:
                await self.close("auth_failed", self.settings.error_close_code)
            return
        self.account = account
        self.start_streaming(self.emu.market(self.feed, account))
        if announce:
            await self.send(control("success", msg="authenticated"))

    async def _change(self, action: str, msg: dict) -> None:
        updates: dict[str, list[str]] = {}
        for channel, symbols in msg.items():
            if channel == "action" or channel in IMPLIED_CHANNELS or symbols is None:
                continue
            if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                return await self._error(400)
            if channel not in self.feed.channels:
                if symbols:
                    return await self._error(410 if channel in KNOWN_CHANNELS else 400)
                continue
            if not all(self.feed.valid_symbol(s) for s in symbols):
                return await self._error(400)
            updates[channel] = symbols
        async with self.lock:
            new_books: list[str] = []
            if action == "subscribe":
                if self._over_limit(updates):
                    return await self.send(error(405))
                for channel, symbols in updates.items():
                    added = self.subs.add(channel, symbols)
                    if channel == "orderbooks":
                        new_books += added
            else:
                for channel, symbols in updates.items():
                    self.subs.remove(channel, symbols)
            await self.send(self._ack())
            if new_books:  # a full book (r: true) first, then changes
                books = self.subs.expand(new_books, self.source.market)
                await self.send_events([self.source.snapshot(s) for s in books])

    def _over_limit(self, updates: dict[str, list[str]]) -> bool:
        limit = self.settings.symbol_limit
        if not self.feed.limited or limit <= 0:
            return False
        wanted = {s for ch in ("trades", "quotes") for s in self.subs.listed(ch) + updates.get(ch, [])}
        return "*" in wanted or len(wanted) > limit

    def _ack(self) -> list[dict]:
        """The whole subscription set; corrections and cancelErrors mirror trades on stock feeds."""
        msg: dict[str, Any] = {"T": "subscription"}
        for channel in self.feed.channels:
            msg[channel] = self.subs.listed(channel)
        if not self.feed.crypto:
            for channel in IMPLIED_CHANNELS:
                msg[channel] = self.subs.listed("trades")
        return [msg]
