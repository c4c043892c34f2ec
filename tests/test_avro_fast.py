"""The compiled Avro writers write exactly what fastavro writes, and fail exactly as it fails."""

from __future__ import annotations

import io
import random

import fastavro
import pytest

from tickpipe.avro import AvroEncoder, shipped_schemas
from tickpipe.avro_fast import Unsupported, compile_writer, zigzag
from tickpipe.processors.records import ALL_KINDS, Record

ODD = [None, 1.5, True, False, 0, -1, 2**63, -(2**63) - 1, 2**31, "", "x", b"y", (), [], {}, ("string", "a")]


def value_for(schema, rng: random.Random, named: dict, depth: int = 0):
    """A random value for ``schema``: mostly fitting, now and then not."""
    if depth and rng.random() < 0.03:
        return rng.choice(ODD)
    if isinstance(schema, list):
        return value_for(rng.choice(schema), rng, named, depth)
    if isinstance(schema, str) and schema in named:
        schema = named[schema]
    if isinstance(schema, dict):
        t = schema["type"]
        if t == "record":
            named[schema["name"]] = schema
            return {f["name"]: value_for(f["type"], rng, named, depth + 1) for f in schema["fields"]
                    if "default" not in f or rng.random() < 0.7}
        if t == "array":
            return [value_for(schema["items"], rng, named, depth + 1) for _ in range(rng.choice((0, 1, 3, 70)) if depth < 3 else 0)]
        if t == "map":
            return {rng.choice(("k", "é", "x" * 80)) + str(i): value_for(schema["values"], rng, named, depth + 1)
                    for i in range(rng.choice((0, 1, 2, 65)))}
        if t == "enum":
            return rng.choice(schema["symbols"] + ["NOPE"])
        return value_for(t, rng, named, depth)
    return {
        "string": lambda: rng.choice(("", "a", "NZB.NZ", "é€😀", "x" * 63, "y" * 64, "z" * 300, "\ud800")),
        "bytes": lambda: rng.choice((b"", b"\x00\xff", b"b" * 200)),
        "long": lambda: rng.choice((0, -1, 1, 63, 64, -64, -65, 2**62, 2**63 - 1, -(2**63), 1_700_000_000_123_456_789,
                                    rng.randrange(-(2**63), 2**63))),
        "int": lambda: rng.choice((0, -1, 2**31 - 1, -(2**31), rng.randrange(-(2**31), 2**31))),
        "boolean": lambda: rng.choice((True, False)),
        "null": lambda: None,
    }[schema]()


def outcome(fn, record):
    try:
        return fn(record)
    except Exception as exc:
        return (type(exc), str(exc))


def fastavro_body(parsed, record):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return buf.getvalue()


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_compiled_writer_matches_fastavro(kind):
    parsed = shipped_schemas()[kind].parsed
    write = compile_writer(parsed)
    rng = random.Random(kind)
    for _ in range(1500):
        record = Record(kind, value_for(parsed, rng, dict(parsed.get("__named_schemas", {}))))
        assert outcome(write, record) == outcome(lambda r: fastavro_body(parsed, r), record), record


def test_encoder_keeps_the_wire_header():
    encoder = AvroEncoder()
    record = Record("gap_alert", kind="GAP", provider="p", scope="producer", counter="tp_seq", detected_time=5,
                    conn="c", session="s")
    schema = shipped_schemas()["gap_alert"]
    assert encoder.encode("gap_alert", record) == schema.single_object_header + fastavro_body(schema.parsed, record)
    assert encoder.writer("gap_alert")(record) == encoder.encode("gap_alert", record)


def test_zigzag():
    rng = random.Random(7)
    edges = [s * (2**b + d) for b in range(0, 64, 7) for d in (-1, 0, 1) for s in (1, -1)]
    for n in [0, 2**63 - 1, -(2**63), 1_700_000_000_000_000_000, *edges,
              *(rng.randrange(-(2**63), 2**63) >> rng.randrange(64) for _ in range(2000))]:
        if not -(2**63) <= n < 2**63:
            continue
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, "long", n)
        assert bytes(zigzag(n)) == buf.getvalue()


def test_types_it_does_not_compile_are_left_to_fastavro():
    with pytest.raises(Unsupported):
        compile_writer(fastavro.parse_schema({"type": "record", "name": "F", "fields": [{"name": "x", "type": "double"}]}))
