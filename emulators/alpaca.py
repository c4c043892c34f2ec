"""Alpaca market-data emulator: v2 stock streams, the v1beta3 crypto stream and the legacy v1 stream.

Endpoints (one port): ``/v2/iex``, ``/v2/sip``, ``/v2/delayed_sip`` (times 15 min behind),
``/v2/test`` (only ``FAKEPACA`` has data), ``/v1beta3/crypto/{us,us-1,eu-1}`` and ``/stream``
(legacy v1). JSON text frames, or msgpack binary frames when the upgrade request says
``Content-Type: application/msgpack`` (``T`` first in every map, times as msgpack Timestamp).
Protocols: :mod:`.alpaca_v2`, :mod:`.alpaca_v1`; connection lifecycle: :mod:`.alpaca_session`;
data: :mod:`.alpaca_feed` (which also says why only trades are faultable); encoding: :mod:`.alpaca_wire`.

``--rate`` counts market events per connection: each is a trade or a book move (a quote
and/or an orderbook change), sent if subscribed; bars follow the trades. ``--symbols`` with a
slash (``BTC/USD``) are crypto, the others stocks; either list defaults to our own.

Enforced as Alpaca does: auth within ``auth_timeout_s`` (404), one connection per account
and endpoint (406), the IEX/v1 symbol limit on trades+quotes (405, state unchanged),
entitlement (409 for ``denied_feeds``), and, when ``key_id``/``secret_key`` (or
``access_token``) are configured, exactly those credentials (402). Faults: everything in
:class:`~tickpipe.emulators.faults.FaultPlan` except ``token_expiry`` (Alpaca issues no tokens).
"""

from __future__ import annotations

import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tickpipe.config import Secret, setting
from tickpipe.emulators.alpaca_feed import AccountMarket
from tickpipe.emulators.alpaca_v1 import V1Session
from tickpipe.emulators.alpaca_v2 import V2Session
from tickpipe.emulators.base import Emulator, EmulatorOptions

STOCKS = ("AAPL", "MSFT", "AMD", "SPY", "TSLA", "NVDA")
CRYPTO = ("BTC/USD", "ETH/USD", "SOL/USD", "DOGE/USD")
TEST_SYMBOLS = ("FAKEPACA",)
STOCK_FEEDS = ("iex", "sip", "delayed_sip", "test")
CRYPTO_LOCATIONS = ("us", "us-1", "eu-1")
STOCK_CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "imbalances")
CRYPTO_CHANNELS = ("trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars")
V1_CHANNELS = ("trades", "quotes", "bars")
TOKEN_KEYS = ("oauth", "access_token")  # {"action":"auth","key":"oauth","secret":<token>}
STOCK_SYMBOL = re.compile(r"^(\*|[A-Z][A-Z0-9.\-]{0,15})$")
CRYPTO_SYMBOL = re.compile(r"^(\*|[A-Z0-9]{1,15}/[A-Z0-9]{1,15})$")


@dataclass(frozen=True)
class AlpacaEmulatorSettings:
    """Section ``emulator_alpaca``: credentials it enforces and Alpaca's unconfirmed behaviours."""

    key_id: str | None = setting(None, help="the API key id it accepts (unset: any non-empty key and secret)")
    secret_key: Secret | None = setting(None, help="the secret key that goes with key_id")
    access_token: Secret | None = setting(None, help="the OAuth/broker token it accepts (key 'oauth'/'access_token' or Bearer)")
    auth_timeout_s: float = setting(10.0, minimum=0.05, help="auth must succeed this soon after connect (else 404 and close)")
    connection_limit: int = setting(1, minimum=1, help="authenticated connections per account and endpoint (406 beyond)")
    symbol_limit: int = setting(30, minimum=0, help="trades+quotes symbols on /v2/iex and v1 (405 beyond; 0 = none)")
    denied_feeds: tuple[str, ...] = setting((), help="feeds answering 409 at auth, e.g. sip,delayed_sip,crypto/us,v1")
    delayed_sip_s: float = setting(900.0, minimum=0, help="how far /v2/delayed_sip lags the clock")
    bar_interval_s: float = setting(60.0, minimum=0.05, help="bar length (Alpaca: a minute; shorter for tests)")
    header_auth_announce: bool = setting(True, help="after auth by upgrade headers, send 'authenticated' unasked (unconfirmed)")
    close_on_auth_error: bool = setting(False, help="close the socket after 402/406/409 (unconfirmed; Go retries 406 in place)")
    error_close_code: int = setting(1008, minimum=1000, maximum=4999, help="close code after 404 auth timeout and 407 slow client")
    server_ping_s: float = setting(0.0, minimum=0, help="server-sent WebSocket pings this often, closing on a missed pong (unconfirmed; 0 = none)")
    quote_size_lots: bool = setting(False, help="stock quote sizes in round lots of 100 instead of shares (unconfirmed)")


