"""Coinbase Advanced Trade frames -> normalized records.

Every enveloped frame carries the per-connection ``sequence_num`` (scope ``connection``);
each record repeats it and frames without records report it with ``mark_sequence``.
Example (``level2`` data arrives on channel ``l2_data``) -> one ``book`` record::

    {"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,
     "events":[{"type":"snapshot","product_id":"BTC-USD","updates":[
       {"side":"bid","event_time":"1970-01-01T00:00:00Z","price_level":"21921.73","new_quantity":"0.06317902"},
       {"side":"offer","event_time":"1970-01-01T00:00:00Z","price_level":"21922.11","new_quantity":"0.02"}]}]}

| channel | kind | notes |
| --- | --- | --- |
| ``l2_data`` | ``book`` | snapshot replaces, update merges; ``offer`` -> asks; absolute sizes |
| ``market_trades`` | ``trade`` | oldest first; ``side`` is the maker's, so the taker side is the other one |
| ``ticker``, ``ticker_batch`` | ``level1`` | rolling 24 h high/low/volume; 52-week values in ``fields`` |
| ``candles`` | ``bar`` | 5m, ``partial`` (re-sent each second while it forms) |
| ``status`` | ``status`` | ``product_status``: online/offline etc.; product details in ``fields`` |
| ``subscriptions``, ``heartbeats``, ``user``, ``futures_balance_summary``, new channels | none | sequence marked |

``{"type":"error","message":...}`` frames (no envelope, no sequence) are ignored: the
producer acts on them. Prices stay the provider's decimal text.
"""

from __future__ import annotations

from typing import Any

from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, dec_or_none, rfc3339_ns, s_ns, text
from tickpipe.processors.normalizers.errors import NormalizeError
from tickpipe.processors.records import SCOPE_CONNECTION

CANDLE_INTERVAL = "5m"
NO_RECORDS = {"subscriptions": "subscriptions ack", "heartbeats": "heartbeat", "user": "user orders",
              "futures_balance_summary": "futures balance"}
TAKER_SIDE = {"BUY": "sell", "SELL": "buy"}   # the maker bought -> the taker sold
LEVEL1 = {"last_price": "price", "volume": "volume_24_h", "low_price": "low_24_h", "high_price": "high_24_h",
          "bid_price": "best_bid", "bid_size": "best_bid_quantity", "ask_price": "best_ask", "ask_size": "best_ask_quantity"}
TICKER_SKIP = set(LEVEL1.values()) | {"product_id", "type"}
STATUS_SKIP = {"id", "status", "status_message"}


def normalize(frame: Frame) -> None:
    msg = frame.json_fast()   # every Coinbase price and size is a JSON string: nothing lossy here
    if not isinstance(msg, dict):
        raise NormalizeError("frame is not a JSON object")
    if msg.get("type") == "error":
        frame.ignore("error frame")
        return
    channel, seq, events = msg.get("channel"), msg.get("sequence_num"), msg.get("events")
    if not isinstance(channel, str) or type(seq) is not int or not isinstance(events, list):
        raise NormalizeError("not a Coinbase envelope (channel, sequence_num, events)")
    if not all(isinstance(e, dict) for e in events):
        raise NormalizeError(f"{channel}: events must be objects")
    handler = HANDLERS.get(channel)
    if handler is None:
        frame.ignore(NO_RECORDS.get(channel, "unknown channel"))   # new channels must be ignored
    else:
        sent = rfc3339_ns(msg.get("timestamp"), "timestamp")
        common = {"channel": channel, "sequence": seq, "sequence_scope": SCOPE_CONNECTION}
        for event in events:
            handler(frame, event, sent, common)
    if not frame.records:
        frame.mark_sequence(seq, SCOPE_CONNECTION, channel=channel)


def _book(frame: Frame, event: dict, sent: int, common: dict) -> None:
    sides: dict[str, list] = {"bid": [], "offer": []}
    latest = 0
    for u in _items(event, "updates"):
        side = u["side"]
        if side not in sides:
            raise NormalizeError(f"l2_data: unknown side {str(side)[:20]!r}")
        sides[side].append({"price": dec(u["price_level"], "price_level"), "size": dec(u["new_quantity"], "new_quantity")})
        if u.get("event_time"):
            latest = max(latest, rfc3339_ns(u["event_time"], "event_time"))
    snapshot = _event_type(event, "l2_data") == "snapshot"
    frame.record("book", event["product_id"], event_time=latest if latest and not snapshot else sent,
                 snapshot=snapshot, bids=sides["bid"], asks=sides["offer"], **common)


def _trades(frame: Frame, event: dict, sent: int, common: dict) -> None:
    _event_type(event, "market_trades")
    trades = _items(event, "trades")
    parsed = [(rfc3339_ns(t["time"], "time"), t) for t in trades]
    for when, t in sorted(parsed, key=lambda p: (_id_order(p[1]["trade_id"]), p[0])):   # oldest first
        side = t.get("side")
        if side is not None and side not in TAKER_SIDE:
            raise NormalizeError(f"market_trades: unknown side {str(side)[:20]!r}")
        frame.record("trade", t["product_id"], event_time=when, trade_id=str(t["trade_id"]),
                     price=dec(t["price"], "price"), size=dec_or_none(t.get("size"), "size"),
                     side=TAKER_SIDE.get(side), action="new", **common)


def _tickers(frame: Frame, event: dict, sent: int, common: dict) -> None:
    _event_type(event, common["channel"])
    for t in _items(event, "tickers"):
        values = {name: dec_or_none(t.get(key), key) for name, key in LEVEL1.items()}
        extra = {k: text(v) for k, v in t.items() if k not in TICKER_SKIP and v is not None}
        frame.record("level1", t["product_id"], event_time=sent, fields=extra,
                     **{k: v for k, v in values.items() if v is not None}, **common)


def _candles(frame: Frame, event: dict, sent: int, common: dict) -> None:
    _event_type(event, "candles")
    for c in _items(event, "candles"):
        frame.record("bar", c["product_id"], event_time=sent, interval=CANDLE_INTERVAL, bar_status="partial",
                     start_time=s_ns(c["start"], "start"), open=dec(c["open"], "open"), high=dec(c["high"], "high"),
                     low=dec(c["low"], "low"), close=dec(c["close"], "close"),
                     volume=dec_or_none(c.get("volume"), "volume"), **common)


def _status(frame: Frame, event: dict, sent: int, common: dict) -> None:
    _event_type(event, "status")
    for p in _items(event, "products"):
        status = p["status"]
        if not isinstance(status, str):
            raise NormalizeError("status: product status must be text")
        frame.record("status", p["id"], event_time=sent, status_kind="product_status", status=status,
                     status_message=p.get("status_message") or None,
                     fields={k: text(v) for k, v in p.items() if k not in STATUS_SKIP and v is not None}, **common)


def _items(event: dict, name: str) -> list[dict]:
    items = event[name]
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise NormalizeError(f"'{name}' must be a list of objects")
    return items


def _event_type(event: dict, channel: str) -> str:
    kind = event.get("type")
    if kind not in ("snapshot", "update"):
        raise NormalizeError(f"{channel}: event type must be snapshot or update, got {str(kind)[:20]!r}")
    return kind


def _id_order(trade_id: Any) -> tuple:
    text_id = str(trade_id)
    return (0, int(text_id), "") if text_id.isdigit() else (1, 0, text_id)


HANDLERS = {"l2_data": _book, "market_trades": _trades, "ticker": _tickers, "ticker_batch": _tickers,
            "candles": _candles, "status": _status}
