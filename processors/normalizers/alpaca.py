"""Alpaca normalizer: v2 stock and v1beta3 crypto frames (JSON or msgpack) and legacy v1 frames.

v2 frame (an array; ``T`` names each message; msgpack frames carry ``t`` as a Timestamp)::

    [{"T":"t","S":"AAPL","i":628,"x":"K","p":162.92,"s":3,"c":["@","F","T","I"],"z":"C","t":"2023-04-06T11:54:26.838232225Z"}]

v1 frame (one object)::

    {"stream":"T.SPY","data":{"ev":"T","T":"SPY","i":117537207,"x":2,"p":283.63,"s":2,"t":1587407015152775000,"c":[14,37,41],"z":2}}

Records: ``t`` trade; ``c`` correction (a trade, action ``correction``, ``trade_id`` = the
corrected id, ``ref_*`` = the original); ``x`` cancel/error (a trade, action ``cancel``/
``error``, ``ref_trade_id``); ``q`` quote; ``b``/``u``/``d`` bars (final/updated/partial);
``o`` book; ``s`` status, ``l`` LULD and ``i`` imbalance as status records. Control
messages (success, subscription, error) and news/perp pricing are ignored.
"""

from __future__ import annotations

from typing import Any

from tickpipe.envelope import CT_MSGPACK
from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, dec_or_none, ms_ns, rfc3339_ns
from tickpipe.processors.normalizers.errors import NormalizeError

CONTROL = ("success", "subscription", "error")
IGNORED = {"n": "news", "p": "perp pricing"}
BARS = {"b": ("1m", "final"), "u": ("1m", "updated"), "d": ("1d", "partial")}
TAKER = {"B": "buy", "S": "sell"}
V1_TAPES = {1: "A", 2: "B", 3: "C"}


def normalize(frame: Frame) -> None:
    doc = frame.msgpack() if frame.content_type == CT_MSGPACK else frame.json()
    if isinstance(doc, dict) and "stream" in doc:
        return _v1(frame, doc)
    if not isinstance(doc, list):
        raise NormalizeError("frame is neither an array of messages (v2) nor a stream object (v1)")
    for msg in doc:
        if not isinstance(msg, dict):
            raise NormalizeError("message is not an object")
        _v2(frame, msg)


def _time(value: Any, field: str = "t") -> int:
    if hasattr(value, "to_unix_nano"):  # msgpack Timestamp (ext -1)
        return value.to_unix_nano()
    return rfc3339_ns(value, field)


def _texts(values: Any, field: str) -> list[str]:
    if values is None:
        return []
    if not isinstance(values, list):
        raise NormalizeError(f"{field}: expected a list")
    return [str(v) for v in values]


