"""What an Alpaca connection streams: subscriptions, one account's market, and the event source.

An :class:`AccountMarket` belongs to one account on one endpoint and outlives its
connections, so trade ids continue where they stopped after a reconnect (Alpaca allows
one connection per account and endpoint, so one connection at a time draws from it).
:class:`EventSource` turns "n messages are due" into neutral :class:`Event` objects for
what the connection subscribed; the wire module renders them.

Only trades are faultable: their ids are contiguous per instrument, so a consumer can see
a lost, repeated or swapped trade. Alpaca has no sequence numbers, so nothing else is.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any, Callable, Iterable, Iterator

from tickpipe.emulators.market import Bar, MarketSim, _round

DAY_NS = 86_400 * 1_000_000_000
BAR_CHANNELS = ("bars", "updatedBars", "dailyBars")
RARE_CHANNELS = ("statuses", "lulds", "imbalances")
FAULTABLE_KINDS = frozenset({"trade"})
RARE_EVENT_P = 0.01           # per market event: a status, LULD or imbalance message
TRADE_AMEND_P = 0.005         # per trade: a cancel or a correction of it
UPDATED_BAR_P = 0.3           # per closed bar: a late-trade update half a bar later
STATUSES = (("H", "Trading Halt", "T12", "Trading Halted; For information requested by NASDAQ"),
            ("T", "Trading Resumption", "", ""),
            ("2", "Trading Halt", "LUDP", "Volatility Trading Pause"),
            ("3", "Resume", "", ""))


@dataclass(frozen=True)
class Book:
    bids: list[tuple[Decimal, Decimal]]
    asks: list[tuple[Decimal, Decimal]]
    reset: bool  # True: the whole book (first message after subscribing); False: changed levels


@dataclass(frozen=True)
class Event:
    """One data message before rendering: kind ('trade', 'quote', 'bar', 'orderbook'...)."""

    kind: str
    symbol: str
    data: Any
    ts_ns: int
    day: Bar | None = None  # bars: the day so far (v1 minute bars carry day volume and open)

    @property
    def faultable(self) -> bool:
        return self.kind in FAULTABLE_KINDS

    def ids(self) -> dict:
        ids = {"kind": self.kind, "instrument": self.symbol, "event_ns": self.ts_ns}
        if self.kind in ("trade", "cancelError"):
            ids["trade_id"] = self.data.trade_id
        elif self.kind == "correction":
            ids["trade_id"] = self.data[0].trade_id
        return ids


class Subscriptions:
    """Per channel, the symbols asked for (``*`` = every symbol the market has), in order."""

    def __init__(self, channels: Iterable[str]) -> None:
        self.sets: dict[str, dict[str, None]] = {ch: {} for ch in channels}
        self._active: list[str] | None = None

    def add(self, channel: str, symbols: Iterable[str]) -> list[str]:
        """Add symbols; returns the ones that are new."""
        current = self.sets[channel]
        new = [s for s in dict.fromkeys(symbols) if s not in current]
        current.update(dict.fromkeys(new))
        self._active = None
        return new

    def remove(self, channel: str, symbols: Iterable[str]) -> None:
        for s in symbols:
            self.sets[channel].pop(s, None)
        self._active = None

    def listed(self, channel: str) -> list[str]:
        return list(self.sets.get(channel, ()))

    def wants(self, channel: str, symbol: str) -> bool:
        chosen = self.sets.get(channel)
        return bool(chosen) and (symbol in chosen or "*" in chosen)

    def expand(self, symbols: Iterable[str], market: "AccountMarket") -> list[str]:
        """The market's symbols these names stand for (``*`` = all of them)."""
        out: dict[str, None] = {}
        for s in symbols:
            out.update(dict.fromkeys(market.symbols() if s == "*" else [s] if market.ensure(s) else []))
        return list(out)

    def active(self, market: "AccountMarket") -> list[str]:
        """Every symbol some channel wants data for (the market moves only these)."""
        if self._active is None:
            self._active = self.expand((s for chosen in self.sets.values() for s in chosen), market)
        return self._active


class AccountMarket:
    """One account's market on one endpoint (see the module docstring)."""

    def __init__(self, universe: Iterable[str], seed: int, crypto: bool, bar_ns: int, open_universe: bool) -> None:
        self.tick, self.lot = ("0.01", "0.0001") if crypto else ("0.01", "1")
        self.sim = MarketSim(list(universe), seed=seed, tick=self.tick, lot=self.lot, bar_ns=bar_ns)
        self.open_universe = open_universe  # False: only the universe has data (/v2/test: FAKEPACA)
        self.days: dict[str, Bar] = {}
        self.clock_ns = 0

    def symbols(self) -> list[str]:
        return list(self.sim.instruments)

    def ensure(self, symbol: str) -> bool:
        """Make ``symbol`` tradable if this endpoint trades any symbol; whether it has data."""
        if symbol not in self.sim.instruments and self.open_universe:
            self.sim.add_instrument(symbol, self.tick, self.lot)
        return symbol in self.sim.instruments

    def now(self, delay_ns: int) -> int:
        """Event time: the wall clock (less a feed's delay), strictly increasing."""
        self.clock_ns = max(time.time_ns() - delay_ns, self.clock_ns + 1)
        return self.clock_ns

    def add_to_day(self, bar: Bar) -> Bar:
        start = bar.start_ns - bar.start_ns % DAY_NS
        day = self.days.get(bar.instrument)
        if day is None or day.start_ns != start:
            day = replace(bar, start_ns=start)
        else:
            volume = day.volume + bar.volume
            vwap = _round((day.vwap * day.volume + bar.vwap * bar.volume) / volume, Decimal("0.0001"))
            day = replace(day, high=max(day.high, bar.high), low=min(day.low, bar.low), close=bar.close,
                          volume=volume, trades=day.trades + bar.trades, vwap=vwap)
        self.days[bar.instrument] = day
        return day


