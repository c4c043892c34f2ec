"""Alpaca wire format: JSON or msgpack encoding and the shape of every server message.

v2 / crypto frames are arrays of maps with ``T`` first (the Go SDK insists on it)::

    [{"T":"t","S":"AAPL","i":628,"x":"K","p":162.92,"s":3,"c":["@","F","T","I"],"z":"C","t":"2023-04-06T11:54:26.838232225Z"}]

In msgpack mode ``t`` is a msgpack Timestamp (ext -1) instead of an RFC 3339 string.
Legacy v1 frames are single JSON objects ``{"stream": "T.SPY", "data": {...}}`` with epoch
nanosecond times. Renderers take the neutral events of :mod:`tickpipe.emulators.alpaca_feed`.
"""

from __future__ import annotations

import time
import zlib
from decimal import Decimal
from typing import Any

import msgpack
import orjson

from tickpipe.emulators.alpaca_feed import Book, Event
from tickpipe.emulators.market import Bar

CT_MSGPACK = "application/msgpack"

ERRORS = {
    400: "invalid syntax",
    401: "not authenticated",
    402: "auth failed",
    403: "already authenticated",
    404: "auth timeout",
    405: "symbol limit exceeded",
    406: "connection limit exceeded",
    407: "slow client",
    409: "insufficient subscription",
    410: "invalid subscribe action for this feed",
    500: "internal error",
}

STOCK_EXCHANGES = "VKQZPNJXYBDAHIMUW"
V1_EXCHANGES = (2, 3, 4, 8, 11, 12, 15, 17, 19)
TRADE_CONDITIONS = (["@"], ["@", "F", "T", "I"], ["@", "I"], ["@", "T"])


