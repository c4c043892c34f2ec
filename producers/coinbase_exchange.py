"""Coinbase Exchange producer adapter (``tickpipe produce coinbase-exchange``).

One subscribe for every configured channel plus ``heartbeat`` (1/s per product: the
staleness watchdog's keepalive), HMAC-signed with a fresh timestamp when Exchange API
keys are configured (required for ``full``, ``level2``, ``level3``, ``user``)::

    > {"type":"subscribe","product_ids":["BTC-USD"],"channels":["heartbeat","matches","level2_batch"],
       "key":"…","passphrase":"…","timestamp":"1700000000.123456","signature":"4ce8mVb0…="}
    < {"type":"subscriptions","channels":[{"name":"heartbeat","product_ids":["BTC-USD"],"account_ids":null},…]}

``Sorry, you could not be authenticated`` (or the "require authentication" refusal of a
signed subscribe) is a permanent :class:`AuthError`; an unknown product is logged, not
fatal. A resync unsubscribes and resubscribes the product (level2 sends a fresh snapshot);
the level-3 REST snapshot a processor needs comes from :func:`fetch_book_snapshot`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from dataclasses import dataclass

import aiohttp
import orjson

from tickpipe.config import ConfigError, Secret, setting
from tickpipe.logs import get_logger
from tickpipe.producers.base import AuthError, FeedAdapter, FeedError, ResyncTarget, Session, Transport, dumps
from tickpipe.producers.transport import open_websocket

log = get_logger("tickpipe.producer.coinbase_exchange")

CHANNELS = ("heartbeat", "status", "ticker", "ticker_batch", "level2", "level2_batch", "matches", "full",
            "user", "level3", "auctionfeed", "rfq_matches")
AUTH_CHANNELS = ("full", "level2", "level3", "user")
NO_PRODUCTS = ("status", "rfq_matches")
ACK_NAME = {"ticker_batch": "ticker_1000", "level2_batch": "level2_50"}   # the acks use the old names
AUTH_REFUSED = ("Sorry, you could not be authenticated", "require authentication")


@dataclass(frozen=True)
class CoinbaseExchangeSettings:
    """Section ``coinbase_exchange``."""

    api_key: Secret | None = setting(None, help="Exchange API key (or TICKPIPE_COINBASE_EXCHANGE_API_KEY_FILE); "
                                                "unset: unsigned subscribe, public channels only")
    api_secret: Secret | None = setting(None, help="its base64 secret (or ..._API_SECRET_FILE)")
    passphrase: Secret | None = setting(None, help="its passphrase (or ..._PASSPHRASE_FILE)")
    url: str = setting("wss://ws-feed.exchange.coinbase.com", help="websocket endpoint (ws-direct needs keys)")
    rest_url: str = setting("https://api.exchange.coinbase.com", help="REST base URL for book snapshots")
    channels: tuple[str, ...] = setting(("level2_batch", "matches", "ticker"),
                                        help=f"channels besides heartbeat (always subscribed): {', '.join(CHANNELS)}")
    product_ids: tuple[str, ...] = setting(("BTC-USD", "ETH-USD"), help="products, BASE-QUOTE")

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise ConfigError(f"TICKPIPE_COINBASE_EXCHANGE_CHANNELS: unknown channel(s) {', '.join(unknown)}; "
                              f"known: {', '.join(CHANNELS)}")
        keys = (self.api_key, self.api_secret, self.passphrase)
        if any(keys) and not all(keys):
            raise ConfigError("TICKPIPE_COINBASE_EXCHANGE_API_KEY, _API_SECRET and _PASSPHRASE go together: "
                              "set all three or none")
        if self.api_secret:
            try:
                base64.b64decode(self.api_secret.reveal(), validate=True)
            except (binascii.Error, ValueError):
                raise ConfigError("TICKPIPE_COINBASE_EXCHANGE_API_SECRET: not a base64 Exchange API secret") from None
        private = [c for c in self.channels if c in AUTH_CHANNELS]
        if private and not self.api_key:
            raise ConfigError(f"TICKPIPE_COINBASE_EXCHANGE_CHANNELS: {', '.join(private)} need Exchange API keys "
                              "(TICKPIPE_COINBASE_EXCHANGE_API_KEY, _API_SECRET, _PASSPHRASE)")
        if not self.product_ids:
            raise ConfigError("TICKPIPE_COINBASE_EXCHANGE_PRODUCT_IDS: at least one product is needed")

    def channel_list(self) -> list[str]:
        return ["heartbeat"] + [c for c in self.channels if c != "heartbeat"]


def signature(secret_b64: str, timestamp: str) -> str:
    """``base64(HMAC-SHA256(base64decode(secret), timestamp + "GET/users/self/verify"))``."""
    mac = hmac.new(base64.b64decode(secret_b64), f"{timestamp}GET/users/self/verify".encode(), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode()


class CoinbaseExchangeAdapter(FeedAdapter):
    provider = "coinbase-exchange"
    settings_class = CoinbaseExchangeSettings
    loop_defaults = {"stale_after_s": 10.0}   # heartbeats arrive every second per product

    async def connect(self) -> Transport:
        return await open_websocket(self.settings.url, self.loop_settings)

    async def subscribe(self, session: Session) -> None:
        await session.send(self._message("subscribe", self.settings.channel_list(), list(self.settings.product_ids)))
        ack = await self._answer(session)
        got = {c.get("name"): set(c.get("product_ids") or ()) for c in ack.get("channels") or () if isinstance(c, dict)}
        missing = {ch: sorted(set(self.settings.product_ids) - got.get(ACK_NAME.get(ch, ch), set()))
                   for ch in self.settings.channel_list() if ch not in NO_PRODUCTS}
        missing = {ch: ids for ch, ids in missing.items() if ids}
        if missing:
            log.warning("coinbase-exchange did not subscribe everything asked for", missing=missing)

    async def unsubscribe(self, session: Session) -> None:
        await session.send(self._message("unsubscribe", self.settings.channel_list(), list(self.settings.product_ids)))

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        """Unsubscribe and resubscribe the product on its channels (level2: a fresh snapshot)."""
        if target.instrument is not None and target.instrument not in self.settings.product_ids:
            return False
        wanted = {ACK_NAME.get(c, c): c for c in self.settings.channel_list() if c not in NO_PRODUCTS}
        channel = ACK_NAME.get(target.channel or "", target.channel)
        # the normalizer names a book's channel "level2" whether it came on level2 or level2_batch
        family = [c for c in wanted.values() if target.channel and c.startswith(target.channel)]
        channels = [wanted[channel]] if channel in wanted else (family or list(wanted.values()))
        products = [target.instrument] if target.instrument else list(self.settings.product_ids)
        await session.send(self._message("unsubscribe", channels, products))
        await session.send(self._message("subscribe", channels, products))
        return True

    async def on_frame(self, session: Session, frame: str | bytes) -> None:
        """An error notice while streaming (ErrSlowConsume, expired auth...) ends the session."""
        if isinstance(frame, str) and '"error"' in frame[:40]:
            doc = _json(frame)
            if isinstance(doc, dict) and doc.get("type") == "error":
                message = str(doc.get("message"))[:200]
                if message.startswith(("Failed to subscribe", "Failed to unsubscribe")):
                    log.warning("coinbase-exchange refused a (un)subscribe", message=message,
                                reason=str(doc.get("reason"))[:200])
                    return
                raise FeedError(f"coinbase-exchange error: {message} ({str(doc.get('reason'))[:200]})")

    # ----- helpers -----
    def _message(self, kind: str, channels: list[str], products: list[str]) -> str:
        msg: dict = {"type": kind, "product_ids": products, "channels": channels}
        s = self.settings
        if s.api_key:
            ts = f"{time.time():.6f}"
            msg.update(key=s.api_key.reveal(), passphrase=s.passphrase.reveal(), timestamp=ts,
                       signature=signature(s.api_secret.reveal(), ts))
        return dumps(msg)

    async def _answer(self, session: Session) -> dict:
        """The ``subscriptions`` ack; auth refusals raise, other errors (bad products) are logged."""
        while True:
            doc = _json(await session.recv())
            if not isinstance(doc, dict):
                continue
            if doc.get("type") == "subscriptions":
                return doc
            if doc.get("type") == "error":
                text = f"{str(doc.get('message'))[:200]}: {str(doc.get('reason'))[:200]}"
                if any(marker in text for marker in AUTH_REFUSED):
                    raise AuthError(f"coinbase-exchange refused the subscribe: {text} "
                                    f"({'check key, secret and passphrase' if self.settings.api_key else 'no API keys configured'})",
                                    permanent=True)
                log.warning("coinbase-exchange subscribe error", error=text)


async def fetch_book_snapshot(url: str, product: str, level: int = 3, *, timeout_s: float = 10.0,
                              http: aiohttp.ClientSession | None = None) -> dict:
    """``GET <url>/products/<product>/book?level=<level>``: ``bids``, ``asks`` and integer ``sequence``.

    Apply buffered full-channel messages with ``sequence > snapshot["sequence"]`` on top.
    Raises :class:`FeedError` for an HTTP error or a body without the documented shape.
    """
    if level not in (1, 2, 3):
        raise ValueError(f"level must be 1, 2 or 3, got {level}")
    target = f"{url.rstrip('/')}/products/{product}/book"
    own = http is None
    client = http or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))
    try:
        async with client.get(target, params={"level": str(level)}) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise FeedError(f"book snapshot {product} level {level}: HTTP {resp.status} {body[:200]!r}")
    finally:
        if own:
            await client.close()
    doc = _json(body)
    if not (isinstance(doc, dict) and isinstance(doc.get("sequence"), int)
            and isinstance(doc.get("bids"), list) and isinstance(doc.get("asks"), list)):
        raise FeedError(f"book snapshot {product} level {level}: unexpected body {body[:200]!r}")
    return doc


def _json(frame: str | bytes):
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None   # garbage is recorded verbatim by the loop; the integrity stage reports it
