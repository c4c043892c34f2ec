"""Coinbase Exchange order-level messages (``full``, ``user``, ``level3``) and the subscription memory.

A ``match`` is the same object on the ``full`` and the ``matches`` channel; which one
carried it follows from the last ``subscriptions`` ack of the connection, remembered per
session (``full`` wins when both are subscribed, as the feed sends it once). Order events
(``received``/``open``/``done``/``change``, level3 ``noop``) carry no market data: they
report their product ``sequence`` with ``mark_sequence`` so the full channel's numbering
stays contiguous for the integrity stage; ``user`` events are gappy by nature and marked
nowhere. Level3 arrays are read through the schema the feed sent first::

    {"type":"level3","schema":{"open":["type","product_id","sequence","order_id","side","price","size","time"],…}}
    ["open","BTC-USD","57560479456","12aca6e0-…","buy","27268.09","0.02","2023-03-28T23:24:03.185394Z"]
"""

from __future__ import annotations

from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, rfc3339_ns
from tickpipe.processors.normalizers.errors import NormalizeError
from tickpipe.processors.records import SCOPE_INSTRUMENT

SUBS_KEY, SCHEMA_KEY = "subscriptions", "level3_schema"
ORDER_EVENTS = ("received", "open", "done", "change")
DEFAULT_LEVEL3_SCHEMA = {
    "change": ["type", "product_id", "sequence", "order_id", "price", "size", "time"],
    "done": ["type", "product_id", "sequence", "order_id", "time"],
    "match": ["type", "product_id", "sequence", "maker_order_id", "taker_order_id", "price", "size", "time"],
    "noop": ["type", "product_id", "sequence", "time"],
    "open": ["type", "product_id", "sequence", "order_id", "side", "price", "size", "time"],
}
TAKER_SIDE = {"buy": "sell", "sell": "buy"}   # match.side is the maker's


def remember_subscriptions(frame: Frame, msg: dict) -> None:
    """Keep the ack's channel -> products (comma-joined) for this connection and session."""
    channels = msg.get("channels")
    if not isinstance(channels, list):
        raise NormalizeError("subscriptions: channels must be a list")
    subs = {}
    for entry in channels:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise NormalizeError("subscriptions: every channel needs a name")
        subs[entry["name"]] = ",".join(p for p in entry.get("product_ids") or () if isinstance(p, str))
    frame.remember(SUBS_KEY, subs)
    frame.ignore("subscriptions ack")


def order_channel(frame: Frame, product: str) -> str:
    """Which subscription carried an order-level object for ``product``: full, user or matches."""
    subs = frame.recall(SUBS_KEY) or {}
    for channel in ("full", "user"):
        if product in (subs.get(channel) or "").split(","):
            return channel
    return "matches"


def order_event(frame: Frame, msg: dict) -> None:
    """``received``/``open``/``done``/``change``: no record; the full channel's sequence is marked."""
    product, seq = msg.get("product_id"), msg.get("sequence")
    if not isinstance(product, str) or type(seq) is not int:
        raise NormalizeError(f"{msg['type']}: product_id and integer sequence required")
    channel = order_channel(frame, product)
    if channel == "full":
        frame.mark_sequence(seq, SCOPE_INSTRUMENT, key=product, channel="full")
    frame.ignore(f"order event ({msg['type']})")


def match(frame: Frame, msg: dict, channel: str | None = None) -> None:
    """A trade from ``match`` (full/user/matches); ``side`` becomes the taker's."""
    product = msg["product_id"]
    channel = channel or order_channel(frame, product)
    seq = msg["sequence"] if channel == "full" or channel == "matches" else None
    if seq is not None and type(seq) is not int:
        raise NormalizeError("match: sequence must be an integer")
    trade_id = msg["trade_id"]
    if type(trade_id) is not int:
        raise NormalizeError("match: trade_id must be an integer")
    side = msg.get("side")
    if side not in TAKER_SIDE:
        raise NormalizeError(f"match: side {str(side)[:10]!r} is not buy/sell")
    frame.record("trade", product, channel=channel, event_time=rfc3339_ns(msg["time"], "time"),
                 sequence=seq, sequence_scope=SCOPE_INSTRUMENT if seq is not None else None,
                 trade_id=str(trade_id), price=dec(msg["price"], "price"), size=dec(msg["size"], "size"),
                 side=TAKER_SIDE[side])


def level3_schema(frame: Frame, msg: dict) -> None:
    schema = msg.get("schema")
    if not isinstance(schema, dict) or not all(isinstance(v, list) and all(isinstance(f, str) for f in v)
                                               for v in schema.values()):
        raise NormalizeError("level3: schema must map message kinds to field lists")
    frame.remember(SCHEMA_KEY, {kind: ",".join(fields) for kind, fields in schema.items()})
    frame.ignore("level3 schema")


def level3_row(frame: Frame, row: list) -> None:
    """One level3 array: a ``match`` becomes a trade (no side in this form), the rest mark the sequence."""
    if not row or not isinstance(row[0], str):
        raise NormalizeError("level3: array without a message kind")
    remembered = frame.recall(SCHEMA_KEY)
    schema = {k: v.split(",") for k, v in remembered.items()} if remembered else DEFAULT_LEVEL3_SCHEMA
    fields = schema.get(row[0])
    if fields is None:
        frame.ignore("unknown level3 kind")
        return
    if len(row) != len(fields):
        raise NormalizeError(f"level3 {row[0]}: {len(row)} values for {len(fields)} schema fields")
    doc = dict(zip(fields, row))
    product, seq_text = doc.get("product_id"), doc.get("sequence")
    if not isinstance(product, str) or not isinstance(seq_text, str) or not seq_text.isdigit():
        raise NormalizeError(f"level3 {row[0]}: product_id and a numeric sequence required")
    seq = int(seq_text)
    if row[0] != "match":
        frame.mark_sequence(seq, SCOPE_INSTRUMENT, key=product, channel="level3")
        frame.ignore(f"order event ({row[0]})")
        return
    frame.record("trade", product, channel="level3", event_time=rfc3339_ns(doc["time"], "time"), sequence=seq,
                 sequence_scope=SCOPE_INSTRUMENT, price=dec(doc["price"], "price"), size=dec(doc["size"], "size"))
