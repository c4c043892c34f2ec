"""Alpaca market-data producer adapter: v2 stock / v1beta3 crypto streams, and the legacy v1 stream.

v2 session (JSON shown; msgpack when ``encoding: msgpack``, which Alpaca's own SDKs use)::

    < [{"T":"success","msg":"connected"}]
    > {"action":"auth","key":"PK...","secret":"..."}
    < [{"T":"success","msg":"authenticated"}]
    > {"action":"subscribe","trades":["AAPL"],"quotes":["AAPL"],"bars":["*"]}
    < [{"T":"subscription","trades":["AAPL"],"quotes":["AAPL"],"bars":["*"],...}]

v1 (``feed: v1``): ``{"action":"authenticate","data":{"key_id":..,"secret_key":..}}`` then
``{"action":"listen","data":{"streams":["T.AAPL","Q.AAPL","AM.AAPL"]}}``. Keepalive is
WebSocket ping/pong (``producer.ping_interval_s``); Alpaca has no in-band heartbeat.
Errors: 402/409/411 (and v1 ``unauthorized``) are permanent credential/entitlement
failures; 406 (connection limit: the previous session may still count) is retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgpack
import orjson

from tickpipe.config import Secret, setting
from tickpipe.producers.base import AuthError, FeedAdapter, FeedError, ResyncTarget, Session, Transport
from tickpipe.producers.transport import open_websocket

FEED_PATHS = {"iex": "/v2/iex", "sip": "/v2/sip", "delayed_sip": "/v2/delayed_sip", "test": "/v2/test",
              "crypto/us": "/v1beta3/crypto/us", "crypto/us-1": "/v1beta3/crypto/us-1",
              "crypto/eu-1": "/v1beta3/crypto/eu-1", "v1": "/stream"}
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "orderbooks")
V1_PREFIX = {"trades": "T", "quotes": "Q", "bars": "AM"}
PERMANENT = {402: "auth failed", 409: "insufficient subscription", 411: "insufficient scope"}
FATAL_IN_STREAM = (404, 407, 500)


@dataclass(frozen=True)
class AlpacaSettings:
    """Section ``alpaca``. Symbols are per channel; ``*`` means every symbol."""

    key_id: Secret = setting(help="API key id (or TICKPIPE_ALPACA_KEY_ID_FILE)")
    secret_key: Secret = setting(help="API secret key (or TICKPIPE_ALPACA_SECRET_KEY_FILE)")
    url: str = setting("wss://stream.data.alpaca.markets",
                       help="stream host; a URL with a path is used as it is (v1: wss://data.alpaca.markets)")
    feed: str = setting("iex", choices=FEED_PATHS, help="iex, sip, delayed_sip, test, crypto/us, crypto/us-1, crypto/eu-1 or v1")
    encoding: str = setting("msgpack", choices=("json", "msgpack"), help="v2 frame encoding (v1 is always JSON)")
    trades: tuple[str, ...] = setting(("AAPL", "MSFT"), help="symbols for trades (v1: T.<sym>)")
    quotes: tuple[str, ...] = setting(("AAPL", "MSFT"), help="symbols for quotes (v1: Q.<sym>)")
    bars: tuple[str, ...] = setting((), help="symbols for minute bars (v1: AM.<sym>)")
    updated_bars: tuple[str, ...] = setting((), help="symbols for updated bars")
    daily_bars: tuple[str, ...] = setting((), help="symbols for daily bars")
    statuses: tuple[str, ...] = setting((), help="symbols for trading statuses (stocks)")
    lulds: tuple[str, ...] = setting((), help="symbols for LULD bands (stocks)")
    orderbooks: tuple[str, ...] = setting((), help="symbols for order books (crypto)")

    def channels(self) -> dict[str, list[str]]:
        """Wire channel name -> symbols, for the channels that have any."""
        chosen = dict(zip(CHANNELS, (self.trades, self.quotes, self.bars, self.updated_bars, self.daily_bars,
                                     self.statuses, self.lulds, self.orderbooks)))
        return {ch: list(symbols) for ch, symbols in chosen.items() if symbols}


class AlpacaAdapter(FeedAdapter):
    provider = "alpaca"
    settings_class = AlpacaSettings

    @property
    def legacy(self) -> bool:
        return self.settings.feed == "v1"

    @property
    def msgpack(self) -> bool:
        return self.settings.encoding == "msgpack" and not self.legacy

    def endpoint(self) -> str:
        url = self.settings.url.split("?", 1)[0].rstrip("/")
        return url if urlsplit(url).path else url + FEED_PATHS[self.settings.feed]

    async def connect(self) -> Transport:
        headers = {"Content-Type": "application/msgpack"} if self.msgpack else {}
        return await open_websocket(self.endpoint(), self.loop_settings, headers=headers)

    async def authenticate(self, session: Session) -> None:
        key, secret = self.settings.key_id.reveal(), self.settings.secret_key.reveal()
        if self.legacy:
            await session.send_json({"action": "authenticate", "data": {"key_id": key, "secret_key": secret}})
            return self._check_v1_auth(await self._recv(session))
        self._expect_success(await self._recv_control(session), "connected")
        await self._send(session, {"action": "auth", "key": key, "secret": secret})
        self._expect_success(await self._recv_control(session), "authenticated")

    async def subscribe(self, session: Session) -> None:
        await self._change(session, "subscribe", self.settings.channels())
        reply = await self._recv_control(session, stream="listening")
        if self.legacy:
            if reply.get("stream") != "listening" or "streams" not in reply.get("data", {}):
                raise FeedError(f"alpaca v1 listen refused: {str(reply)[:200]}")
        elif reply.get("T") != "subscription":
            raise FeedError(f"alpaca subscribe refused: {_describe(reply)}")

    async def unsubscribe(self, session: Session) -> None:
        await self._change(session, "unsubscribe", self.settings.channels())

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        """Unsubscribe and resubscribe the target's symbol on every channel it is configured on."""
        chosen = {ch: [target.instrument] for ch, symbols in self.settings.channels().items()
                  if target.instrument in symbols and target.channel in (None, ch)}
        if not chosen:
            return False
        await self._change(session, "unsubscribe", chosen)
        await self._change(session, "subscribe", chosen)
        return True

    async def on_frame(self, session: Session, frame: str | bytes) -> None:
        """An in-band error that ends the session (404 auth timeout, 407 slow client, 500) raises."""
        if (b"\xa5error" if isinstance(frame, bytes) else '"error"') not in frame or self.legacy:
            return
        for msg in self._decode(frame):
            if isinstance(msg, dict) and msg.get("T") == "error" and msg.get("code") in FATAL_IN_STREAM:
                raise FeedError(f"alpaca error {msg.get('code')}: {msg.get('msg')}")

    # ----- helpers -----
    async def _change(self, session: Session, action: str, channels: dict[str, list[str]]) -> None:
        if self.legacy:
            streams = [f"{V1_PREFIX[ch]}.{s}" for ch, symbols in channels.items() if ch in V1_PREFIX for s in symbols]
            verb = "listen" if action == "subscribe" else "unlisten"
            await session.send_json({"action": verb, "data": {"streams": streams}})
        else:
            await self._send(session, {"action": action, **channels})

    async def _send(self, session: Session, obj: dict) -> None:
        if self.msgpack:
            await session.send(msgpack.packb(obj))
        else:
            await session.send_json(obj)

    def _decode(self, frame: str | bytes) -> list[Any]:
        try:
            doc = msgpack.unpackb(frame) if isinstance(frame, bytes) else orjson.loads(frame)
        except Exception:
            raise FeedError(f"alpaca sent an undecodable {len(frame)}-byte frame") from None
        return doc if isinstance(doc, list) else [doc]

    async def _recv(self, session: Session) -> Any:
        return self._decode(await session.recv())[0]

    async def _recv_control(self, session: Session, stream: str = "authorization") -> dict:
        """The next control reply, skipping data (v2: success/error/subscription; v1: the named stream)."""
        while True:
            for msg in self._decode(await session.recv()):
                if not isinstance(msg, dict):
                    continue
                if self.legacy and msg.get("stream") in (stream, "authorization"):
                    return msg
                if not self.legacy and msg.get("T") in ("success", "error", "subscription"):
                    return msg

    def _expect_success(self, msg: dict, what: str) -> None:
        if msg.get("T") == "success" and msg.get("msg") == what:
            return
        code = msg.get("code") if msg.get("T") == "error" else None
        if code in PERMANENT:
            raise AuthError(f"alpaca refused the credentials: {_describe(msg)}", permanent=True)
        if code == 406:
            raise AuthError(f"alpaca: {_describe(msg)} (another session on this key)", permanent=False)
        raise FeedError(f"alpaca: expected '{what}', got {_describe(msg)}")

    def _check_v1_auth(self, msg: Any) -> None:
        data = msg.get("data", {}) if isinstance(msg, dict) else {}
        if data.get("status") == "authorized":
            return
        if data.get("status") == "unauthorized":
            raise AuthError("alpaca v1 refused the credentials (unauthorized)", permanent=True)
        if "another connection" in str(data.get("error", "")):
            raise AuthError(f"alpaca v1: {data['error']}", permanent=False)
        raise FeedError(f"alpaca v1: unexpected reply to authenticate: {str(msg)[:200]}")


def _describe(msg: dict) -> str:
    if msg.get("T") == "error":
        return f"error {msg.get('code')} {msg.get('msg')!r}"
    return str(msg)[:200]
