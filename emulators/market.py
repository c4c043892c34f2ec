"""Synthetic but realistic market data, deterministic for a seed.

Per instrument: a random-walk price on the instrument's tick size, trade ids that grow by
one per trade, a top of book that never crosses, a small level-2 book, and minute bars
that agree with the trades. Prices are :class:`~decimal.Decimal` so each emulator can
render them the way its provider does (floats for Alpaca, strings for Coinbase...).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass
class Trade:
    instrument: str
    trade_id: int
    price: Decimal
    size: Decimal
    side: str  # "buy" (taker bought, hit the ask) or "sell"
    ts_ns: int


@dataclass
class Quote:
    instrument: str
    bid: Decimal
    bid_size: Decimal
    ask: Decimal
    ask_size: Decimal
    ts_ns: int


@dataclass
class Bar:
    instrument: str
    start_ns: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trades: int
    vwap: Decimal


@dataclass
class Instrument:
    symbol: str
    price: Decimal
    tick: Decimal
    lot: Decimal
    next_trade_id: int = 1
    bar: Bar | None = None
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)


BAR_NS = 60 * 1_000_000_000


class MarketSim:
    """One seeded random walk per instrument. ``tick``/``lot`` default to a cent and one share."""

    def __init__(self, symbols: list[str] | tuple[str, ...], seed: int = 1, tick: str = "0.01",
                 lot: str = "1", start_price: str | None = None, book_depth: int = 10,
                 bar_ns: int = BAR_NS) -> None:
        self.rng = random.Random(seed)
        self.book_depth = book_depth
        self.bar_ns = bar_ns  # bar length (a minute; shorter in tests)
        self.instruments: dict[str, Instrument] = {}
        for sym in symbols:
            self.add_instrument(sym, tick, lot, start_price)

    def add_instrument(self, sym: str, tick: str = "0.01", lot: str = "1", start_price: str | None = None) -> Instrument:
        """Add one instrument (e.g. one a client subscribes to later), with its own tick size."""
        base = Decimal(start_price) if start_price else Decimal(self.rng.randint(2000, 50000)) / 100
        inst = Instrument(sym, _round(base, Decimal(tick)), Decimal(tick), Decimal(lot),
                          next_trade_id=self.rng.randint(1000, 900000))
        self.instruments[sym] = inst
        self._rebuild_book(inst)
        return inst

    def symbol(self) -> str:
        return self.rng.choice(list(self.instruments))

    def step(self, inst: Instrument) -> None:
        moves = self.rng.choice((-2, -1, -1, 0, 0, 0, 1, 1, 2))
        inst.price = max(inst.tick, inst.price + moves * inst.tick)

    def trade(self, symbol: str, ts_ns: int) -> Trade:
        inst = self.instruments[symbol]
        self.step(inst)
        side = self.rng.choice(("buy", "sell"))
        size = inst.lot * self.rng.randint(1, 500)
        t = Trade(symbol, inst.next_trade_id, inst.price, size, side, ts_ns)
        inst.next_trade_id += 1
        self._add_to_bar(inst, t)
        return t

    def quote(self, symbol: str, ts_ns: int) -> Quote:
        inst = self.instruments[symbol]
        bid = max(inst.bids)
        ask = min(inst.asks)
        return Quote(symbol, bid, inst.bids[bid], ask, inst.asks[ask], ts_ns)

    def book(self, symbol: str) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        """(bids best first, asks best first)."""
        inst = self.instruments[symbol]
        return (sorted(inst.bids.items(), reverse=True), sorted(inst.asks.items()))

    def book_changes(self, symbol: str) -> list[tuple[str, Decimal, Decimal]]:
        """Move the book: re-centre it on the last price and resize one level.

        Returns the level changes as (side 'bid'|'ask', price, new size), size 0 meaning the
        level is gone, so a level-2 feed can send exactly these as its update. The book stays
        uncrossed: every bid is below the last price and every ask above it.
        """
        inst = self.instruments[symbol]
        changes = self._rebuild_book(inst)
        side = self.rng.choice(("bid", "ask"))
        levels = inst.bids if side == "bid" else inst.asks
        price = self.rng.choice(sorted(levels))
        levels[price] = inst.lot * self.rng.randint(1, 900)
        changes.append((side, price, levels[price]))
        return changes

    def close_bar(self, symbol: str, now_ns: int) -> Bar | None:
        """The bar for the minute before ``now_ns``, once that minute is over (else None)."""
        inst = self.instruments[symbol]
        bar = inst.bar
        if bar is not None and now_ns >= bar.start_ns + self.bar_ns:
            inst.bar = None
            return bar
        return None

    def _add_to_bar(self, inst: Instrument, t: Trade) -> None:
        start = t.ts_ns - t.ts_ns % self.bar_ns
        bar = inst.bar
        if bar is None or bar.start_ns != start:
            inst.bar = Bar(inst.symbol, start, t.price, t.price, t.price, t.price, t.size, 1, t.price)
            return
        notional = bar.vwap * bar.volume + t.price * t.size
        bar.high, bar.low, bar.close = max(bar.high, t.price), min(bar.low, t.price), t.price
        bar.volume += t.size
        bar.trades += 1
        bar.vwap = _round(notional / bar.volume, Decimal("0.0001"))

    def _rebuild_book(self, inst: Instrument) -> list[tuple[str, Decimal, Decimal]]:
        """Re-centre the book on the last price (best bid < price < best ask); return the changes."""
        mid, tick, changes = inst.price, inst.tick, []
        for side, levels, sign in (("bid", inst.bids, -1), ("ask", inst.asks, 1)):
            wanted = {mid + sign * tick * (i + 1) for i in range(self.book_depth)}
            for price in sorted(set(levels) - wanted):
                del levels[price]
                changes.append((side, price, Decimal(0)))
            for price in sorted(wanted - set(levels)):
                if price > 0:
                    levels[price] = inst.lot * self.rng.randint(1, 900)
                    changes.append((side, price, levels[price]))
        return changes


def _round(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value() * step


def fmt(value: Decimal) -> str:
    """Decimal as plain text with no exponent and no trailing zeros beyond the tick: '162.92'."""
    return format(value.normalize(), "f")
