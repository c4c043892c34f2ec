"""Avro encoding of the clean topics, and a reader for both wire forms (public API).

Two encodings, chosen by configuration (``TICKPIPE_AVRO_REGISTRY_URL``):

* **single-object encoding** (no registry; the Avro specification's form): ``C3 01``, the
  8-byte little-endian CRC-64-AVRO fingerprint of the writer schema's Parsing Canonical
  Form, then the Avro binary body. Readers find the schema among those shipped in
  ``schemas/`` by fingerprint;
* **Confluent wire format** (registry configured): ``00``, the 4-byte big-endian schema
  id the registry gave, then the body.

Reading::

    from tickpipe.avro import AvroReader
    reader = AvroReader()                        # the shipped schemas
    record = reader.decode(message.value)        # a Record: dict of fields + .kind/.name
    record = await reader.decode_async(value)    # also fetches unknown registry ids

Timestamps decode as epoch nanoseconds (``int``); prices and sizes as decimal text.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from tickpipe.avro_fast import Unsupported, compile_writer, fastavro_writer
from tickpipe.processors.records import ALL_KINDS, Record, kind_of

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"


class AvroDecodeError(ValueError):
    """The bytes are not a record of a known schema in either wire form."""


class UnknownSchema(AvroDecodeError):
    """A Confluent schema id the reader has not seen (``decode_async`` fetches it)."""

    def __init__(self, schema_id: int) -> None:
        super().__init__(f"unknown schema id {schema_id}")
        self.schema_id = schema_id


@dataclass(frozen=True)
class Schema:
    """One schema: its JSON text, parsed form and single-object header."""

    name: str           # full name, e.g. tickpipe.Trade
    text: str           # the .avsc JSON as shipped
    parsed: Any         # fastavro parsed schema
    fingerprint: bytes  # CRC-64-AVRO of the canonical form, little endian

    @classmethod
    def from_text(cls, text: str) -> "Schema":
        doc = json.loads(text)
        canonical = to_parsing_canonical_form(doc)
        parsed = fastavro.parse_schema(doc, named_schemas={})
        return cls(parsed["name"], text, parsed, bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")))

    @property
    def kind(self) -> str:
        return kind_of(self.name)

    @property
    def single_object_header(self) -> bytes:
        return SINGLE_OBJECT_MAGIC + self.fingerprint


class SchemaSet:
    """The shipped schemas by kind, by full name and by fingerprint."""

    def __init__(self, schemas: list[Schema], retired: list[Schema] = ()) -> None:
        self.by_kind = {s.kind: s for s in schemas}
        self.by_name = {s.name: s for s in schemas}
        self.by_fingerprint = {s.fingerprint: s for s in [*retired, *schemas]}

    @classmethod
    def load(cls, directory: str | Path | None = None) -> "SchemaSet":
        """Every ``<kind>.avsc`` (``schemas/`` as installed, or ``directory``), plus retired
        versions ``<kind>@<anything>.avsc`` that old single-object data may still carry:
        those are only writer schemas, read as the current version of the same name."""
        root = Path(directory) if directory else resources.files("tickpipe.schemas")
        current = [Schema.from_text((root / f"{kind}.avsc").read_text()) for kind in ALL_KINDS]
        retired = [Schema.from_text(p.read_text()) for p in sorted(root.iterdir(), key=lambda p: p.name)
                   if p.name.endswith(".avsc") and "@" in p.name]
        return cls(current, retired)

    def __getitem__(self, kind: str) -> Schema:
        return self.by_kind[kind]


@functools.lru_cache(maxsize=1)
def shipped_schemas() -> SchemaSet:
    return SchemaSet.load()


class AvroEncoder:
    """Encode records of one kind per topic; single-object unless registry ids are given."""

    def __init__(self, schemas: SchemaSet | None = None, registry_ids: dict[str, int] | None = None) -> None:
        self.schemas = schemas or shipped_schemas()
        self.registry_ids = dict(registry_ids or {})
        self._headers: dict[str, tuple[bytes, Any]] = {}
        self._writers: dict[str, Callable[[dict], bytes]] = {}
        for kind, schema in self.schemas.by_kind.items():
            if registry_ids is not None:
                header = CONFLUENT_MAGIC + struct.pack(">I", self.registry_ids[kind])
            else:
                header = schema.single_object_header
            self._headers[kind] = (header, schema.parsed)
            self._writers[kind] = _header_writer(header, schema.parsed)

    @property
    def wire_format(self) -> str:
        return "confluent" if self.registry_ids else "single-object"

    def encode(self, kind: str, record: dict) -> bytes:
        """The record's bytes; raises ``ValueError``/``TypeError`` when it does not fit its schema."""
        return self._writers[kind](record)

    def writer(self, kind: str) -> Callable[[dict], bytes]:
        """``encode`` for one kind, looked up once (``writer(kind)(record) == encode(kind, record)``)."""
        return self._writers[kind]


def _header_writer(header: bytes, parsed: Any) -> Callable[[dict], bytes]:
    """``header`` + the Avro body: compiled (:mod:`tickpipe.avro_fast`) where the schema allows."""
    try:
        return compile_writer(parsed, header)
    except Unsupported:
        return fastavro_writer(parsed, header)


class AvroReader:
    """Decode either wire form into :class:`Record`; data written with an older schema is
    read as the shipped (current) schema of the same name."""

    def __init__(self, schemas: SchemaSet | None = None, registry=None) -> None:
        self.schemas = schemas or shipped_schemas()
        self.registry = registry  # a tickpipe.schema_registry.SchemaRegistry, or None
        self._by_id: dict[int, Schema] = {}

    def learn(self, schema_id: int, schema: Schema) -> None:
        self._by_id[schema_id] = schema

    def decode(self, value: bytes) -> Record:
        if value[:2] == SINGLE_OBJECT_MAGIC and len(value) >= 10:
            writer = self.schemas.by_fingerprint.get(bytes(value[2:10]))
            if writer is None:
                raise AvroDecodeError(f"no shipped schema has fingerprint {bytes(value[2:10]).hex()}")
            return self._read(writer, value, 10)
        if value[:1] == CONFLUENT_MAGIC and len(value) >= 5:
            schema_id = struct.unpack(">I", value[1:5])[0]
            writer = self._by_id.get(schema_id)
            if writer is None:
                raise UnknownSchema(schema_id)
            return self._read(writer, value, 5)
        raise AvroDecodeError("neither Avro single-object nor Confluent wire format")

    async def decode_async(self, value: bytes) -> Record:
        try:
            return self.decode(value)
        except UnknownSchema as exc:
            if self.registry is None:
                raise
            self.learn(exc.schema_id, Schema.from_text(await self.registry.schema_by_id(exc.schema_id)))
            return self.decode(value)

    def _read(self, writer: Schema, value: bytes, offset: int) -> Record:
        reader = self.schemas.by_name.get(writer.name, writer)
        try:
            fields = fastavro.schemaless_reader(io.BytesIO(value[offset:]), writer.parsed,
                                                None if reader is writer else reader.parsed)
        except Exception as exc:  # truncated or corrupt body
            raise AvroDecodeError(f"{writer.name}: body does not decode ({type(exc).__name__})") from None
        return Record(writer.kind, fields)


def json_default(value: Any) -> Any:
    """orjson ``default`` for decoded records: bytes as UTF-8 text when they are valid
    UTF-8, else ``{"base64": "..."}``."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode()}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def record_json_line(record: Record) -> bytes:
    """One JSON line: the record's Avro fields plus ``"type"`` (its Avro record name)."""
    import orjson

    return orjson.dumps(record.as_json(), default=json_default) + b"\n"
