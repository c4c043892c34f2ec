"""A small Coinbase Exchange matching engine: order-level books and per-product sequences.

Each product has one engine-wide ``sequence`` that every full-channel event (``received``,
``open``, ``done``, ``match``, ``change``) consumes, and one trade-id counter (the
:class:`~tickpipe.emulators.market.MarketSim` instrument's). Prices follow the MarketSim
random walk on the product's quote increment; the book is level 3 (orders FIFO per price)
and never crosses. Level-2 views and REST snapshots are aggregated from the same book, so a
snapshot's ``sequence`` lines up with the websocket stream (``sequence <= snapshot`` is
already in the snapshot). A step yields events such as::

    {"type":"open","side":"buy","price":"84119.98","order_id":"…","remaining_size":"0.01495400",
     "product_id":"BTC-USD","sequence":131000000002,"time":"2026-03-02T14:05:11.402113Z"}
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal

from tickpipe.emulators.market import Instrument, MarketSim


@dataclass(frozen=True)
class ProductSpec:
    quote_increment: str
    base_increment: str
    price: str | None       # start price; None: MarketSim's seeded choice
    typical_size: str       # order sizes are drawn around this


PRODUCTS = {
    "BTC-USD": ProductSpec("0.01", "0.00000001", "84000.00", "0.05"),
    "ETH-USD": ProductSpec("0.01", "0.00000001", "3200.00", "0.8"),
    "SOL-USD": ProductSpec("0.01", "0.00000001", "150.00", "12"),
    "LTC-USD": ProductSpec("0.01", "0.00000001", "85.00", "20"),
    "SKL-USD": ProductSpec("0.0001", "0.1", "0.7900", "900"),
}
OTHER = ProductSpec("0.01", "0.00000001", None, "5")
ZERO = Decimal(0)
EIGHT = Decimal("0.00000001")


def iso_time(ns: int) -> str:
    """Exchange time format: microseconds and ``Z``: ``2021-04-17T16:43:37.075687Z``."""
    stamp = datetime.fromtimestamp(ns // 1_000_000_000, tz=timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + f".{(ns // 1000) % 1_000_000:06d}Z"


@dataclass
class Event:
    """One full-channel message plus what it caused."""

    product: str
    msg: dict
    l2: list[tuple[str, str, str]] = field(default_factory=list)   # [side, price, new level size]
    ticker: dict | None = None                                     # for a match


class Product:
    """State of one product: spec, price walk, book, sequence, 24h statistics."""

    def __init__(self, pid: str, spec: ProductSpec, inst: Instrument, sequence: int) -> None:
        self.id, self.spec, self.inst, self.sequence = pid, spec, inst, sequence
        self.tick, self.lot = Decimal(spec.quote_increment), Decimal(spec.base_increment)
        self.book: dict[str, dict[Decimal, dict[str, Decimal]]] = {"buy": {}, "sell": {}}
        self.order_side: dict[str, tuple[str, Decimal]] = {}
        self.last_match: dict | None = None
        self.trades: deque[dict] = deque(maxlen=1000)   # for GET /products/<id>/trades, oldest first
        self.last_ticker: dict | None = None
        self.open_24h = self.high_24h = self.low_24h = inst.price
        self.volume_24h = self.volume_30d = ZERO

    def px(self, value: Decimal) -> str:
        return format(value.quantize(self.tick), "f")

    def sz(self, value: Decimal) -> str:
        return format(value.quantize(self.lot), "f")

    def best(self, side: str) -> Decimal | None:
        levels = self.book[side]
        if not levels:
            return None
        return max(levels) if side == "buy" else min(levels)

    def level_size(self, side: str, price: Decimal) -> Decimal:
        return sum(self.book[side].get(price, {}).values(), ZERO)

    def levels(self, side: str) -> list[tuple[Decimal, dict[str, Decimal]]]:
        """Price levels best first."""
        return sorted(self.book[side].items(), reverse=(side == "buy"))

    def add(self, side: str, price: Decimal, oid: str, size: Decimal) -> None:
        self.book[side].setdefault(price, {})[oid] = size
        self.order_side[oid] = (side, price)

    def set_size(self, oid: str, size: Decimal) -> None:
        side, price = self.order_side[oid]
        if size > 0:
            self.book[side][price][oid] = size
            return
        del self.book[side][price][oid]
        del self.order_side[oid]
        if not self.book[side][price]:
            del self.book[side][price]


class ExchangeEngine:
    """Generates full-channel events for a set of products, deterministically for a seed."""

    def __init__(self, symbols: tuple[str, ...], seed: int = 1, depth: int = 12) -> None:
        self.sim = MarketSim(symbols, seed=seed)
        self.rng = self.sim.rng
        self.depth = depth
        self.products: dict[str, Product] = {}
        for pid in symbols:
            spec = PRODUCTS.get(pid, OTHER)
            inst = self.sim.instruments[pid]
            inst.tick, inst.lot = Decimal(spec.quote_increment), Decimal(spec.base_increment)
            inst.price = Decimal(spec.price) if spec.price else inst.price.quantize(inst.tick)
            product = Product(pid, spec, inst, sequence=self.rng.randint(10**9, 10**11))
            self.products[pid] = product
            self._seed_book(product)

    # ----- queries -----
    def snapshot_l2(self, pid: str) -> tuple[list[list], list[list]]:
        """(bids, asks) as [price, size, num_orders] rows, best first."""
        p = self.products[pid]
        return tuple([[p.px(px), p.sz(sum(orders.values(), ZERO)), len(orders)] for px, orders in p.levels(side)]
                     for side in ("buy", "sell"))

    def snapshot_l3(self, pid: str) -> tuple[list[list], list[list]]:
        """(bids, asks) as [price, size, order_id] rows, best first, FIFO within a price."""
        p = self.products[pid]
        return tuple([[p.px(px), p.sz(size), oid] for px, orders in p.levels(side) for oid, size in orders.items()]
                     for side in ("buy", "sell"))

    # ----- the event generator -----
    def step(self, now_ns: int) -> list[Event]:
        """One engine action on a random product; returns its events in sequence order."""
        p = self.products[self.sim.symbol()]
        self.sim.step(p.inst)
        thin = [s for s in ("buy", "sell") if len(p.book[s]) < self.depth // 2]
        roll = self.rng.random()
        if thin:
            return self._limit(p, thin[0], now_ns)
        if len(p.order_side) > self.depth * 4:
            return self._cancel(p, now_ns)
        if roll < 0.40:
            return self._limit(p, self.rng.choice(("buy", "sell")), now_ns)
        if roll < 0.65:
            return self._cancel(p, now_ns)
        if roll < 0.93:
            return self._market(p, self.rng.choice(("buy", "sell")), now_ns)
        return self._stp_change(p, now_ns)

    def _event(self, p: Product, now_ns: int, body: dict) -> Event:
        p.sequence += 1
        msg = {"type": body.pop("type"), **body, "product_id": p.id, "sequence": p.sequence, "time": iso_time(now_ns)}
        return Event(p.id, msg)

    def _l2(self, p: Product, side: str, price: Decimal) -> tuple[str, str, str]:
        return (side, p.px(price), p.sz(p.level_size(side, price)))

    def _size(self, p: Product) -> Decimal:
        typical = Decimal(p.spec.typical_size)
        size = (typical * Decimal(self.rng.uniform(0.05, 2.0))).quantize(p.lot)
        return max(size, p.lot)

    def _oid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _limit(self, p: Product, side: str, now_ns: int) -> list[Event]:
        offset = p.tick * self.rng.randint(1, self.depth)
        other = p.best("sell" if side == "buy" else "buy")
        if side == "buy":  # anchored so that it never crosses the other side
            price = max(min(p.inst.price, other if other is not None else p.inst.price) - offset, p.tick)
        else:
            price = max(p.inst.price, other if other is not None else p.inst.price) + offset
        oid, size = self._oid(), self._size(p)
        received = self._event(p, now_ns, {"type": "received", "order_id": oid, "order_type": "limit",
                                           "size": p.sz(size), "price": p.px(price), "side": side})
        p.add(side, price, oid, size)
        opened = self._event(p, now_ns, {"type": "open", "side": side, "price": p.px(price), "order_id": oid,
                                         "remaining_size": p.sz(size)})
        opened.l2.append(self._l2(p, side, price))
        return [received, opened]

    def _cancel(self, p: Product, now_ns: int) -> list[Event]:
        if not p.order_side:
            return self._limit(p, "buy", now_ns)
        # prefer orders far from the current price so the book stays centred
        oids = sorted(p.order_side, key=lambda o: -abs(p.order_side[o][1] - p.inst.price))
        oid = oids[min(int(self.rng.expovariate(0.5)), len(oids) - 1)]
        side, price = p.order_side[oid]
        remaining = p.book[side][price][oid]
        p.set_size(oid, ZERO)
        done = self._event(p, now_ns, {"type": "done", "side": side, "order_id": oid, "reason": "canceled",
                                       "price": p.px(price), "remaining_size": p.sz(remaining)})
        done.l2.append(self._l2(p, side, price))
        return [done]

    def _stp_change(self, p: Product, now_ns: int) -> list[Event]:
        oid = self.rng.choice(sorted(p.order_side))
        side, price = p.order_side[oid]
        old = p.book[side][price][oid]
        new = (old / 2).quantize(p.lot)
        if new <= 0:
            return self._cancel(p, now_ns)
        p.set_size(oid, new)
        change = self._event(p, now_ns, {"type": "change", "reason": "STP", "price": p.px(price), "old_size": p.sz(old),
                                         "new_size": p.sz(new), "order_id": oid, "side": side})
        change.l2.append(self._l2(p, side, price))
        return [change]

    def _market(self, p: Product, taker_side: str, now_ns: int) -> list[Event]:
        maker_side = "sell" if taker_side == "buy" else "buy"
        if not p.book[maker_side]:
            return self._limit(p, maker_side, now_ns)
        taker, remaining = self._oid(), self._size(p)
        events = [self._event(p, now_ns, {"type": "received", "order_id": taker, "order_type": "market",
                                          "size": p.sz(remaining), "side": taker_side})]
        while remaining > 0 and p.book[maker_side]:
            price = p.best(maker_side)
            maker, maker_size = next(iter(p.book[maker_side][price].items()))
            fill = min(remaining, maker_size)
            remaining -= fill
            p.set_size(maker, maker_size - fill)
            events.append(self._match(p, now_ns, maker, taker, maker_side, fill, price))
            if maker_size == fill:
                events.append(self._event(p, now_ns, {"type": "done", "side": maker_side, "order_id": maker,
                                                      "reason": "filled", "price": p.px(price),
                                                      "remaining_size": p.sz(ZERO)}))
        p.inst.price = p.best(maker_side) or p.inst.price
        events.append(self._event(p, now_ns, {"type": "done", "side": taker_side, "order_id": taker,
                                              "reason": "filled" if remaining == 0 else "canceled"}))
        return events

    def _match(self, p: Product, now_ns: int, maker: str, taker: str, maker_side: str,
               size: Decimal, price: Decimal) -> Event:
        trade_id = p.inst.next_trade_id
        p.inst.next_trade_id += 1
        ev = self._event(p, now_ns, {"type": "match", "trade_id": trade_id, "maker_order_id": maker,
                                     "taker_order_id": taker, "side": maker_side, "size": p.sz(size),
                                     "price": p.px(price)})
        ev.l2.append(self._l2(p, maker_side, price))
        p.high_24h, p.low_24h = max(p.high_24h, price), min(p.low_24h, price)
        p.volume_24h += size
        p.volume_30d += size
        p.last_match = ev.msg
        p.trades.append({"time": ev.msg["time"], "trade_id": trade_id, "price": ev.msg["price"],
                         "size": ev.msg["size"], "side": maker_side})
        ev.ticker = p.last_ticker = self._ticker(p, ev.msg, "buy" if maker_side == "sell" else "sell")
        return ev

    def _ticker(self, p: Product, match: dict, taker_side: str) -> dict:
        bid, ask = p.best("buy"), p.best("sell")
        return {"type": "ticker", "sequence": match["sequence"], "product_id": p.id, "price": match["price"],
                "open_24h": p.px(p.open_24h), "volume_24h": format(p.volume_24h.quantize(EIGHT), "f"),
                "low_24h": p.px(p.low_24h), "high_24h": p.px(p.high_24h),
                "volume_30d": format(p.volume_30d.quantize(EIGHT), "f"),
                "best_bid": p.px(bid) if bid else "0", "best_bid_size": p.sz(p.level_size("buy", bid)) if bid else "0",
                "best_ask": p.px(ask) if ask else "0", "best_ask_size": p.sz(p.level_size("sell", ask)) if ask else "0",
                "side": taker_side, "time": match["time"], "trade_id": match["trade_id"], "last_size": match["size"]}

    def _seed_book(self, p: Product) -> None:
        """A quiet starting book and one earlier trade, without emitting events."""
        for side, sign in (("buy", -1), ("sell", 1)):
            for i in range(self.depth):
                p.add(side, p.inst.price + sign * p.tick * (i + 1), self._oid(), self._size(p))
        p.volume_24h = Decimal(p.spec.typical_size) * 5000
        p.volume_30d = p.volume_24h * 30
        ago_ns = self.rng.randint(1, 60) * 1_000_000_000
        self._match(p, time.time_ns() - ago_ns, self._oid(), self._oid(), "sell", self._size(p), p.best("sell"))
