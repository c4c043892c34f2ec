"""Coinbase Advanced Trade channel payloads built from :class:`~tickpipe.emulators.market.MarketSim`.

One :class:`CoinbaseMarket` per emulator holds, per product, a seeded random walk on the
product's quote increment, the last 50 trades (for ``market_trades`` snapshots), the
5-minute candle (the sim's bar) the trades build and rolling 24 h statistics for ``ticker``. Every
number is rendered as decimal text, as Coinbase does. A ticker event, for example::

    {"type":"ticker","product_id":"BTC-USD","price":"65000.01","volume_24_h":"1.2","low_24_h":"64990",
     "high_24_h":"65010.5","low_52_w":"...","high_52_w":"...","price_percent_chg_24_h":"0.0001",
     "best_bid":"65000","best_ask":"65000.02","best_bid_quantity":"0.0312","best_ask_quantity":"0.0044"}
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from tickpipe.emulators.market import MarketSim, Trade, fmt

# product -> (start price, quote increment); other products get a seeded price and a cent tick.
KNOWN_PRODUCTS = {
    "BTC-USD": ("65000.00", "0.01"),
    "ETH-USD": ("3200.00", "0.01"),
    "SOL-USD": ("150.00", "0.01"),
    "DOGE-USD": ("0.15000", "0.00001"),
}
BASE_INCREMENT = "0.00000001"
LOT = "0.0001"          # trade and book sizes are multiples of this (itself a multiple of BASE_INCREMENT)
CANDLE_S = 300          # Coinbase candles are 5-minute buckets
RECENT_TRADES = 50
EPOCH_EVENT_TIME = "1970-01-01T00:00:00Z"  # what snapshots carry as event_time


def rfc3339(ts_ns: int, digits: int = 9) -> str:
    """``2026-09-05T22:10:29.562008293Z`` (``digits`` fractional digits)."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{stamp}.{frac:09d}"[: len(stamp) + 1 + digits] + "Z" if digits else stamp + "Z"


def go_time(ts_ns: int, started_ns: int) -> str:
    """Go's ``time.Time.String()`` with its monotonic suffix, as in ``heartbeats.current_time``."""
    secs, frac = divmod(ts_ns, 1_000_000_000)
    mono = (ts_ns - started_ns) / 1e9
    return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(secs))}.{frac:09d} +0000 UTC m=+{mono:.9f}"


@dataclass
class ProductState:
    product_id: str
    sim: MarketSim
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_TRADES))
    open_24h: Decimal = Decimal(0)
    low_24h: Decimal = Decimal(0)
    high_24h: Decimal = Decimal(0)
    volume_24h: Decimal = Decimal(0)

    @property
    def inst(self):
        return self.sim.instruments[self.product_id]


class CoinbaseMarket:
    """Per-product market state shared by every connection of one emulator."""

    def __init__(self, products: tuple[str, ...], seed: int, candle_s: int = CANDLE_S) -> None:
        self.sim = MarketSim([], seed=seed, lot=LOT, bar_ns=candle_s * 1_000_000_000)
        self.products: dict[str, ProductState] = {}
        for product in products:
            price, tick = KNOWN_PRODUCTS.get(product, (None, "0.01"))
            self.sim.add_instrument(product, tick=tick, lot=LOT, start_price=price)
            state = ProductState(product, self.sim)
            p = state.inst.price
            state.open_24h, state.low_24h, state.high_24h = p, p, p
            self.products[product] = state
            self.trades(product, 5, time.time_ns())   # some history for the first market_trades snapshot

    def trades(self, product_id: str, count: int, now_ns: int) -> list[Trade]:
        """``count`` new trades (oldest first) with consecutive trade ids; updates candle and 24 h stats."""
        state = self.products[product_id]
        out = []
        for i in range(count):
            t = state.sim.trade(product_id, now_ns - (count - 1 - i) * 1000)
            state.recent.append(t)
            state.low_24h, state.high_24h = min(state.low_24h, t.price), max(state.high_24h, t.price)
            state.volume_24h += t.size
            out.append(t)
        return out

    @staticmethod
    def trade_json(t: Trade) -> dict:
        # Coinbase reports the maker side: a taker buy ("buy") lifted a resting SELL order.
        return {"trade_id": str(t.trade_id), "product_id": t.instrument, "price": fmt(t.price),
                "size": fmt(t.size), "side": "SELL" if t.side == "buy" else "BUY", "time": rfc3339(t.ts_ns, 6)}

    def recent_trades(self, product_id: str) -> list[Trade]:
        return list(self.products[product_id].recent)

    def ticker(self, product_id: str, batch: bool = False) -> dict:
        state = self.products[product_id]
        price = state.inst.price
        change = (price - state.open_24h) / state.open_24h * 100 if state.open_24h else Decimal(0)
        doc = {"type": "ticker", "product_id": product_id, "price": fmt(price),
               "volume_24_h": fmt(state.volume_24h), "low_24_h": fmt(state.low_24h),
               "high_24_h": fmt(state.high_24h), "low_52_w": fmt(state.open_24h * Decimal("0.6")),
               "high_52_w": fmt(state.open_24h * Decimal("1.4")),
               "price_percent_chg_24_h": fmt(round(change, 14))}
        if not batch:
            quote = state.sim.quote(product_id, 0)
            doc.update(best_bid=fmt(quote.bid), best_ask=fmt(quote.ask),
                       best_bid_quantity=fmt(quote.bid_size), best_ask_quantity=fmt(quote.ask_size))
        return doc

    def book_snapshot(self, product_id: str) -> list[dict]:
        bids, asks = self.products[product_id].sim.book(product_id)
        return ([_level("bid", p, q, EPOCH_EVENT_TIME) for p, q in bids]
                + [_level("offer", p, q, EPOCH_EVENT_TIME) for p, q in asks])

    def book_updates(self, product_id: str, now_ns: int) -> list[dict]:
        """The level changes since the last call: absolute new sizes, ``"0"`` removes a level."""
        stamp = rfc3339(now_ns, 6)
        return [_level("bid" if side == "bid" else "offer", price, size, stamp)
                for side, price, size in self.products[product_id].sim.book_changes(product_id)]

    def candle(self, product_id: str) -> dict | None:
        """The current candle (the sim's bar of ``candle_s`` seconds, built from the trades), or None."""
        bar = self.products[product_id].inst.bar
        return None if bar is None else {
            "start": str(bar.start_ns // 1_000_000_000), "high": fmt(bar.high), "low": fmt(bar.low),
            "open": fmt(bar.open), "close": fmt(bar.close), "volume": fmt(bar.volume), "product_id": product_id}

    def status_product(self, product_id: str) -> dict:
        base, _, quote = product_id.partition("-")
        return {"product_type": "SPOT", "id": product_id, "base_currency": base, "quote_currency": quote,
                "base_increment": BASE_INCREMENT, "quote_increment": fmt(self.products[product_id].inst.tick),
                "display_name": f"{base}/{quote}", "status": "online", "status_message": "",
                "min_market_funds": "1"}

    def price(self, product_id: str) -> Decimal:
        return self.products[product_id].inst.price


def _level(side: str, price: Decimal, size: Decimal, stamp: str) -> dict:
    return {"side": side, "event_time": stamp, "price_level": fmt(price), "new_quantity": fmt(size)}
