"""Coinbase Exchange frames built from the engine's state: snapshot, heartbeat, status, REST book.

Sample heartbeat (it does not consume a sequence number)::

    {"type":"heartbeat","last_trade_id":17393422,"product_id":"BTC-USD","sequence":3419023015,
     "time":"2017-06-25T11:23:14.838000Z"}
"""

from __future__ import annotations

import time

import orjson

from tickpipe.emulators.coinbase_exchange_engine import ExchangeEngine, iso_time

LEVEL3_SCHEMA = {"change": ["type", "product_id", "sequence", "order_id", "price", "size", "time"],
                 "done": ["type", "product_id", "sequence", "order_id", "time"],
                 "match": ["type", "product_id", "sequence", "maker_order_id", "taker_order_id", "price", "size", "time"],
                 "noop": ["type", "product_id", "sequence", "time"],
                 "open": ["type", "product_id", "sequence", "order_id", "side", "price", "size", "time"]}


def snapshot(engine: ExchangeEngine, pid: str, with_time: bool, depth: int = 0) -> dict:
    """Level-2 snapshot, full depth (or ``depth`` levels a side), asks before bids as live frames have them."""
    bids, asks = engine.snapshot_l2(pid)
    if depth:
        bids, asks = bids[:depth], asks[:depth]
    frame = {"type": "snapshot", "product_id": pid, "asks": [r[:2] for r in asks], "bids": [r[:2] for r in bids]}
    if with_time:
        frame["time"] = iso_time(time.time_ns())
    return frame


def heartbeat(engine: ExchangeEngine, pid: str) -> dict:
    p = engine.products[pid]
    last = p.last_match["trade_id"] if p.last_match else 0
    return {"type": "heartbeat", "last_trade_id": last, "product_id": pid, "sequence": p.sequence,
            "time": iso_time(time.time_ns())}


def last_match(engine: ExchangeEngine, pid: str) -> dict | None:
    match = engine.products[pid].last_match
    return {**match, "type": "last_match"} if match else None


def status(engine: ExchangeEngine, min_bytes: int = 0) -> dict:
    """The ``status`` catalogue; padded with extra currencies up to ``min_bytes`` if asked."""
    products, currencies = [], {}
    for pid, p in engine.products.items():
        base, _, quote = pid.partition("-")
        products.append({"id": pid, "base_currency": base, "quote_currency": quote,
                         "base_increment": p.spec.base_increment, "quote_increment": p.spec.quote_increment,
                         "display_name": pid, "status": "online", "status_message": None, "min_market_funds": "1",
                         "post_only": False, "limit_only": False, "cancel_only": False, "fx_stablecoin": False,
                         "auction_mode": False})
        for cur, precision in ((base, p.spec.base_increment), (quote, p.spec.quote_increment)):
            currencies.setdefault(cur, _currency(cur, precision))
    frame = {"type": "status", "products": products, "currencies": list(currencies.values())}
    if min_bytes:
        size, n = len(orjson.dumps(frame)), 0
        filler = len(orjson.dumps(_currency("PAD00000", "0.01"))) + 1
        while size < min_bytes:
            n += 1
            frame["currencies"].append(_currency(f"PAD{n:05d}", "0.01"))
            size += filler
    return frame


def _currency(cur: str, precision: str) -> dict:
    return {"id": cur, "name": cur, "display_name": cur, "min_size": precision, "status": "online",
            "status_message": None, "max_precision": precision, "convertible_to": [], "details": {},
            "default_network": "", "supported_networks": []}


def rest_book(engine: ExchangeEngine, pid: str, level: int) -> dict:
    """``GET /products/<id>/book?level=1|2|3``: rows and the product's current sequence."""
    if level == 3:
        bids, asks = engine.snapshot_l3(pid)
    else:
        bids, asks = engine.snapshot_l2(pid)
        if level == 1:
            bids, asks = bids[:1], asks[:1]
    return {"bids": bids, "asks": asks, "sequence": engine.products[pid].sequence, "auction_mode": False,
            "auction": None, "time": iso_time(time.time_ns())}


def ids(msg: dict, kind: str) -> dict:
    ids = {"kind": kind, "instrument": msg["product_id"], "product_seq": msg["sequence"]}
    if "trade_id" in msg:
        ids["trade_id"] = msg["trade_id"]
    return ids


def level3_row(msg: dict) -> list[str]:
    """The compact level3 array of a full-channel event (``received`` becomes ``noop``)."""
    t = msg["type"]
    kind = t if t in LEVEL3_SCHEMA else "noop"
    fields = {**msg, "type": kind, "size": msg.get("remaining_size", msg.get("new_size", msg.get("size")))}
    return [str(fields.get(name, "")) for name in LEVEL3_SCHEMA[kind]]


def rest_trades(engine: ExchangeEngine, pid: str, limit: int, after: int | None) -> list[dict]:
    """``GET /products/<id>/trades``: newest first, ``after`` = only trade ids below it (the next page)."""
    trades = [t for t in reversed(engine.products[pid].trades) if after is None or t["trade_id"] < after]
    return trades[:limit]
