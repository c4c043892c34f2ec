"""Market Prophit normalizer: recorded socket.io events ``[event, payload]`` -> sentiment records.

The producer records each event as the JSON text ``[name, payload]``. Generation A ``res``
carries the REST body array (or, unconfirmed, a ``{path, method, params, timestamp,
results}`` wrapper); Generation B ``data`` carries the wrapper::

    ["res",[{"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"0.3671460543121055"}]]
    ["data",{"path":"crowd-sentiment","params":{},"timestamp":"2014-09-15T05:06:01.321Z","results":[
      {"ts":"2014-09-15T09:04:00.000Z","ticker":"CSCO","crowd_sentiment":"-0.0511838856522857"}]}]

Each result becomes one ``sentiment`` record: ``metric`` = the stream (path without
``/real-time/``; for a bare array, told by its value field), ``value`` = its primary value,
``values`` = every numeric field as exact decimal text, ``user_id``, ``params``. No sequence
numbers exist, but a stream of a fixed cadence (:data:`CADENCE_S`) has exactly one ``ts``
per period, so ``sequence`` = ``ts`` / cadence with scope ``instrument`` (per channel and
ticker) lets the integrity stage find missing, repeated and swapped periods. User-sentiment
streams carry many users per period: no sequence. ``err`` events and empty ``results``
are ignored; anything else is a dead letter. ``ts`` without a zone is read as UTC.
"""

from __future__ import annotations

import json
from typing import Any

from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, rfc3339_ns
from tickpipe.processors.normalizers.errors import NormalizeError
from tickpipe.processors.records import SCOPE_INSTRUMENT

# metric -> seconds between consecutive ts of one ticker (Gen B docs; Gen A assumed the same)
CADENCE_S = {
    "crowd-sentiment": 60, "crowd-sentiment-moving-average": 60, "crowd-sentiment-z-score": 60,
    "crowd-sentiment-z-score-moving-average": 60, "crowd-sentiment-chart-data": 60,
    "market-prophit-sentiment": 1, "market-prophit-sentiment-moving-average": 1,
    "market-prophit-sentiment-z-score": 1, "market-prophit-sentiment-z-score-moving-average": 1,
    "market-prophit-sentiment-chart-data": 1, "tweet-volume": 60, "tweet-buzz": 60,
}
# Gen A metric -> its value field (documented: average_sentiment, signal_value, volume,
# z_score, sentiment; the others are our unconfirmed names, which the emulator uses)
GEN_A_FIELD = {
    "crowd-sentiment": "average_sentiment", "crowd-sentiment-moving-average": "average_sentiment_moving_average",
    "crowd-sentiment-z-score": "z_score", "crowd-sentiment-z-score-moving-average": "z_score_moving_average",
    "market-prophit-sentiment": "signal_value", "market-prophit-sentiment-moving-average": "signal_value_moving_average",
    "market-prophit-sentiment-z-score": "signal_value_z_score",
    "market-prophit-sentiment-z-score-moving-average": "signal_value_z_score_moving_average",
    "tweet-volume": "volume", "tweet-buzz": "buzz", "user-sentiment": "sentiment", "user-sentiment-last-minute": "sentiment",
}
GEN_B_FIELD = {"crowd-sentiment": "crowd_sentiment", "market-prophit-sentiment": "mp_sentiment", "user-sentiment": "sentiment",
               "crowd-sentiment-chart-data": "crowd_sentiment", "market-prophit-sentiment-chart-data": "mp_sentiment"}
# value field -> metric, for a bare res array (which does not name its path)
FIELD_METRIC = {**{f: m for m, f in GEN_A_FIELD.items() if m != "user-sentiment-last-minute"},
                "crowd_sentiment": "crowd-sentiment", "mp_sentiment": "market-prophit-sentiment"}
NOT_NUMERIC = ("ts", "ticker", "user_id")


def normalize(frame: Frame) -> None:
    doc = frame.json()
    if not isinstance(doc, list) or len(doc) != 2 or not isinstance(doc[0], str):
        raise NormalizeError("frame is not a socket.io event [name, payload]")
    event, payload = doc
    if event == "err":
        frame.ignore("err event")
        return
    if event not in ("res", "data"):
        raise NormalizeError(f"unknown event {event[:40]!r}")
    path, params, results = _unwrap(event, payload)
    if not results:
        frame.ignore("empty results")
        return
    stream = path.rsplit("/", 1)[-1] if path else None
    items = sorted(((rfc3339_ns(_field(r, "ts"), "ts"), r) for r in results), key=lambda item: item[0])
    for event_ns, result in items:
        _record(frame, stream, params, event_ns, result)


def _unwrap(event: str, payload: Any) -> tuple[str | None, dict, list]:
    if isinstance(payload, list):
        return None, {}, payload
    if not isinstance(payload, dict):
        raise NormalizeError(f"{event} payload is neither an array nor an object")
    path, params, results = payload.get("path"), payload.get("params") or {}, payload.get("results")
    if not isinstance(results, list) or not isinstance(params, dict) or not isinstance(path, (str, type(None))):
        raise NormalizeError(f"{event} payload lacks a results array (or has bad path/params)")
    return path, params, results


def _field(result: Any, name: str) -> Any:
    if not isinstance(result, dict):
        raise NormalizeError("a result is not an object")
    return result[name]


def _record(frame: Frame, stream: str | None, params: dict, event_ns: int, result: dict) -> None:
    metric, primary = _identify(stream, result)
    values = {k: dec(v, k) for k, v in result.items() if k not in NOT_NUMERIC}
    fields: dict[str, Any] = {"metric": metric, "value": values.get(primary), "values": values,
                              "params": {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in params.items()}}
    if "user_id" in result:
        fields["user_id"] = str(result["user_id"])
    cadence = CADENCE_S.get(metric)
    if cadence:
        fields.update(sequence=event_ns // (cadence * 1_000_000_000), sequence_scope=SCOPE_INSTRUMENT)
    frame.record("sentiment", _field(result, "ticker"), channel=metric, event_time=event_ns, **fields)


def _identify(stream: str | None, result: dict) -> tuple[str, str | None]:
    """(metric, primary value field) from the path when known, else from the value field."""
    if stream:
        return stream, next((f for f in (GEN_A_FIELD.get(stream), GEN_B_FIELD.get(stream)) if f in result), None)
    known = [(FIELD_METRIC[k], k) for k in result if k in FIELD_METRIC]
    if len(known) != 1:
        raise NormalizeError("cannot tell which stream a result of a bare res array belongs to")
    return known[0]