@dataclass(frozen=True)
class Feed:
    """One endpoint: its name (``iex``, ``crypto/us``, ``v1``), path and the data it serves."""

    name: str
    path: str
    channels: tuple[str, ...]
    universe: tuple[str, ...]
    crypto: bool = False
    legacy: bool = False
    limited: bool = False        # the symbol limit applies
    open_universe: bool = True   # any well-formed symbol gets data, not only the universe
    delay_ns: int = 0

    def valid_symbol(self, symbol: str) -> bool:
        return bool((CRYPTO_SYMBOL if self.crypto else STOCK_SYMBOL).match(symbol))


def build_feeds(stocks: tuple[str, ...], crypto: tuple[str, ...], settings: AlpacaEmulatorSettings) -> dict[str, Feed]:
    feeds = [Feed(name, f"/v2/{name}", STOCK_CHANNELS, stocks, limited=name == "iex",
                  delay_ns=int(settings.delayed_sip_s * 1e9) if name == "delayed_sip" else 0)
             for name in STOCK_FEEDS if name != "test"]
    feeds.append(Feed("test", "/v2/test", STOCK_CHANNELS, TEST_SYMBOLS, open_universe=False))
    feeds += [Feed(f"crypto/{loc}", f"/v1beta3/crypto/{loc}", CRYPTO_CHANNELS, crypto, crypto=True)
              for loc in CRYPTO_LOCATIONS]
    feeds.append(Feed("v1", "/stream", V1_CHANNELS, stocks, legacy=True, limited=True))
    return {feed.path: feed for feed in feeds}


class AlpacaEmulator(Emulator):
    provider = "alpaca"
    default_symbols = STOCKS + CRYPTO
    settings_class = AlpacaEmulatorSettings

    def __init__(self, options: EmulatorOptions | None = None) -> None:
        super().__init__(options)
        self.settings: AlpacaEmulatorSettings = self.options.credentials or AlpacaEmulatorSettings()
        stocks = tuple(s for s in self.symbols if "/" not in s) or STOCKS
        crypto = tuple(s for s in self.symbols if "/" in s) or CRYPTO
        self.feeds = build_feeds(stocks, crypto, self.settings)
        self.bar_ns = int(self.settings.bar_interval_s * 1e9)
        self._markets: dict[tuple[str, str], AccountMarket] = {}
        self._slots: Counter[tuple[str, str]] = Counter()
        self._auth_attempts = 0

    def routes(self, app: web.Application) -> None:
        for path in self.feeds:
            app.router.add_get(path, self._serve)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        feed = self.feeds[request.path]
        session = (V1Session if feed.legacy else V2Session)(self, feed, request)
        return await session.serve()

    def admit(self, feed: Feed, key: Any, secret: Any, conn: int) -> tuple[int, str | None]:
        """Check an auth attempt: (0, account) and a claimed connection slot, or (error code, None)."""
        self._auth_attempts += 1
        fail = self.options.faults.auth_fail
        if fail and (fail < 0 or self._auth_attempts <= fail):
            self.journal.write("fault", conn, fault="auth_fail", attempt=self._auth_attempts, feed=feed.name)
            return 402, None
        if not (isinstance(key, str) and key and isinstance(secret, str) and secret):
            return 402, None
        if not self._credentials_ok(key, secret):
            return 402, None
        if feed.name in self.settings.denied_feeds:
            return 409, None
        account = secret if key in TOKEN_KEYS else key
        slot = (feed.path, account)
        if self._slots[slot] >= self.settings.connection_limit:
            return 406, None
        self._slots[slot] += 1
        return 0, account

    def release(self, path: str, account: str) -> None:
        slot = (path, account)
        self._slots[slot] -= 1
        if self._slots[slot] <= 0:
            del self._slots[slot]

    def market(self, feed: Feed, account: str) -> AccountMarket:
        """The account's market on this endpoint, kept across its reconnects."""
        slot = (feed.path, account)
        if slot not in self._markets:
            seed = zlib.crc32(f"{self.options.seed}:{feed.path}:{account}".encode())
            self._markets[slot] = AccountMarket(feed.universe, seed, feed.crypto, self.bar_ns, feed.open_universe)
        return self._markets[slot]

    def _credentials_ok(self, key: str, secret: str) -> bool:
        s = self.settings
        if key in TOKEN_KEYS:
            if s.access_token is not None:
                return secret == s.access_token.reveal()
            return s.key_id is None
        if s.key_id is not None:
            return key == s.key_id and s.secret_key is not None and secret == s.secret_key.reveal()
        return s.access_token is None
