"""The normalizer framework: how one raw frame becomes normalized records.

How to write a provider normalizer
==================================

A normalizer is a plain function ``normalize(frame: Frame) -> None`` in
``tickpipe.processors.normalizers.<module>``, registered by provider id in
``tickpipe/processors/normalizers/__init__.py`` (``NORMALIZERS``). It is called once per
raw frame (never for session markers) and must:

1. decode the payload: ``frame.json()`` for JSON (every JSON number comes back as its
   literal text, e.g. ``"283.40"``, integers as ``int``: exact decimals for free),
   ``frame.json_fast()`` (orjson, floats lossy) only for feeds whose prices are JSON
   strings, ``frame.msgpack()`` for binary frames; ``frame.content_type`` says which;
2. for every market-data item, call ``frame.record(kind, provider_symbol, **fields)``:
   ``kind`` is one of ``trade quote bar book level1 status most_active sentiment``
   (``tickpipe.processors.records``), ``fields`` are the Avro fields of that kind's schema
   in ``schemas/<kind>.avsc`` beyond the common ones. The framework fills ``provider``,
   ``recv_time``, ``conn``, ``session``, ``frame_seq``, ``frame_index`` (records are
   numbered in the order you create them) and ``symbol`` (``normalize_symbol``, override
   with ``symbol=``). You set ``event_time`` (epoch ns, via ``convert.rfc3339_ns``/
   ``ms_ns``/``s_ns``), ``channel`` (the provider's channel/service/message type),
   ``sequence`` + ``sequence_scope`` and ``trade_id`` (text) when the provider has them.
   Leave out optional fields you don't have (the schema default is used);
3. prices and sizes: always ``convert.dec(value, "field name")`` -> the provider's exact
   decimal text (``dec_or_none`` for optional ones). Never ``float()`` them;
4. control traffic (acks, auth replies, heartbeats without data, errors the producer
   handles): ``frame.ignore("short reason")`` — counted in a metric, no record. A frame
   that consumes a sequence number but yields no record (Coinbase heartbeats, acks) also
   calls ``frame.mark_sequence(value, scope)`` so the integrity stage sees the number;
5. bad input: ``raise NormalizeError("reason")`` (``kind=PARSE`` for undecodable bytes).
   A ``KeyError``/``TypeError``/``ValueError``/``IndexError``/``AttributeError`` escaping
   your function is also treated as a malformed frame; any other exception as a bug.
   Either way the whole frame goes to ``dlq.<provider>`` with its original bytes, headers
   and the reason, records already created for it are discarded, and processing goes on.
   Unknown message types: raise, unless the protocol says new types must be ignored
   (Coinbase), then ``frame.ignore("unknown type")``;
6. state across frames (TD/Schwab sparse level-one deltas): ``frame.recall(key)`` returns
   what ``frame.remember(key, value)`` stored for the same connection and session (values
   must be JSON-able: dicts of str -> str/int/float/bool/None). A new session starts
   empty; the Faust app keeps it in a changelog-backed table, so it survives restarts
   and rebalances (:mod:`~tickpipe.processors.normalizers.state`);
7. stay pure otherwise: no I/O, no clocks (use ``frame.recv_ns`` if you need "now"), no
   globals that change. Trades listed newest first inside one frame: emit them oldest
   first (sort by event time / trade id) so ``frame_index`` follows event order.

The framework then validates each record by encoding it with its Avro schema (a record
that does not fit dead-letters the frame, kind ``validation``), runs the sequence
integrity stage, and produces to ``ticks.<kind>`` keyed by ``symbol``.

Worked example (a Financefeast-style price feed)
------------------------------------------------
Frame: ``{"type":"price","data":{"date":"2021-09-29T09:35:53","price":3.0424,"volume":181123,"symbol":"NZB.NZ"}}``::

    from tickpipe.processors.normalizers.base import Frame
    from tickpipe.processors.normalizers.convert import dec, rfc3339_ns
    from tickpipe.processors.normalizers.errors import NormalizeError

    def normalize(frame: Frame) -> None:
        msg = frame.json()                      # data.price arrives as the text "3.0424"
        if not isinstance(msg, dict):
            raise NormalizeError("frame is not a JSON object")
        kind = msg.get("type")
        if kind in ("authenticated", "pong"):
            frame.ignore(kind)
            return
        if kind != "price":
            raise NormalizeError(f"unknown message type {kind!r}")
        data = msg["data"]                      # a missing key dead-letters the frame
        frame.record("trade", data["symbol"], channel="price",
                     event_time=rfc3339_ns(data["date"], "date"),
                     price=dec(data["price"], "price"), size=dec(data["volume"], "volume"))

which yields one ``Trade``: ``{"provider": "financefeast", "symbol": "NZB.NZ",
"provider_symbol": "NZB.NZ", "event_time": 1632908153000000000, "recv_time": <tp-recv-ns>,
"conn": ..., "session": ..., "frame_seq": ..., "frame_index": 0, "channel": "price",
"price": "3.0424", "size": "181123", ...defaults}``.

Golden tests
------------
``tickpipe.processors.pipeline.Pipeline`` runs the whole path without Kafka::

    pipe = Pipeline.for_provider("financefeast")
    result = pipe.handle_raw(RawRecord(provider="financefeast", conn="c1", session="s1",
                                       seq=1, recv_ns=1, payload=frame_bytes))
    assert [r.as_json() for r in result.records] == expected     # schema-validated
    assert result.dead_letter is None                            # or its ["reason"]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from tickpipe.envelope import RawRecord
from tickpipe.processors.normalizers.convert import normalize_symbol
from tickpipe.processors.normalizers.errors import PARSE, NormalizeError
from tickpipe.processors.normalizers.state import NormalizerState
from tickpipe.processors.records import SCOPE_CONNECTION, Record, new_record


@dataclass(frozen=True, slots=True)
class SequenceMark:
    """A provider counter value seen in a frame, for the integrity stage.

    ``scope``: connection, instrument, key, or a counter name such as ``trade_id``;
    ``key``: the counter's key within the scope (the connection id for ``connection``).
    """

    scope: str
    key: str
    value: int
    channel: str | None = None


_EXACT_JSON = json.JSONDecoder(parse_float=str)   # a float literal stays its text (str() of a str is itself)
_scan_once = _EXACT_JSON.scan_once


class Frame:
    """One raw frame as a normalizer sees it, and where its records are collected."""

    __slots__ = ("raw", "records", "marks", "ignored", "_state")

    def __init__(self, raw: RawRecord, state: NormalizerState | None = None) -> None:
        self.raw = raw
        self.records: list[Record] = []
        self.marks: list[SequenceMark] = []
        self.ignored: list[str] = []
        self._state = state

    # -- the frame -------------------------------------------------------
    @property
    def payload(self) -> bytes:
        return self.raw.payload

    @property
    def content_type(self) -> str:
        return self.raw.content_type

    @property
    def provider(self) -> str:
        return self.raw.provider

    @property
    def recv_ns(self) -> int:
        return self.raw.recv_ns

    def json(self) -> Any:
        """The payload as JSON, every float literal kept as its exact text (ints stay ints)."""
        try:
            text = self.raw.payload.decode("utf-8")
            try:  # the usual case: one value, nothing around it (decode() would skip whitespace first)
                doc, end = _scan_once(text, 0)
                if end == len(text):
                    return doc
            except (StopIteration, ValueError):
                pass  # decode() below raises its own error
            return _EXACT_JSON.decode(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise NormalizeError(f"payload is not JSON: {exc}", PARSE) from None

    def json_fast(self) -> Any:
        """The payload as JSON via orjson: floats become ``float`` (lossy). Only for feeds
        whose prices and sizes are JSON strings (Coinbase, Market Prophit)."""
        import orjson

        try:
            return orjson.loads(self.raw.payload)
        except orjson.JSONDecodeError as exc:
            raise NormalizeError(f"payload is not JSON: {exc}", PARSE) from None

    def msgpack(self) -> Any:
        """The payload as MessagePack; timestamps (ext -1) come back as ``msgpack.Timestamp``
        (``.to_unix_nano()``); floats are binary doubles (``dec`` writes their shortest text)."""
        import msgpack

        try:
            return msgpack.unpackb(self.raw.payload, raw=False, strict_map_key=False)
        except (ValueError, msgpack.UnpackException, TypeError) as exc:
            raise NormalizeError(f"payload is not MessagePack: {type(exc).__name__}", PARSE) from None

    # -- output ----------------------------------------------------------
    def record(self, kind: str, provider_symbol: str, *, symbol: str | None = None,
               event_time: int | None = None, **fields: Any) -> Record:
        """Create, append and return one normalized record (see the module docstring)."""
        raw = self.raw
        if type(provider_symbol) is not str or not provider_symbol:
            raise NormalizeError(f"{kind} without an instrument")
        rec = new_record(kind, fields)
        rec.update(provider=raw.provider,
                   symbol=symbol if symbol is not None else normalize_symbol(provider_symbol),
                   provider_symbol=provider_symbol, event_time=event_time, recv_time=raw.recv_ns, conn=raw.conn,
                   session=raw.session, frame_seq=raw.seq, frame_index=len(self.records))
        self.records.append(rec)
        return rec

    def ignore(self, reason: str) -> None:
        """Note a message that carries no market data (counted per reason)."""
        self.ignored.append(reason)

    def mark_sequence(self, value: int, scope: str = SCOPE_CONNECTION, key: str | None = None,
                      channel: str | None = None) -> None:
        """Report a provider counter value that no record carries (heartbeats, acks)."""
        self.marks.append(SequenceMark(scope, key if key is not None else self.raw.conn, int(value), channel))

    # -- state -----------------------------------------------------------
    def recall(self, key: str) -> Any:
        """What :meth:`remember` stored under ``key`` on this connection and session, or None."""
        if self._state is None:
            return None
        return self._state.get(self.raw.conn, self.raw.session, key)

    def remember(self, key: str, value: Any) -> None:
        if self._state is None:
            raise RuntimeError("this frame was built without a NormalizerState")
        self._state.put(self.raw.conn, self.raw.session, key, value)


Normalizer = Callable[[Frame], None]
