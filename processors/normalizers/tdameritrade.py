"""TD Ameritrade and Schwab streamer frames -> normalized records (field ids per flavour).

A frame is one of ``response``/``notify`` (control: ignored), ``data`` or ``snapshot``;
data records are keyed by numeric field ids whose names come from the shared map
(:mod:`tickpipe.emulators.streamer_fields`). Example (Schwab CHART_EQUITY -> one ``bar``)::

    {"data":[{"service":"CHART_EQUITY","timestamp":1715908546054,"command":"SUBS",
      "content":[{"seq":0,"key":"MSFT","1":779,"2":421.65,"3":421.79,"4":421.65,"5":421.755,
                  "6":26.0,"7":1715903940000,"8":19859}]}]}

| service | kind | notes |
| --- | --- | --- |
| QUOTE, OPTION, LEVELONE_* | ``level1`` | sparse deltas merged per (service, key) with ``frame.recall`` |
| CHART_EQUITY, CHART_FUTURES | ``bar`` | 1m, final; ``seq`` -> sequence (scope key) |
| CHART_HISTORY_FUTURES (snapshot) | ``bar`` | layout unconfirmed; interval ``unknown`` |
| TIMESALE_* | ``trade`` | field 4 LAST_SEQUENCE -> trade_id; ``seq`` when present |
| LISTED/NYSE/NASDAQ/OPTIONS_BOOK | ``book`` | whole book (snapshot true) |
| SCREENER_*, ACTIVES_* | ``most_active`` | ACTIVES string grammar unconfirmed |
| NEWS_HEADLINE, ACCT_ACTIVITY | ignored | no market-data schema |
"""

from __future__ import annotations

from typing import Any

from tickpipe.emulators.streamer_fields import CHANGE, SCHWAB, TDA, delivery, label
from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, dec_or_none, ms_ns, normalize_symbol, text
from tickpipe.processors.normalizers.errors import NormalizeError
from tickpipe.processors.records import SCOPE_KEY

MINUTE_NS = 60_000_000_000
# level1 schema field <- provider field names (first present wins)
LEVEL1 = {"bid_price": ("BID_PRICE",), "bid_size": ("BID_SIZE",), "ask_price": ("ASK_PRICE",),
          "ask_size": ("ASK_SIZE",), "last_price": ("LAST_PRICE",), "last_size": ("LAST_SIZE",),
          "open_price": ("OPEN_PRICE",), "high_price": ("HIGH_PRICE",), "low_price": ("LOW_PRICE",),
          "close_price": ("CLOSE_PRICE",), "volume": ("TOTAL_VOLUME",), "net_change": ("NET_CHANGE",),
          "mark_price": ("MARK",)}
QUOTE_TIMES = ("QUOTE_TIME_MILLIS", "QUOTE_TIME_IN_LONG")
TRADE_TIMES = ("TRADE_TIME_MILLIS", "TRADE_TIME_IN_LONG")
USED = {name for names in LEVEL1.values() for name in names} | set(QUOTE_TIMES) | set(TRADE_TIMES)
ENVELOPE_KEYS = {"key", "seq", "delayed"}
SCREENER_ITEM = {"symbol", "description", "lastPrice", "netChange", "netPercentChange", "volume", "trades"}


def normalize_tdameritrade(frame: Frame) -> None:
    _normalize(frame, TDA)


def normalize_schwab(frame: Frame) -> None:
    _normalize(frame, SCHWAB)


def _normalize(frame: Frame, flavour: str) -> None:
    msg = frame.json()
    if not isinstance(msg, dict) or not msg:
        raise NormalizeError("frame is not a JSON object")
    unknown = set(msg) - {"response", "notify", "data", "snapshot"}
    if unknown:
        raise NormalizeError(f"unknown message keys {sorted(unknown)}")
    for reply in _list(msg, "response"):
        frame.ignore(f"response {reply['command']} code {reply['content']['code']}")
    for note in _list(msg, "notify"):
        frame.ignore("heartbeat" if "heartbeat" in note else f"notify code {note['content']['code']}")
    for entry in _list(msg, "data") + _list(msg, "snapshot"):
        service = entry["service"]
        kind = delivery(flavour, service)
        if kind is None:
            raise NormalizeError(f"unknown {flavour} service {str(service)[:40]!r}")
        handler = _HANDLERS.get(service.split("_")[0]) or (_level_one if kind == CHANGE else None)
        if handler is None:
            raise NormalizeError(f"no normalizer for service {service}")
        for record in _list(entry, "content"):
            if not isinstance(record, dict) or not isinstance(record.get("key"), str):
                raise NormalizeError(f"{service} record without a key")
            handler(frame, flavour, service, record, entry)


