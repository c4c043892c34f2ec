"""The Avro codec: both wire formats for every shipped schema, precision, the reader's errors."""

from __future__ import annotations

import json
import struct
from decimal import Decimal

import pytest
from hypothesis import given, settings, strategies as st

from tickpipe.avro import (CONFLUENT_MAGIC, SINGLE_OBJECT_MAGIC, AvroDecodeError, AvroEncoder, AvroReader, SchemaSet,
                           UnknownSchema, shipped_schemas)
from tickpipe.processors.normalizers.convert import dec, rfc3339_ns
from tickpipe.processors.records import ALL_KINDS, RECORD_NAMES, TICK_FIELDS, TICK_KINDS
from tickpipe.schema_compat import sample_datums


def crc64_avro(data: bytes) -> int:
    """The Avro specification's reference CRC-64-AVRO, written out independently of fastavro."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def test_reference_crc_matches_the_specification_vector():
    assert crc64_avro(b'"null"') == 7195948357588979594


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_single_object_header_is_magic_and_little_endian_fingerprint(kind):
    from fastavro.schema import to_parsing_canonical_form

    schema = shipped_schemas()[kind]
    canonical = to_parsing_canonical_form(json.loads(schema.text)).encode()
    assert schema.single_object_header == SINGLE_OBJECT_MAGIC + struct.pack("<Q", crc64_avro(canonical))
    assert schema.name == f"tickpipe.{RECORD_NAMES[kind]}"


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_schema_round_trips_in_both_wire_formats(kind):
    schemas = shipped_schemas()
    ids = {k: 100 + i for i, k in enumerate(ALL_KINDS)}
    single, confluent = AvroEncoder(schemas), AvroEncoder(schemas, registry_ids=ids)
    reader = AvroReader(schemas)
    reader.learn(ids[kind], schemas[kind])
    for datum in sample_datums(json.loads(schemas[kind].text)):
        a, b = single.encode(kind, datum), confluent.encode(kind, datum)
        assert a[:10] == schemas[kind].single_object_header
        assert b[:5] == CONFLUENT_MAGIC + struct.pack(">I", ids[kind])
        assert a[10:] == b[5:]  # same Avro body
        for value in (a, b):
            decoded = reader.decode(value)
            assert decoded.kind == kind and dict(decoded) == datum


def test_tick_schemas_start_with_the_common_fields_and_never_use_type_as_a_field():
    for kind in ALL_KINDS:
        names = [f["name"] for f in json.loads(shipped_schemas()[kind].text)["fields"]]
        assert "type" not in names  # the JSON-lines form adds "type"
        if kind in TICK_KINDS:
            assert tuple(names[:len(TICK_FIELDS)]) == TICK_FIELDS


def test_price_and_size_fields_are_decimal_text():
    for kind in TICK_KINDS:
        for field in json.loads(shipped_schemas()[kind].text)["fields"]:
            if field["name"] in ("price", "size", "bid_price", "ask_price", "open", "close", "volume"):
                assert field["type"] in ("string", ["null", "string"]), (kind, field["name"])


decimal_text = st.builds(
    lambda sign, whole, frac, exp: f"{sign}{whole}{'.' + frac if frac is not None else ''}{exp}",
    st.sampled_from(["", "-"]), st.from_regex(r"[0-9]{1,20}", fullmatch=True),
    st.one_of(st.none(), st.from_regex(r"[0-9]{0,18}", fullmatch=True)),
    st.sampled_from(["", "e5", "E-7", "e+2"]))


@settings(max_examples=200, deadline=None)
@given(price=decimal_text, size=decimal_text, event_ns=st.integers(-(2**62), 2**62))
def test_precision_round_trip_keeps_decimal_text_and_nanoseconds(price, size, event_ns):
    encoder, reader = AvroEncoder(), AvroReader()
    record = {"provider": "p", "symbol": "S", "provider_symbol": "s", "recv_time": 1, "conn": "c", "session": "s",
              "frame_seq": 1, "frame_index": 0, "event_time": event_ns, "price": dec(price), "size": dec(size)}
    decoded = reader.decode(encoder.encode("trade", record))
    assert (decoded["price"], decoded["size"], decoded["event_time"]) == (price, size, event_ns)
    assert Decimal(decoded["price"]) == Decimal(price)


def test_json_float_text_survives_where_a_float_would_not():
    from tickpipe.envelope import RawRecord
    from tickpipe.processors.normalizers.base import Frame

    payload = b'{"p": 0.1000000000000000055511151231257827, "s": 283.40, "big": 12345678901234567890.5}'
    doc = Frame(RawRecord("p", "c", "s", 1, 1, payload)).json()
    assert [dec(doc[k]) for k in ("p", "s", "big")] == ["0.1000000000000000055511151231257827", "283.40",
                                                         "12345678901234567890.5"]


@settings(max_examples=200, deadline=None)
@given(seconds=st.integers(0, 4102444800), nanos=st.integers(0, 999_999_999), digits=st.integers(0, 9))
def test_rfc3339_keeps_every_fractional_digit(seconds, nanos, digits):
    import datetime as dt

    base = dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}"[:digits]
    text = base + (f".{frac}" if digits else "") + "Z"
    assert rfc3339_ns(text) == seconds * 1_000_000_000 + (int(frac.ljust(9, "0")) if digits else 0)


def test_reader_rejects_garbage_unknown_fingerprints_and_truncated_bodies():
    reader, encoder = AvroReader(), AvroEncoder()
    with pytest.raises(AvroDecodeError, match="neither"):
        reader.decode(b"plain text")
    with pytest.raises(AvroDecodeError, match="fingerprint"):
        reader.decode(SINGLE_OBJECT_MAGIC + b"\x01" * 8 + b"\x00")
    with pytest.raises(UnknownSchema) as info:
        reader.decode(CONFLUENT_MAGIC + struct.pack(">I", 77) + b"\x00")
    assert info.value.schema_id == 77
    value = encoder.encode("quote", sample_datums(json.loads(shipped_schemas()["quote"].text))[0])
    with pytest.raises(AvroDecodeError, match="does not decode"):
        reader.decode(value[:14])


def test_retired_schema_versions_decode_as_the_current_one(tmp_path):
    """Single-object data written before a schema change still reads, via <kind>@<x>.avsc."""
    current = json.loads(shipped_schemas()["status"].text)
    old = dict(current, fields=[f for f in current["fields"] if f["name"] != "indicator"])
    for kind in ALL_KINDS:
        (tmp_path / f"{kind}.avsc").write_text(shipped_schemas()[kind].text)
    (tmp_path / "status@v0.avsc").write_text(json.dumps(old))
    schemas = SchemaSet.load(tmp_path)
    old_writer = [s for s in schemas.by_fingerprint.values() if s.name == "tickpipe.TradingStatus"
                  and s is not schemas["status"]][0]
    datum = sample_datums(old)[0]
    value = old_writer.single_object_header + AvroEncoder(SchemaSet([old_writer])).encode("status", datum)[10:]
    decoded = AvroReader(schemas).decode(value)
    assert decoded["indicator"] is None and decoded["status"] == datum["status"]
    with pytest.raises(AvroDecodeError):
        AvroReader().decode(value)  # the shipped set alone does not know the old fingerprint