def rfc3339(ns: int) -> str:
    """Epoch ns as Alpaca writes it: UTC, fraction trimmed of trailing zeros ('...:45.3355677Z')."""
    sec, frac = divmod(ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{base}.{frac:09d}".rstrip("0") + "Z" if frac else base + "Z"


class Codec:
    """JSON text frames or msgpack binary frames, chosen by the upgrade ``Content-Type``."""

    def __init__(self, content_type: str | None) -> None:
        self.msgpack = (content_type or "").split(";")[0].strip().lower() == CT_MSGPACK
        self.name = "msgpack" if self.msgpack else "json"

    def ts(self, ns: int) -> Any:
        if self.msgpack:
            sec, frac = divmod(ns, 1_000_000_000)
            return msgpack.Timestamp(sec, frac)
        return rfc3339(ns)

    def encode(self, obj: Any) -> str | bytes:
        if self.msgpack:
            return msgpack.packb(obj, use_bin_type=True)
        return orjson.dumps(obj).decode()

    def raw(self, garbage: str | bytes) -> str | bytes:
        """A malformed-frame fault, as a frame of this connection's kind where possible."""
        return garbage.encode("utf-8", "replace") if self.msgpack and isinstance(garbage, str) else garbage


def decode_client(data: str | bytes) -> Any:
    """A client message: JSON text, or msgpack (what the SDKs send after asking for msgpack)."""
    if isinstance(data, str):
        return orjson.loads(data)
    try:
        return msgpack.unpackb(data, raw=False)
    except Exception:
        return orjson.loads(data)  # JSON sent in a binary frame; raises ValueError if not


def control(t: str, **fields: Any) -> list[dict]:
    return [{"T": t, **fields}]


def error(code: int) -> list[dict]:
    return control("error", code=code, msg=ERRORS[code])


def tape(symbol: str) -> str:
    return "ABC"[zlib.crc32(symbol.encode()) % 3]


def _num(value: Decimal) -> float:
    return float(value)  # Alpaca's server is Go: prices are float64 in msgpack


def _size(value: Decimal, crypto: bool) -> float | int:
    return float(value) if crypto else int(value)


def _levels(levels: list[tuple[Decimal, Decimal]]) -> list[dict]:
    return [{"p": _num(p), "s": float(s)} for p, s in levels]


def _bar(t: str, symbol: str, bar: Bar, ts: Any, crypto: bool) -> dict:
    return {"T": t, "S": symbol, "o": _num(bar.open), "h": _num(bar.high), "l": _num(bar.low),
            "c": _num(bar.close), "v": _size(bar.volume, crypto), "t": ts, "n": bar.trades,
            "vw": float(bar.vwap)}


def v2_message(event: Event, codec: Codec, crypto: bool, lots: bool = False) -> dict:
    """One v2 stock or v1beta3 crypto data message (a map with ``T`` first); ``lots``: stock
    quote sizes in round lots of 100 shares rather than shares."""
    kind, sym, d, ts = event.kind, event.symbol, event.data, codec.ts(event.ts_ns)
    if kind == "trade":
        if crypto:
            return {"T": "t", "S": sym, "p": _num(d.price), "s": float(d.size), "t": ts, "i": d.trade_id,
                    "tks": "B" if d.side == "buy" else "S"}
        return {"T": "t", "S": sym, "i": d.trade_id, "x": STOCK_EXCHANGES[d.trade_id % len(STOCK_EXCHANGES)],
                "p": _num(d.price), "s": int(d.size), "c": TRADE_CONDITIONS[d.trade_id % len(TRADE_CONDITIONS)],
                "z": tape(sym), "t": ts}
    if kind == "quote":
        if crypto:
            return {"T": "q", "S": sym, "bp": _num(d.bid), "bs": float(d.bid_size), "ap": _num(d.ask),
                    "as": float(d.ask_size), "t": ts}
        unit = 100 if lots else 1
        return {"T": "q", "S": sym, "bx": "K", "bp": _num(d.bid), "bs": max(1, int(d.bid_size) // unit), "ax": "Q",
                "ap": _num(d.ask), "as": max(1, int(d.ask_size) // unit), "c": ["R"], "z": tape(sym), "t": ts}
    if kind in ("bar", "dailyBar", "updatedBar"):
        return _bar({"bar": "b", "dailyBar": "d", "updatedBar": "u"}[kind], sym, d, ts, crypto)
    if kind == "orderbook":
        book: Book = d
        msg = {"T": "o", "S": sym, "t": ts, "b": _levels(book.bids), "a": _levels(book.asks)}
        if book.reset:
            msg["r"] = True
        return msg
    if kind == "status":
        return {"T": "s", "S": sym, "sc": d[0], "sm": d[1], "rc": d[2], "rm": d[3], "t": ts, "z": tape(sym)}
    if kind == "luld":
        return {"T": "l", "S": sym, "u": _num(d[0]), "d": _num(d[1]), "i": "B", "t": ts, "z": tape(sym)}
    if kind == "imbalance":
        return {"T": "i", "S": sym, "p": _num(d), "z": tape(sym), "t": ts}
    if kind == "correction":
        old, new = d
        return {"T": "c", "S": sym, "x": STOCK_EXCHANGES[old.trade_id % len(STOCK_EXCHANGES)],
                "oi": old.trade_id, "op": _num(old.price), "os": int(old.size), "oc": [" ", "7"],
                "ci": new.trade_id, "cp": _num(new.price), "cs": int(new.size), "cc": [" ", "7"],
                "z": tape(sym), "t": ts}
    if kind == "cancelError":
        return {"T": "x", "S": sym, "i": d.trade_id, "x": STOCK_EXCHANGES[d.trade_id % len(STOCK_EXCHANGES)],
                "p": _num(d.price), "s": int(d.size), "a": "C", "z": tape(sym), "t": ts}
    raise ValueError(f"no v2 message for event kind {kind!r}")


def v1_message(event: Event, bar_ns: int) -> dict:
    """One legacy v1 frame: ``{"stream": "T.SPY", "data": {...}}`` (trades, quotes, minute bars)."""
    kind, sym, d = event.kind, event.symbol, event.data
    if kind == "trade":
        return {"stream": f"T.{sym}", "data": {
            "ev": "T", "T": sym, "i": d.trade_id, "x": V1_EXCHANGES[d.trade_id % len(V1_EXCHANGES)],
            "p": _num(d.price), "s": int(d.size), "t": event.ts_ns, "c": [14, 37, 41][: 1 + d.trade_id % 3],
            "z": 1 + "ABC".index(tape(sym))}}
    if kind == "quote":
        return {"stream": f"Q.{sym}", "data": {
            "ev": "Q", "T": sym, "x": 17, "p": _num(d.bid), "s": int(d.bid_size), "X": 17, "P": _num(d.ask),
            "S": int(d.ask_size), "c": [1], "t": event.ts_ns}}
    if kind == "bar":
        day: Bar = event.day or d
        start_ms = d.start_ns // 1_000_000
        return {"stream": f"AM.{sym}", "data": {
            "ev": "AM", "T": sym, "v": int(d.volume), "av": int(day.volume), "op": _num(day.open),
            "vw": float(d.vwap), "o": _num(d.open), "c": _num(d.close), "h": _num(d.high), "l": _num(d.low),
            "a": float(day.vwap), "s": start_ms, "e": start_ms + bar_ns // 1_000_000}}
    raise ValueError(f"no v1 message for event kind {kind!r}")