class EventSource:
    """Market events for one connection's subscriptions, drawn from its account's market."""

    def __init__(self, market: AccountMarket, subs: Subscriptions, rng: random.Random,
                 delay_ns: int = 0, crypto: bool = False) -> None:
        self.market, self.subs, self.rng = market, subs, rng
        self.delay_ns, self.crypto = delay_ns, crypto
        self._late_bars: list[tuple[int, Event]] = []

    def tick(self, n: int, held: Callable[[], str | None] = lambda: None) -> Iterator[Event]:
        """Close finished bars, then draw ``n`` market events (a trade or a book move each).

        Lazily, so ``held()`` (the instrument of a trade the fault outbox holds back for a
        swap) is current: the next event is then that instrument's next trade, and the swap
        shows as out-of-order trade ids, which is the only order a consumer can check here.
        """
        out: list[Event] = []
        now = self.market.now(self.delay_ns)
        active = self.subs.active(self.market)
        for sym in active:
            self._close_bar(sym, now, out)
        self._release_late_bars(now, out)
        yield from out
        for _ in range(n if active else 0):
            out = []
            swap_with = held()
            sym = swap_with if swap_with in active and self.subs.wants("trades", swap_with) else None
            sym = sym or self.rng.choice(active)
            ts = self.market.now(self.delay_ns)
            if sym == swap_with or self.rng.random() < 0.5:
                self._trade(sym, ts, out)
            else:
                self._book_move(sym, ts, out)
            if self.rng.random() < RARE_EVENT_P:
                self._rare(sym, ts, out)
            yield from out

    def snapshot(self, symbol: str) -> Event:
        bids, asks = self.market.sim.book(symbol)
        return Event("orderbook", symbol, Book(bids, asks, True), self.market.now(self.delay_ns))

    def _trade(self, sym: str, ts: int, out: list[Event]) -> None:
        self._close_bar(sym, ts, out)  # a trade in the next bar must not swallow the finished one
        trade = self.market.sim.trade(sym, ts)
        if not self.subs.wants("trades", sym):
            return
        out.append(Event("trade", sym, trade, ts))
        if not self.crypto and self.rng.random() < TRADE_AMEND_P:
            if self.rng.random() < 0.5:
                out.append(Event("cancelError", sym, trade, ts + 1))
            else:  # the same trade id with a corrected price
                fixed = replace(trade, price=trade.price + self.market.sim.instruments[sym].tick)
                out.append(Event("correction", sym, (trade, fixed), ts + 1))

    def _book_move(self, sym: str, ts: int, out: list[Event]) -> None:
        changes = self.market.sim.book_changes(sym)
        if self.subs.wants("orderbooks", sym):
            bids = [(p, s) for side, p, s in changes if side == "bid"]
            asks = [(p, s) for side, p, s in changes if side == "ask"]
            out.append(Event("orderbook", sym, Book(bids, asks, False), ts))
        if self.subs.wants("quotes", sym):
            out.append(Event("quote", sym, self.market.sim.quote(sym, ts), ts))

    def _rare(self, sym: str, ts: int, out: list[Event]) -> None:
        wanted = [ch for ch in RARE_CHANNELS if self.subs.wants(ch, sym)]
        if not wanted:
            return
        channel = self.rng.choice(wanted)
        inst = self.market.sim.instruments[sym]
        if channel == "statuses":
            out.append(Event("status", sym, self.rng.choice(STATUSES), ts))
        elif channel == "lulds":
            band = _round(inst.price * Decimal("0.05"), inst.tick) + inst.tick
            out.append(Event("luld", sym, (inst.price + band, max(inst.tick, inst.price - band)), ts))
        else:
            out.append(Event("imbalance", sym, inst.price, ts))

    def _close_bar(self, sym: str, now: int, out: list[Event]) -> None:
        if not any(self.subs.wants(ch, sym) for ch in BAR_CHANNELS):
            return
        bar = self.market.sim.close_bar(sym, now)
        if bar is None:
            return
        day = self.market.add_to_day(bar)
        if self.subs.wants("bars", sym):
            out.append(Event("bar", sym, bar, bar.start_ns, day=day))
        if self.subs.wants("dailyBars", sym):
            out.append(Event("dailyBar", sym, day, day.start_ns))
        if self.subs.wants("updatedBars", sym) and self.rng.random() < UPDATED_BAR_P:
            late = replace(bar, volume=bar.volume + Decimal(self.market.lot), trades=bar.trades + 1)
            self._late_bars.append((now + self.market.sim.bar_ns // 2, Event("updatedBar", sym, late, bar.start_ns)))

    def _release_late_bars(self, now: int, out: list[Event]) -> None:
        due = [e for at, e in self._late_bars if at <= now]
        if due:
            self._late_bars = [(at, e) for at, e in self._late_bars if at > now]
            out.extend(e for e in due if self.subs.wants("updatedBars", e.symbol))
