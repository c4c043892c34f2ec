"""Coinbase Exchange feed frames -> normalized records.

One JSON object (level3: an array) per frame, dispatched on ``type``; unknown types are
ignored as the feed's docs require. Example ``l2update`` -> one ``book`` record::

    {"type":"l2update","product_id":"BTC-USD","changes":[["buy","80688.08","0.59153273"],
     ["sell","80745.16","0.20558981"]],"time":"2026-08-25T03:35:57.300000Z"}

| type | kind | channel | sequence (scope instrument) |
| --- | --- | --- | --- |
| ``snapshot``, ``l2update`` | ``book`` | ``level2`` | none (level2 promises delivery) |
| ``match`` | ``trade`` (taker side) | ``full``/``matches``/``user`` (from the ack) | full: contiguous; matches: sparse |
| ``last_match`` | ``level1`` (last trade) | ``last_match`` | sparse |
| ``ticker`` | ``level1`` | ``ticker`` | sparse |
| ``received``/``open``/``done``/``change`` | none: ``mark_sequence`` on ``full`` | | contiguous |
| level3 arrays | ``trade`` for ``match``, else marks | ``level3`` | contiguous |
| ``status`` | ``status`` (``product_status``) per product | ``status`` | |
| ``auction`` | ``status`` (``auction``) | ``auctionfeed`` | |
| ``rfq_match`` | ``trade`` (id ``rfq:<id>``: its own id space) | ``rfq_matches`` | |
| ``heartbeat``, ``subscriptions``, ``error``, ``activate``, ``balance``, unknown | none | | |

Prices and sizes stay the feed's decimal strings; a zero time (``0001-01-01…``) is no time.
"""

from __future__ import annotations

from typing import Any

from tickpipe.processors.normalizers import coinbase_exchange_orders as orders
from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, dec_or_none, rfc3339_ns, text
from tickpipe.processors.normalizers.errors import NormalizeError
from tickpipe.processors.records import SCOPE_INSTRUMENT

SIDES = {"buy": "bids", "sell": "asks"}
IGNORED = {"heartbeat": "heartbeat", "error": "error frame", "activate": "private stop order",
           "balance": "account balance"}
TICKER = {"last_price": "price", "last_size": "last_size", "bid_price": "best_bid", "bid_size": "best_bid_size",
          "ask_price": "best_ask", "ask_size": "best_ask_size", "open_price": "open_24h", "high_price": "high_24h",
          "low_price": "low_24h", "volume": "volume_24h"}
TICKER_SKIP = set(TICKER.values()) | {"type", "product_id", "sequence", "time", "trade_id", "side"}
STATUS_SKIP = {"id", "status", "status_message"}
AUCTION_SKIP = {"type", "product_id", "sequence", "auction_state", "open_price", "timestamp"}


def normalize(frame: Frame) -> None:
    msg = frame.json_fast()   # every price and size is a JSON string: nothing lossy here
    if isinstance(msg, list):
        orders.level3_row(frame, msg)
        return
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise NormalizeError("frame is not a JSON object with a type")
    kind = msg["type"]
    handler = HANDLERS.get(kind)
    if handler is not None:
        handler(frame, msg)
    elif kind in orders.ORDER_EVENTS:
        orders.order_event(frame, msg)
    else:
        frame.ignore(IGNORED.get(kind, "unknown type"))


def _time(msg: dict, field: str = "time", required: bool = True) -> int | None:
    value = msg.get(field)
    if value is None and not required:
        return None
    if isinstance(value, str) and value.startswith("0001-01-01"):
        return None   # seen in the wild: a zero time means "no time"
    return rfc3339_ns(value, field)


def _levels(rows: Any, field: str) -> list[dict]:
    if not isinstance(rows, list):
        raise NormalizeError(f"{field} must be a list")
    out = []
    for row in rows:
        if not isinstance(row, list) or len(row) < 2:
            raise NormalizeError(f"{field}: every level is [price, size]")
        out.append({"price": dec(row[0], f"{field} price"), "size": dec(row[1], f"{field} size")})
    return out


def snapshot(frame: Frame, msg: dict) -> None:
    frame.record("book", msg["product_id"], channel="level2", event_time=_time(msg, required=False), snapshot=True,
                 bids=_levels(msg["bids"], "bids"), asks=_levels(msg["asks"], "asks"))


