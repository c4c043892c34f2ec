"""The conversions every normalizer uses: exact decimal text, times to epoch ns, symbols, payload decoding."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import msgpack
import pytest

from tickpipe.envelope import CT_MSGPACK, RawRecord
from tickpipe.processors.normalizers.base import Frame
from tickpipe.processors.normalizers.convert import dec, dec_or_none, ms_ns, normalize_symbol, rfc3339_ns, s_ns, text
from tickpipe.processors.normalizers.errors import NormalizeError


@pytest.mark.parametrize("value, expected", [
    ("21921.73", "21921.73"), ("0.00000000", "0.00000000"), ("-1.5e-7", "-1.5e-7"), (".5", ".5"), ("7.", "7."),
    (181123, "181123"), (0.1, "0.1"), (1e-07, "1e-07"), (Decimal("3.0400"), "3.0400"),
])
def test_dec_keeps_the_text(value, expected):
    assert dec(value) == expected


@pytest.mark.parametrize("value", ["", "1,5", "NaN", "0x10", " 1", True, None, float("nan"), float("inf"), [1], {}])
def test_dec_rejects_what_is_not_a_decimal(value):
    with pytest.raises(NormalizeError, match="price"):
        dec(value, "price")


def test_dec_or_none():
    assert dec_or_none(None) is None and dec_or_none("") is None and dec_or_none("1.0") == "1.0"


@pytest.mark.parametrize("value, expected", [
    ("2023-04-06T11:54:26.838232225Z", 1680782066838232225),
    ("2021-02-22T15:51:44.208Z", 1614009104208000000),
    ("2021-02-22T19:15:00Z", 1614021300000000000),
    ("2021-09-29T09:35:53", 1632908153000000000),           # no zone: read as UTC
    ("2021-04-17T16:43:30.244075+02:00", 1618670610244075000),
    ("1970-01-01T00:00:00Z", 0),
])
def test_rfc3339_ns(value, expected):
    assert rfc3339_ns(value) == expected


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00.000000Z", "2021-02-22", "2021-02-22T15:51:44.1234567891Z",
                                   "2021-13-01T00:00:00Z", 1614021300, None])
def test_rfc3339_rejects_bad_or_unrepresentable_times(value):
    with pytest.raises(NormalizeError, match="when"):
        rfc3339_ns(value, "when")


def test_epoch_scalings_are_exact():
    assert ms_ns(1715903940000) == 1715903940000000000
    assert ms_ns("1674011769604") == 1674011769604000000
    assert s_ns("1688998200") == 1688998200000000000
    assert s_ns("1772460371.299000") == 1772460371299000000
    assert s_ns(1483736448.299) == 1483736448299000000
    with pytest.raises(NormalizeError):
        ms_ns("soon")
    with pytest.raises(NormalizeError):
        s_ns(10**12)  # beyond the year 2262 in nanoseconds


def test_text_for_field_maps():
    assert [text(v) for v in (None, True, False, 1.25, 7, "x")] == [None, "true", "false", "1.25", "7", "x"]


@pytest.mark.parametrize("provider_symbol, symbol", [
    ("BTC/USD", "BTC-USD"), ("btc-usd", "BTC-USD"), ("EUR/USD", "EUR-USD"), ("/ESU24", "/ESU24"),
    ("./E3DM24P5490", "./E3DM24P5490"), (" NZC.NZ ", "NZC.NZ"), ("GOOG  240517C00070000", "GOOG  240517C00070000"),
])
def test_normalize_symbol(provider_symbol, symbol):
    assert normalize_symbol(provider_symbol) == symbol


def test_msgpack_frames_decode_with_timestamps_and_bad_bytes_are_parse_errors():
    when = msgpack.Timestamp.from_datetime(dt.datetime(2024, 3, 12, 10, 27, 48, 858228, tzinfo=dt.timezone.utc))
    payload = msgpack.packb([{"T": "t", "S": "AVAX/USD", "p": 47.299, "t": when}], datetime=False)
    [msg] = Frame(RawRecord("alpaca", "c", "s", 1, 1, payload, content_type=CT_MSGPACK)).msgpack()
    assert msg["t"].to_unix_nano() == 1710239268858228000 and dec(msg["p"]) == "47.299"
    for bad in (b"\xc1", b"\x92\x01"):
        with pytest.raises(NormalizeError) as info:
            Frame(RawRecord("alpaca", "c", "s", 1, 1, bad, content_type=CT_MSGPACK)).msgpack()
        assert info.value.kind == "parse"


def test_record_requires_an_instrument():
    frame = Frame(RawRecord("alpaca", "c", "s", 1, 1, b"[]"))
    with pytest.raises(NormalizeError, match="without an instrument"):
        frame.record("trade", "", price="1")
