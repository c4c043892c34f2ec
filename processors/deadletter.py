"""Dead-letter records: a raw record that could not be normalized, kept byte for byte."""

from __future__ import annotations

import time
from dataclasses import dataclass

from tickpipe.config import redact
from tickpipe.envelope import H_CONN, H_PROVIDER, H_RECV_NS, H_SEQ, H_SESSION
from tickpipe.processors.records import DEAD_LETTER_KIND, Record

REASON_HEADER = "tp-dlq-reason"
KIND_HEADER = "tp-dlq-kind"
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class Source:
    """Where a raw record was read from (all None in a replay of a file)."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def _header_text(headers: dict[str, bytes], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        return None
    return value.decode("utf-8", "replace")


def _header_int(headers: dict[str, bytes], name: str) -> int | None:
    text = _header_text(headers, name)
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is None or -(2**63) <= value < 2**63 else None   # DeadLetter fields are Avro longs


def dead_letter(provider: str, error_kind: str, reason: str, key: bytes | None, value: bytes | None,
                headers, source: Source = Source(), now_ns: int | None = None) -> Record:
    """The ``DeadLetter`` record for one raw record (headers as received, any shape)."""
    pairs = [(str(k), None if v is None else bytes(v)) for k, v in (headers or ())]
    by_name = {k: v for k, v in pairs}
    reason = redact(reason)
    if len(reason) > MAX_REASON:
        reason = reason[:MAX_REASON] + "..."
    return Record(DEAD_LETTER_KIND, {
        "provider": _header_text(by_name, H_PROVIDER) or provider,
        "error_kind": error_kind,
        "reason": reason,
        "payload": bytes(value or b""),
        "headers": [{"key": k, "value": v} for k, v in pairs],
        "key": None if key is None else bytes(key),
        "conn": _header_text(by_name, H_CONN),
        "session": _header_text(by_name, H_SESSION),
        "frame_seq": _header_int(by_name, H_SEQ),
        "recv_time": _header_int(by_name, H_RECV_NS),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "dead_time": now_ns if now_ns is not None else time.time_ns(),
    })


def kafka_headers(record: Record) -> list[tuple[str, bytes]]:
    """Headers of the dead-letter Kafka record: the original ones plus the reason and kind."""
    original = [(h["key"], h["value"] if h["value"] is not None else b"") for h in record["headers"]]
    return original + [(REASON_HEADER, record["reason"].encode()), (KIND_HEADER, record["error_kind"].encode())]