def l2update(frame: Frame, msg: dict) -> None:
    sides: dict[str, list] = {"bids": [], "asks": []}
    changes = msg["changes"]
    if not isinstance(changes, list) or not changes:
        raise NormalizeError("l2update: changes must be a non-empty list")
    for change in changes:
        if not isinstance(change, list) or len(change) != 3 or change[0] not in SIDES:
            raise NormalizeError("l2update: every change is [buy|sell, price, size]")
        sides[SIDES[change[0]]].append({"price": dec(change[1], "price"), "size": dec(change[2], "size")})
    frame.record("book", msg["product_id"], channel="level2", event_time=_time(msg), snapshot=False, **sides)


def ticker(frame: Frame, msg: dict) -> None:
    """One ``level1`` image; the first ticker after subscribing may lack fields (2018 frames did)."""
    seq, trade_id = msg.get("sequence"), msg.get("trade_id")
    if (seq is not None and type(seq) is not int) or (trade_id is not None and type(trade_id) is not int):
        raise NormalizeError("ticker: sequence and trade_id must be integers")
    values = {ours: dec_or_none(msg.get(theirs), theirs) for ours, theirs in TICKER.items()}
    when = _time(msg, required=False)
    extra = {k: text(v) for k, v in msg.items() if k not in TICKER_SKIP and v is not None}
    if msg.get("side") is not None:
        extra["taker_side"] = text(msg["side"])
    frame.record("level1", msg["product_id"], channel="ticker", event_time=when, sequence=seq,
                 sequence_scope=SCOPE_INSTRUMENT if seq is not None else None,
                 trade_id=str(trade_id) if trade_id is not None else None, trade_time=when, fields=extra,
                 **{k: v for k, v in values.items() if v is not None})


def last_match(frame: Frame, msg: dict) -> None:
    """The product's latest trade, resent on every subscribe: a ``level1`` last-trade image, not a new trade."""
    seq, trade_id = msg["sequence"], msg["trade_id"]
    if type(seq) is not int or type(trade_id) is not int:
        raise NormalizeError("last_match: sequence and trade_id must be integers")
    when = _time(msg)
    frame.record("level1", msg["product_id"], channel="last_match", event_time=when, sequence=seq,
                 sequence_scope=SCOPE_INSTRUMENT, trade_id=str(trade_id), last_price=dec(msg["price"], "price"),
                 last_size=dec(msg["size"], "size"), trade_time=when,
                 fields={"taker_side": orders.TAKER_SIDE[msg["side"]]} if msg.get("side") in orders.TAKER_SIDE else {})


def status(frame: Frame, msg: dict) -> None:
    products = msg["products"]
    if not isinstance(products, list):
        raise NormalizeError("status: products must be a list")
    for product in products:
        if not isinstance(product, dict) or not isinstance(product.get("status"), str):
            raise NormalizeError("status: every product needs an id and a status")
        frame.record("status", product["id"], channel="status", status_kind="product_status",
                     status=product["status"], status_message=text(product.get("status_message")),
                     fields={k: text(v) for k, v in product.items() if k not in STATUS_SKIP and v is not None
                             and not isinstance(v, (dict, list))})
    if not products:
        frame.ignore("empty status")


def auction(frame: Frame, msg: dict) -> None:
    seq = msg.get("sequence")
    frame.record("status", msg["product_id"], channel="auctionfeed", event_time=_time(msg, "timestamp", False),
                 status_kind="auction", status=str(msg["auction_state"]), price=dec_or_none(msg.get("open_price"), "open_price"),
                 fields={k: text(v) for k, v in msg.items() if k not in AUCTION_SKIP and v is not None}
                 | ({"sequence": str(seq)} if seq is not None else {}))


def rfq_match(frame: Frame, msg: dict) -> None:
    side = str(msg.get("side") or "").lower()
    frame.record("trade", msg["product_id"], channel="rfq_matches", event_time=_time(msg),
                 trade_id=f"rfq:{msg['trade_id']}" if msg.get("trade_id") is not None else None,
                 price=dec(msg["price"], "price"), size=dec(msg["size"], "size"),
                 side=side if side in ("buy", "sell") else None)


HANDLERS = {
    "snapshot": snapshot, "l2update": l2update, "ticker": ticker, "last_match": last_match,
    "match": orders.match, "status": status, "auction": auction, "rfq_match": rfq_match,
    "subscriptions": orders.remember_subscriptions, "level3": orders.level3_schema,
}
