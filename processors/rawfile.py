"""Files of raw frames: what ``replay`` reads, ``capture`` writes and ``tail raw.<provider>`` prints.

Two line formats, told apart by the first non-empty line:

* **capture**: one websocket text frame per line, exactly as received (only the line
  break is not part of the frame). Connection scope is the whole file: every frame gets
  connection ``replay``, session ``replay``, ``tp-seq`` = its line number, receive time 0.
* **raw-topic export** (``tickpipe tail raw.<provider>``): one JSON object per Kafka record
  with the envelope intact, so markers carry the real sessions::

    {"tp_raw": 1, "topic": "raw.coinbase", "partition": 0, "offset": 17, "key": "coinbase-0",
     "headers": [["tp-provider", "coinbase"], ["tp-conn", "coinbase-0"], ...],
     "value": "{\\"channel\\":\\"ticker\\",...}"}

  ``value`` holds UTF-8 payloads; binary ones (Alpaca msgpack) are ``"value_base64"``.
"""

from __future__ import annotations

import base64
from typing import IO, Iterator

import orjson

from tickpipe.envelope import CT_JSON, CT_MSGPACK, CT_SOCKETIO, RawRecord

EXPORT_MARK = b'"tp_raw"'
REPLAY_CONN = REPLAY_SESSION = "replay"
CONTENT_TYPES = {"marketprophit": CT_SOCKETIO}  # capture lines of every other provider are JSON text


class RawFileError(ValueError):
    """A line of a raw-topic export is not what the format says (names the line)."""


def export_line(key: bytes | None, value: bytes | None, headers, topic: str | None = None,
                partition: int | None = None, offset: int | None = None) -> bytes:
    """One export line (with its newline) for a consumed raw record."""
    doc: dict = {"tp_raw": 1, "topic": topic, "partition": partition, "offset": offset,
                 "key": key.decode("utf-8", "replace") if key is not None else None,
                 "headers": [[k, (v or b"").decode("utf-8", "replace")] for k, v in (headers or ())]}
    payload = value or b""
    try:
        doc["value"] = payload.decode("utf-8")
    except UnicodeDecodeError:
        doc["value_base64"] = base64.b64encode(payload).decode()
    return orjson.dumps(doc) + b"\n"


def _from_export(line: bytes, number: int) -> tuple[bytes | None, bytes, list[tuple[str, bytes]]]:
    try:
        doc = orjson.loads(line)
        key = doc["key"].encode() if doc.get("key") is not None else None
        headers = [(str(k), str(v).encode()) for k, v in doc["headers"]]
        value = base64.b64decode(doc["value_base64"]) if "value_base64" in doc else doc["value"].encode()
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise RawFileError(f"line {number}: not a raw-topic export record ({type(exc).__name__}: {exc})") from None
    return key, value, headers


def read_raw_file(fh: IO[bytes], provider: str) -> Iterator[tuple[bytes | None, bytes, list[tuple[str, bytes]]]]:
    """(key, value, headers) of every record in the file, shaped like consumed Kafka records."""
    export: bool | None = None
    content_type = CONTENT_TYPES.get(provider, CT_JSON)
    for number, line in enumerate(fh, start=1):
        if line.endswith(b"\n"):
            line = line[:-1]
            if line.endswith(b"\r"):
                line = line[:-1]
        if not line.strip():
            continue
        if export is None:
            export = line.lstrip().startswith(b"{") and EXPORT_MARK in line[:40]
        if export:
            yield _from_export(line, number)
        else:
            raw = RawRecord(provider=provider, conn=REPLAY_CONN, session=REPLAY_SESSION, seq=number, recv_ns=0,
                            payload=line, content_type=content_type)
            yield raw.key, raw.payload, raw.headers()


class CaptureWriter:
    """A producer sink writing a raw file (``tickpipe capture``): capture lines by default,
    export lines with ``export=True`` (markers and binary frames need them)."""

    def __init__(self, fh: IO[bytes], export: bool = False) -> None:
        self.fh, self.export = fh, export
        self.frames = 0
        self.unwritable = 0  # capture mode: binary frames, or text frames holding a line break

    def put(self, record: RawRecord) -> None:
        if self.export:
            self.fh.write(export_line(record.key, record.payload, record.headers()))
        elif record.kind == "frame":
            if record.content_type == CT_MSGPACK or b"\n" in record.payload or b"\r" in record.payload:
                self.unwritable += 1
                return
            self.fh.write(record.payload + b"\n")
        else:
            return
        if record.kind == "frame":
            self.frames += 1

    async def wait_for_room(self) -> None:
        return None
