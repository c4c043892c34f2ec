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


def _rfc3339_reference(text, field="time"):
    """rfc3339_ns as first written (no cache, a digit at a time), to hold the fast version to it."""
    import datetime as dt
    import itertools

    if type(text) is not str or len(text) < 19:
        raise NormalizeError(f"{field}: {str(text)[:40]!r} is not an RFC 3339 time")
    try:
        rest, frac = text[19:], 0
        if rest[:1] == ".":
            digits = "".join(itertools.takewhile(str.isdigit, rest[1:]))
            if not 0 < len(digits) <= 9:
                raise ValueError
            frac, rest = int(digits + "0" * (9 - len(digits))), rest[1 + len(digits):]
        moment = dt.datetime.fromisoformat(text[:19] + ("+00:00" if rest in ("", "Z", "z") else rest))
        seconds = (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()
        ns = int(seconds) * 1_000_000_000 + frac
    except ValueError:
        raise NormalizeError(f"{field}: {text[:40]!r} is not an RFC 3339 time") from None
    if not -(2**63) <= ns <= 2**63 - 1:
        raise NormalizeError(f"{field}: time out of the representable range")
    return ns


def test_rfc3339_ns_matches_the_plain_version_on_odd_input():
    import random

    rng = random.Random(5)
    bases = ["2021-09-29T09:35:53", "2023-04-06 11:54:26", "0001-01-01T00:00:00", "9999-12-31T23:59:59",
             "2021-02-30T00:00:00", "2021-09-29T09:35:5x"]
    fractions = ["", ".", ".1", ".123456789", ".1234567890", ".٣", ".1²", ".12٣4", ".00"]
    zones = ["", "Z", "z", "+00:00", "-05:30", "+14:00", "+25:00", "X", " ", "Z ", "+0530"]
    for _ in range(3000):
        text = rng.choice(bases) + rng.choice(fractions) + rng.choice(zones)
        for _twice in range(2):   # the second time from the cache
            try:
                got = rfc3339_ns(text, "t")
            except NormalizeError as exc:
                got = str(exc)
            try:
                want = _rfc3339_reference(text, "t")
            except NormalizeError as exc:
                want = str(exc)
            assert got == want, text


@pytest.mark.parametrize("payload", [
    b'{"p":3.0424,"v":181123}', b' {"a":1}', b'{"a":1} ', b'{"a":1}\n', b'{"a":1}x', b'{"a":1}{"b":2}', b'',
    b'   ', b'[1e5, -0, 1.50, NaN, Infinity]', b'123456789012345678901234567890', b'"\\ud800"', b'{"a":',
    b'\xef\xbb\xbf{"a":1}', b'\xff', b'nul', b'[' * 50 + b']' * 50,
])
def test_frame_json_reads_and_rejects_as_the_plain_decoder(payload):
    import json

    frame = Frame(RawRecord("p", "c", "s", 1, 1, payload))
    try:
        want = json.JSONDecoder(parse_float=lambda literal: literal).decode(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        with pytest.raises(NormalizeError) as err:
            frame.json()
        assert str(err.value) == f"payload is not JSON: {exc}"
    else:
        assert frame.json() == want and repr(frame.json()) == repr(want)