def _v2(frame: Frame, m: dict) -> None:
    t = m.get("T")
    if t in CONTROL:
        frame.ignore(f"{t} {m.get('code')}" if t == "error" else t)
        return
    if t in IGNORED:
        frame.ignore(IGNORED[t])
        return
    sym, ch = m["S"], t
    if t == "t":
        frame.record("trade", sym, channel=ch, event_time=_time(m["t"]), trade_id=str(m["i"]),
                     price=dec(m["p"], "p"), size=dec(m["s"], "s"), exchange=m.get("x"),
                     conditions=_texts(m.get("c"), "c"), tape=m.get("z"), side=TAKER.get(m.get("tks")))
    elif t == "q":
        frame.record("quote", sym, channel=ch, event_time=_time(m["t"]), bid_price=dec(m["bp"], "bp"),
                     bid_size=dec(m["bs"], "bs"), ask_price=dec(m["ap"], "ap"), ask_size=dec(m["as"], "as"),
                     bid_exchange=m.get("bx"), ask_exchange=m.get("ax"), conditions=_texts(m.get("c"), "c"),
                     tape=m.get("z"))
    elif t in BARS:
        interval, status = BARS[t]
        start = _time(m["t"])
        frame.record("bar", sym, channel=ch, event_time=start, interval=interval, bar_status=status,
                     start_time=start, open=dec(m["o"], "o"), high=dec(m["h"], "h"), low=dec(m["l"], "l"),
                     close=dec(m["c"], "c"), volume=dec_or_none(m.get("v"), "v"), trade_count=m.get("n"),
                     vwap=dec_or_none(m.get("vw"), "vw"))
    elif t == "o":
        frame.record("book", sym, channel=ch, event_time=_time(m["t"]), snapshot=bool(m.get("r", False)),
                     bids=_levels(m.get("b")), asks=_levels(m.get("a")))
    elif t == "c":
        frame.record("trade", sym, channel=ch, event_time=_time(m["t"]), action="correction",
                     trade_id=str(m["ci"]), price=dec(m["cp"], "cp"), size=dec(m["cs"], "cs"),
                     conditions=_texts(m.get("cc"), "cc"), exchange=m.get("x"), tape=m.get("z"),
                     ref_trade_id=str(m["oi"]), ref_price=dec(m["op"], "op"), ref_size=dec(m["os"], "os"),
                     ref_conditions=_texts(m.get("oc"), "oc"))
    elif t == "x":
        frame.record("trade", sym, channel=ch, event_time=_time(m["t"]),
                     action="cancel" if m.get("a") == "C" else "error", ref_trade_id=str(m["i"]),
                     price=dec(m["p"], "p"), size=dec(m["s"], "s"), exchange=m.get("x"), tape=m.get("z"))
    elif t == "s":
        frame.record("status", sym, channel=ch, event_time=_time(m["t"]), status=str(m["sc"]),
                     status_message=m.get("sm"), reason_code=m.get("rc"), reason_message=m.get("rm"),
                     tape=m.get("z"))
    elif t == "l":
        frame.record("status", sym, channel=ch, event_time=_time(m["t"]), status="luld",
                     limit_up=dec(m["u"], "u"), limit_down=dec(m["d"], "d"), indicator=m.get("i"), tape=m.get("z"))
    elif t == "i":
        frame.record("status", sym, channel=ch, event_time=_time(m["t"]), status="imbalance",
                     price=dec(m["p"], "p"), tape=m.get("z"))
    else:
        raise NormalizeError(f"unknown message type {str(t)[:20]!r}")


def _levels(levels: Any) -> list[dict]:
    if levels is None:
        return []
    if not isinstance(levels, list):
        raise NormalizeError("book side: expected a list of levels")
    return [{"price": dec(lv["p"], "p"), "size": dec(lv["s"], "s")} for lv in levels]


def _v1(frame: Frame, doc: dict) -> None:
    stream, d = doc["stream"], doc.get("data")
    if stream in ("authorization", "listening"):
        frame.ignore(stream)
        return
    if not isinstance(d, dict):
        raise NormalizeError("v1 frame without a data object")
    ev, sym = d.get("ev"), d["T"]
    if ev == "T":
        frame.record("trade", sym, channel="T", event_time=int(d["t"]), trade_id=str(d["i"]),
                     price=dec(d["p"], "p"), size=dec(d["s"], "s"), exchange=str(d["x"]),
                     conditions=_texts(d.get("c"), "c"), tape=V1_TAPES.get(d.get("z")))
    elif ev == "Q":
        frame.record("quote", sym, channel="Q", event_time=int(d["t"]), bid_price=dec(d["p"], "p"),
                     bid_size=dec(d["s"], "s"), ask_price=dec(d["P"], "P"), ask_size=dec(d["S"], "S"),
                     bid_exchange=str(d["x"]), ask_exchange=str(d["X"]), conditions=_texts(d.get("c"), "c"))
    elif ev == "AM":
        start = ms_ns(d["s"], "s")
        extra = {k: dec(d[k], k) for k in ("av", "op", "a") if d.get(k) is not None}
        frame.record("bar", sym, channel="AM", event_time=start, interval="1m", bar_status="final",
                     start_time=start, end_time=ms_ns(d["e"], "e"), open=dec(d["o"], "o"), high=dec(d["h"], "h"),
                     low=dec(d["l"], "l"), close=dec(d["c"], "c"), volume=dec_or_none(d.get("v"), "v"),
                     vwap=dec_or_none(d.get("vw"), "vw"), fields=extra)
    else:
        raise NormalizeError(f"unknown v1 event {str(ev)[:20]!r} on stream {str(stream)[:40]!r}")