def _list(doc: dict, name: str) -> list:
    value = doc.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise NormalizeError(f"'{name}' must be a list of objects")
    return value


def _level_one(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    """Merge the sparse delta into the key's state and emit the full image."""
    key = record["key"]
    state_key = f"l1|{service}|{key}"
    merged = dict(frame.recall(state_key) or {})
    merged.update({k: v for k, v in label(flavour, service, record).items() if k not in ("key", "seq")})
    frame.remember(state_key, merged)
    values = {field: dec_or_none(_first(merged, names), names[0]) for field, names in LEVEL1.items()}
    quote_ms, trade_ms = _first(merged, QUOTE_TIMES), _first(merged, TRADE_TIMES)
    quote_time = ms_ns(quote_ms, "quote time") if quote_ms is not None else None
    trade_time = ms_ns(trade_ms, "trade time") if trade_ms is not None else None
    times = [t for t in (quote_time, trade_time) if t is not None]
    delayed = merged.get("delayed")
    frame.record("level1", key, channel=service, event_time=max(times) if times else ms_ns(entry["timestamp"]),
                 quote_time=quote_time, trade_time=trade_time, delayed=delayed if isinstance(delayed, bool) else None,
                 fields={k: text(v) for k, v in merged.items() if k not in USED and k != "delayed" and v is not None},
                 **values)


def _first(values: dict, names: tuple[str, ...]) -> Any:
    return next((values[n] for n in names if values.get(n) is not None), None)


def _chart(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    if service == "CHART_HISTORY_FUTURES":
        return _chart_history(frame, record)
    named = label(flavour, service, record)
    start = ms_ns(named["CHART_TIME_MILLIS"], "CHART_TIME_MILLIS")
    extra = {k: text(v) for k, v in named.items() if k in ("SEQUENCE", "CHART_DAY")}
    frame.record("bar", record["key"], channel=service, event_time=start, sequence=_seq(record),
                 sequence_scope=SCOPE_KEY if "seq" in record else None, interval="1m", bar_status="final",
                 start_time=start, end_time=start + MINUTE_NS, open=dec(named["OPEN_PRICE"], "OPEN_PRICE"),
                 high=dec(named["HIGH_PRICE"], "HIGH_PRICE"), low=dec(named["LOW_PRICE"], "LOW_PRICE"),
                 close=dec(named["CLOSE_PRICE"], "CLOSE_PRICE"), volume=dec_or_none(named.get("VOLUME"), "VOLUME"),
                 fields=extra)


def _chart_history(frame: Frame, record: dict) -> None:
    """TDA snapshot ``{"key": "/ES", "0": <requestid>, "1": status, "2": count, "3": [candles]}`` (unconfirmed)."""
    for candle in record.get("3") or []:
        start = ms_ns(candle["0"], "chart time")
        frame.record("bar", record["key"], channel="CHART_HISTORY_FUTURES", event_time=start, interval="unknown",
                     bar_status="final", start_time=start, open=dec(candle["1"], "open"), high=dec(candle["2"], "high"),
                     low=dec(candle["3"], "low"), close=dec(candle["4"], "close"), volume=dec_or_none(candle.get("5")))


def _timesale(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    named = label(flavour, service, record)
    trade_id = named.get("LAST_SEQUENCE")
    frame.record("trade", record["key"], channel=service, event_time=ms_ns(named["TRADE_TIME_MILLIS"], "TRADE_TIME"),
                 sequence=_seq(record), sequence_scope=SCOPE_KEY if "seq" in record else None,
                 trade_id=str(trade_id) if trade_id is not None else None,
                 price=dec(named["LAST_PRICE"], "LAST_PRICE"), size=dec_or_none(named.get("LAST_SIZE"), "LAST_SIZE"))


def _book(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    named = label(flavour, service, record)
    when = named.get("BOOK_TIME_MILLIS")
    frame.record("book", record["key"], channel=service, snapshot=True,
                 event_time=ms_ns(when if when is not None else entry["timestamp"], "BOOK_TIME"),
                 bids=[_level(lvl) for lvl in named.get("BIDS") or []], asks=[_level(lvl) for lvl in named.get("ASKS") or []])


def _level(level: dict) -> dict:
    return {"price": dec(level["0"], "book price"), "size": dec(level["1"], "book size"),
            "orders": int(level["2"]) if level.get("2") is not None else None,
            "venues": [{"venue": str(e["0"]), "size": dec_or_none(e.get("1"), "venue size"),
                        "time": int(e["2"]) if e.get("2") is not None else None} for e in level.get("3") or []]}


def _screener(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    named = label(flavour, service, record)
    entries = []
    for rank, item in enumerate(named.get("ITEMS") or [], 1):
        entries.append({"rank": rank, "symbol": normalize_symbol(item["symbol"]), "provider_symbol": item["symbol"],
                        "volume": dec_or_none(item.get("volume"), "volume"), "trades": _int(item.get("trades")),
                        "percent_change": dec_or_none(item.get("netPercentChange"), "netPercentChange"),
                        "last_price": dec_or_none(item.get("lastPrice"), "lastPrice"),
                        "net_change": dec_or_none(item.get("netChange"), "netChange"),
                        "description": item.get("description"),
                        "fields": {k: text(v) for k, v in item.items() if k not in SCREENER_ITEM and v is not None}})
    when = named.get("TIMESTAMP")
    frame.record("most_active", record["key"], symbol=record["key"], channel=service,
                 event_time=ms_ns(when, "TIMESTAMP") if when is not None else None,
                 sort_field=_opt_text(named.get("SORT_FIELD")), window=_opt_text(named.get("FREQUENCY")), entries=entries)


def _actives(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    """``"id;duration;start;display;group;...;total:groups:?:SYM:vol:pct:..."`` (grammar unconfirmed)."""
    data = label(flavour, service, record).get("ACTIVES_DATA")
    if not isinstance(data, str):
        raise NormalizeError("ACTIVES record without ACTIVES_DATA")
    header = data.split(";")
    groups = header[6].split(":") if len(header) > 6 else []
    width = 4 if service == "ACTIVES_OPTIONS" else 3
    entries = []
    for rank, start in enumerate(range(3, len(groups) - width + 1, width), 1):
        part = groups[start:start + width]
        entries.append({"rank": rank, "symbol": normalize_symbol(part[0]), "provider_symbol": part[0],
                        "volume": dec_or_none(part[-2], "volume"), "percent_change": dec_or_none(part[-1], "percent"),
                        "description": part[1] if width == 4 else None, "fields": {}})
    key = record["key"]
    frame.record("most_active", key, symbol=key, channel=service, sort_field="VOLUME",
                 window=key.rsplit("-", 1)[-1], total_volume=dec_or_none(groups[0] if groups else None, "total"),
                 entries=entries)


def _ignored(frame: Frame, flavour: str, service: str, record: dict, entry: dict) -> None:
    frame.ignore(service.lower())


def _seq(record: dict) -> int | None:
    seq = record.get("seq")
    if seq is not None and type(seq) is not int:
        raise NormalizeError("seq is not an integer")
    return seq


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _opt_text(value: Any) -> str | None:
    return None if value is None else text(value)


_HANDLERS = {"CHART": _chart, "TIMESALE": _timesale, "LISTED": _book, "NYSE": _book, "NASDAQ": _book,
             "OPTIONS": _book, "SCREENER": _screener, "ACTIVES": _actives, "NEWS": _ignored, "ACCT": _ignored}
