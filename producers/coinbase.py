"""Coinbase Advanced Trade producer adapter (``tickpipe produce coinbase``).

One channel per subscribe message, a freshly signed JWT in every one when a CDP key is
configured (optional for the public channels, required for ``user`` and
``futures_balance_summary``), and ``heartbeats`` always subscribed first::

    > {"type":"subscribe","product_ids":[],"channel":"heartbeats","jwt":"eyJhbGciOiJFUzI1NiIs..."}
    < {"channel":"subscriptions","client_id":"","timestamp":"...","sequence_num":0,"events":[{"subscriptions":{"heartbeats":["heartbeats"]}}]}
    > {"type":"subscribe","product_ids":["BTC-USD"],"channel":"level2","jwt":"eyJ..."}
    < {"channel":"subscriptions",...,"events":[{"subscriptions":{"heartbeats":["heartbeats"],"level2":["BTC-USD"]}}]}
    < {"channel":"l2_data",...,"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[...]}]}

Every subscribe is answered by a ``subscriptions`` ack or ``{"type":"error",...}``; an error
during subscribe is a credential rejection (Coinbase reports unknown channels the same way).
Products Coinbase drops from the ack (unknown ids) are logged, not fatal. ``sequence_num``
gaps are the integrity stage's business; a resync unsubscribes and resubscribes the
product (a new ``level2`` snapshot), as there is no replay.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from tickpipe.config import ConfigError, Secret, setting
from tickpipe.logs import get_logger
from tickpipe.producers.base import AuthError, FeedAdapter, FeedError, ResyncTarget, Session, Transport, dumps
from tickpipe.producers.coinbase_auth import JwtSigner
from tickpipe.producers.transport import open_websocket

log = get_logger("tickpipe.producer.coinbase")

CHANNELS = ("heartbeats", "candles", "status", "ticker", "ticker_batch", "level2", "market_trades",
            "user", "futures_balance_summary")
AUTH_CHANNELS = ("user", "futures_balance_summary")
NO_PRODUCTS = ("heartbeats", "futures_balance_summary")
WIRE_CHANNEL = {"l2_data": "level2"}   # data channel name on the wire -> subscription channel


@dataclass(frozen=True)
class CoinbaseSettings:
    """Section ``coinbase``."""

    key_name: Secret | None = setting(None, help="CDP API key name, organizations/{org}/apiKeys/{id} or the key id "
                                                 "(or TICKPIPE_COINBASE_KEY_NAME_FILE); unset: no JWT, public channels only")
    private_key: Secret | None = setting(None, help="the key's private key: EC P-256 PEM or Ed25519 PEM/base64 "
                                                    "(or TICKPIPE_COINBASE_PRIVATE_KEY_FILE)")
    url: str = setting("wss://advanced-trade-ws.coinbase.com",
                       help="endpoint (user data: wss://advanced-trade-ws-user.coinbase.com)")
    channels: tuple[str, ...] = setting(("level2", "market_trades", "ticker"),
                                        help=f"channels besides heartbeats (always subscribed): {', '.join(CHANNELS)}")
    product_ids: tuple[str, ...] = setting(("BTC-USD", "ETH-USD"), help="products, BASE-QUOTE")

    def __post_init__(self) -> None:
        unknown = [c for c in self.channels if c not in CHANNELS]
        if unknown:
            raise ConfigError(f"TICKPIPE_COINBASE_CHANNELS: unknown channel(s) {', '.join(unknown)}; known: {', '.join(CHANNELS)}")
        if bool(self.key_name) != bool(self.private_key):
            raise ConfigError("TICKPIPE_COINBASE_KEY_NAME and TICKPIPE_COINBASE_PRIVATE_KEY go together: set both or neither")
        private = [c for c in self.channels if c in AUTH_CHANNELS]
        if private and not self.key_name:
            raise ConfigError(f"TICKPIPE_COINBASE_CHANNELS: {', '.join(private)} need a CDP API key "
                              "(TICKPIPE_COINBASE_KEY_NAME and TICKPIPE_COINBASE_PRIVATE_KEY)")
        if any(c not in NO_PRODUCTS for c in self.channels) and not self.product_ids:
            raise ConfigError("TICKPIPE_COINBASE_PRODUCT_IDS: at least one product is needed for these channels")

    def subscriptions(self) -> dict[str, list[str]]:
        """Channel -> product ids, in subscribe order: heartbeats first, then the configured channels."""
        chosen = {"heartbeats": []}
        for channel in self.channels:
            chosen[channel] = [] if channel in NO_PRODUCTS else list(self.product_ids)
        return chosen


class CoinbaseAdapter(FeedAdapter):
    provider = "coinbase"
    settings_class = CoinbaseSettings
    loop_defaults = {"stale_after_s": 15.0}   # heartbeats arrive every second

    def __init__(self, settings: CoinbaseSettings, loop_settings=None) -> None:
        super().__init__(settings, loop_settings)
        self.signer = JwtSigner(settings.key_name, settings.private_key) if settings.key_name else None

    async def connect(self) -> Transport:
        return await open_websocket(self.settings.url, self.loop_settings)

    async def subscribe(self, session: Session) -> None:
        wanted = self.settings.subscriptions()
        for channel, products in wanted.items():
            await self._send(session, "subscribe", channel, products)
        ack: dict = {}
        for channel in wanted:   # one answer per message, in order: an ack or an error
            ack = await self._answer(session, channel)
        missing = {ch: sorted(set(products) - set(ack.get(ch, ()))) for ch, products in wanted.items()
                   if ch not in NO_PRODUCTS and ch != "user"}
        missing = {ch: products for ch, products in missing.items() if products}
        if missing:
            log.warning("coinbase dropped unknown products from the subscription", missing=missing)

    async def unsubscribe(self, session: Session) -> None:
        for channel, products in self.settings.subscriptions().items():
            await self._send(session, "unsubscribe", channel, products)

    async def resync(self, session: Session, target: ResyncTarget) -> bool:
        """Unsubscribe and resubscribe the target product on its channels (a new snapshot)."""
        channel = WIRE_CHANNEL.get(target.channel or "", target.channel)
        chosen = [ch for ch in self.settings.subscriptions()
                  if ch not in NO_PRODUCTS and channel in (None, ch)
                  and (target.instrument is None or target.instrument in self.settings.product_ids)]
        if not chosen:
            return False
        products = [target.instrument] if target.instrument else list(self.settings.product_ids)
        for ch in chosen:
            await self._send(session, "unsubscribe", ch, products)
            await self._send(session, "subscribe", ch, products)
        return True

    async def on_frame(self, session: Session, frame: str | bytes) -> None:
        """An error frame once streaming (a refused resubscribe, an expired session) ends the session."""
        if isinstance(frame, str) and '"error"' in frame[:64]:
            doc = _json(frame)
            if isinstance(doc, dict) and doc.get("type") == "error":
                raise FeedError(f"coinbase error: {str(doc.get('message'))[:200]}")

    # ----- helpers -----
    async def _send(self, session: Session, kind: str, channel: str, products: list[str]) -> None:
        message = {"type": kind, "product_ids": products, "channel": channel}
        if self.signer is not None:
            message["jwt"] = self.signer.token()   # a fresh JWT for every message
        await session.send(dumps(message))

    async def _answer(self, session: Session, channel: str) -> dict:
        """The next ``subscriptions`` ack (its subscription map) or the error answering ``channel``."""
        while True:
            doc = _json(await session.recv())
            if not isinstance(doc, dict):
                continue
            if doc.get("type") == "error":
                message = str(doc.get("message"))[:200]
                raise AuthError(f"coinbase refused the {channel} subscription: {message} "
                                f"({'check the CDP key name and private key' if self.signer else 'no CDP key configured'})",
                                permanent=True)
            if doc.get("channel") == "subscriptions":
                events = doc.get("events") or [{}]
                return (events[0] or {}).get("subscriptions") or {}


def _json(frame: str | bytes):
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        return None   # garbage is recorded verbatim by the loop; the integrity stage reports it
