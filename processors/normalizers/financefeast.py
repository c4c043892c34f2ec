"""Financefeast normalizer: ``price`` messages become trades; login replies are control traffic.

Frame (one JSON object per frame, ``../shared/protocols/financefeast.md`` section 4)::

    {"type":"price","data":{"date":"2021-09-29T09:35:53","price":3.0424,"volume":181123,"symbol":"NZB.NZ"}}

-> one ``trade``: ``price`` "3.0424" (the JSON literal, exact), ``size`` "181123", channel
``price``, no trade id or sequence (the feed has none: the integrity stage checks event
time per instrument). ``authenticated``, ``pong`` and ``error`` (the producer acts on it)
are ignored; any other type is a dead letter.

``date`` has no fraction and no offset and its zone is unconfirmed: :func:`normalize` reads
it as UTC; :func:`normalize_nz_local` reads it as New Zealand time (select it with the
normalizer override ``financefeast=tickpipe.processors.normalizers.financefeast:normalize_nz_local``).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, rfc3339_ns
from tickpipe.processors.normalizers.errors import NormalizeError

CONTROL = ("authenticated", "pong", "error")
NZ = ZoneInfo("Pacific/Auckland")


def normalize(frame: Frame) -> None:
    _normalize(frame, _utc_ns)


def _utc_ns(date) -> int:
    return rfc3339_ns(date, "date")


def normalize_nz_local(frame: Frame) -> None:
    _normalize(frame, _nz_local_ns)


def _nz_local_ns(date) -> int:
    if type(date) is not str:
        raise NormalizeError("date: not a string")
    try:
        moment = datetime.fromisoformat(date)
    except ValueError:
        raise NormalizeError(f"date: {date[:40]!r} is not a date-time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=NZ)
    return rfc3339_ns(moment.isoformat(), "date")


def _normalize(frame: Frame, event_ns) -> None:
    msg = frame.json()  # keeps data.price as its literal text
    if not isinstance(msg, dict):
        raise NormalizeError("frame is not a JSON object")
    kind = msg.get("type")
    if kind in CONTROL:
        frame.ignore(kind)
        return
    if kind != "price":
        raise NormalizeError(f"unknown message type {str(kind)[:40]!r}")
    data = msg.get("data")
    if not isinstance(data, dict):
        raise NormalizeError("price without a data object")
    frame.record("trade", data["symbol"], channel="price", event_time=event_ns(data["date"]),
                 price=dec(data["price"], "price"), size=dec(data["volume"], "volume"))
