"""``RawRecord.from_kafka`` decodes (and rejects) headers exactly as its first, plain version did."""

from __future__ import annotations

import random

import pytest

from tickpipe.envelope import (
    H_CONN, H_CONTENT_TYPE, H_KIND, H_PROVIDER, H_RECV_NS, H_SEQ, H_SESSION, KIND_FRAME, RawRecord)

KNOWN = (H_PROVIDER, H_CONN, H_SESSION, H_SEQ, H_RECV_NS, H_CONTENT_TYPE, H_KIND)


def reference(key, value, headers) -> RawRecord:
    """The decoder as first written (one dict, a text() per header)."""
    h = {k: v for k, v in (headers or ())}

    def text(name: str) -> str:
        if name not in h or h[name] is None:
            raise ValueError(f"raw record lacks header {name}")
        return h[name].decode("utf-8", "replace")

    try:
        seq, recv_ns = int(text(H_SEQ)), int(text(H_RECV_NS))
    except ValueError as exc:
        if "lacks header" in str(exc):
            raise
        raise ValueError(f"raw record has a non-numeric {H_SEQ} or {H_RECV_NS} header") from None
    if not (-(2**63) <= seq <= 2**63 - 1 and -(2**63) <= recv_ns <= 2**63 - 1):
        raise ValueError(f"raw record has a {H_SEQ} or {H_RECV_NS} header out of the 64-bit range")
    return RawRecord(provider=text(H_PROVIDER), conn=text(H_CONN), session=text(H_SESSION), seq=seq,
                     recv_ns=recv_ns, payload=value or b"", content_type=text(H_CONTENT_TYPE),
                     kind=KIND_FRAME if h.get(H_KIND) is None else h[H_KIND].decode(),
                     extra_headers=tuple((k, v) for k, v in (headers or ()) if k not in KNOWN))


def outcome(fn, *args):
    try:
        return fn(*args)
    except Exception as exc:
        return (type(exc), str(exc))


VALUES = {
    H_SEQ: [b"1", b"42", b" 7 ", b"1_000", b"-3", b"x", b"", b"\xd9\xa1\xd9\xa2", b"\xff", str(2**63).encode(),
            "5", bytearray(b"9"), None],
    H_RECV_NS: [b"1700000000000000000", b"0", b"1.5", bytearray(b"12"), None, "12"],
    H_KIND: [b"frame", b"session_start", b"loss", b"other", b"\xff", bytearray(b"session_end"), None, "frame"],
}
TEXTS = [b"financefeast", b"c1", b"s1", b"application/json", b"caf\xc3\xa9", b"\xff\xfe", b"", bytearray(b"ba"), None, "s"]


def test_from_kafka_matches_the_reference():
    rng = random.Random(3)
    for _ in range(5000):
        headers = []
        for name in KNOWN:
            if rng.random() < 0.95:
                headers.append((name, rng.choice(VALUES.get(name, TEXTS))))
        if rng.random() < 0.3:
            headers.append(("x-extra", b"v"))
        if rng.random() < 0.1:
            headers.append((rng.choice(KNOWN), rng.choice(TEXTS)))   # a repeated header: the last one wins
        rng.shuffle(headers)
        got, want = outcome(RawRecord.from_kafka, b"k", b"v", headers), outcome(reference, b"k", b"v", headers)
        assert got == want, headers
        if isinstance(got, RawRecord):
            assert repr(got) == repr(want) and hash(got) == hash(want)


@pytest.mark.parametrize("headers", [None, []])
def test_no_headers(headers):
    with pytest.raises(ValueError, match="lacks header tp-seq"):
        RawRecord.from_kafka(None, None, headers)
