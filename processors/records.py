"""Normalized records: what a normalizer produces and the Avro schemas in ``schemas/`` describe.

A record is a :class:`Record`: a plain ``dict`` of Avro field values that also knows its
record *kind*. Kinds, Avro record names, schema files and clean topics line up one to one:

| kind | Avro record | schema file | topic |
| --- | --- | --- | --- |
| ``trade`` | ``tickpipe.Trade`` | ``trade.avsc`` | ``ticks.trade`` |
| ``quote`` | ``tickpipe.Quote`` | ``quote.avsc`` | ``ticks.quote`` |
| ``bar`` | ``tickpipe.Bar`` | ``bar.avsc`` | ``ticks.bar`` |
| ``book`` | ``tickpipe.BookUpdate`` | ``book.avsc`` | ``ticks.book`` |
| ``level1`` | ``tickpipe.LevelOne`` | ``level1.avsc`` | ``ticks.level1`` |
| ``status`` | ``tickpipe.TradingStatus`` | ``status.avsc`` | ``ticks.status`` |
| ``most_active`` | ``tickpipe.MostActive`` | ``most_active.avsc`` | ``ticks.most_active`` |
| ``sentiment`` | ``tickpipe.Sentiment`` | ``sentiment.avsc`` | ``ticks.sentiment`` |
| ``gap_alert`` | ``tickpipe.GapAlert`` | ``gap_alert.avsc`` | ``alerts.gaps`` |
| ``dead_letter`` | ``tickpipe.DeadLetter`` | ``dead_letter.avsc`` | ``dlq.<provider>`` |

Every tick record (the first eight kinds) starts with the same fields, :data:`TICK_FIELDS`:
provider, ``symbol`` (normalized) and ``provider_symbol``, ``event_time`` (provider's,
epoch ns) and ``recv_time`` (ours), the origin ``conn``/``session``/``frame_seq``/
``frame_index``, and ``channel``, ``sequence``, ``sequence_scope``, ``trade_id``.
Prices and sizes are ``string`` fields holding the provider's exact decimal text.
Optional fields may be left out of the dict: the encoder fills the schema default.
"""

from __future__ import annotations

from typing import Any

TICK_KINDS = ("trade", "quote", "bar", "book", "level1", "status", "most_active", "sentiment")
ALERT_KIND = "gap_alert"
DEAD_LETTER_KIND = "dead_letter"
ALL_KINDS = TICK_KINDS + (ALERT_KIND, DEAD_LETTER_KIND)
CONTROL_KIND = "control"  # a resync request to control.<provider>: JSON, not Avro (see producers/control.py)

NAMESPACE = "tickpipe"
RECORD_NAMES = {
    "trade": "Trade", "quote": "Quote", "bar": "Bar", "book": "BookUpdate", "level1": "LevelOne",
    "status": "TradingStatus", "most_active": "MostActive", "sentiment": "Sentiment",
    "gap_alert": "GapAlert", "dead_letter": "DeadLetter",
}
KIND_OF_NAME = {name: kind for kind, name in RECORD_NAMES.items()}

# The leading fields of every tick schema, in schema order (a test holds the .avsc files to it).
TICK_FIELDS = ("provider", "symbol", "provider_symbol", "event_time", "recv_time", "conn", "session",
               "frame_seq", "frame_index", "channel", "sequence", "sequence_scope", "trade_id")

# Values of ``sequence_scope``: what one counter of the provider counts.
SCOPE_CONNECTION = "connection"  # one counter per websocket connection (Coinbase sequence_num)
SCOPE_INSTRUMENT = "instrument"  # one counter per product (Coinbase Exchange sequence)
SCOPE_KEY = "key"                # one counter per subscription key (TD/Schwab seq)


class Record(dict):
    """A normalized record: Avro field values (a ``dict``) plus its ``kind``."""

    __slots__ = ("kind", "encoded")

    def __init__(self, kind: str, fields: dict[str, Any] | None = None, /, **more: Any) -> None:
        dict.__init__(self, fields or (), **more)
        self.kind = kind
        self.encoded: bytes | None = None  # its Avro bytes, once the pipeline has validated it

    @property
    def name(self) -> str:
        """The Avro record name (``Trade``, ``BookUpdate``, ...)."""
        return RECORD_NAMES[self.kind]

    def as_json(self) -> dict[str, Any]:
        """The replay/tail form: the fields plus ``"type"`` (the Avro record name)."""
        return {"type": RECORD_NAMES[self.kind], **self}

    def __repr__(self) -> str:
        return f"Record({self.kind!r}, {dict.__repr__(self)})"

    def __reduce__(self):
        return (Record, (self.kind, dict(self)))


def new_record(kind: str, fields: dict[str, Any]) -> Record:
    """``Record(kind, fields)`` without the Python-level ``__init__`` (the normalizers' hot path)."""
    record = _new_dict(Record)
    _update(record, fields)
    record.kind = kind
    record.encoded = None
    return record


_new_dict, _update = dict.__new__, dict.update


def kind_of(name: str) -> str:
    """Record kind of an Avro record name, short (``Trade``) or full (``tickpipe.Trade``)."""
    short = name.rsplit(".", 1)[-1]
    try:
        return KIND_OF_NAME[short]
    except KeyError:
        raise ValueError(f"unknown record name {name!r}") from None
