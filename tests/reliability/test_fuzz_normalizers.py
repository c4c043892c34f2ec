"""Malformed and adversarial input through every provider's real pipeline (normalizer, schema
validation, the integrity stage with its state store): nothing escapes, and every frame that
cannot be decoded is a dead letter holding its original bytes and a reason.

The seeds are real frames captured from the emulators; hypothesis truncates them, replaces
any node of their JSON with a wrong type, a huge number, NaN or odd unicode, frames them like
socket.io packets, or sends garbage (text, bytes, msgpack), plus envelopes with bad headers.
``TICKPIPE_FUZZ_EXAMPLES`` sets how many inputs each provider gets (default 400).
"""

from __future__ import annotations

import dataclasses
import json
import os

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.reliability.support import OutcomeChecker
from tickpipe.envelope import CT_MSGPACK, KIND_FRAME, RawRecord
from tickpipe.processors.integrity.check import IntegrityCheck
from tickpipe.processors.integrity.stage import IntegritySettings
from tickpipe.processors.pipeline import Pipeline

EXAMPLES = int(os.environ.get("TICKPIPE_FUZZ_EXAMPLES", "400"))
FEEDS = ["alpaca", "alpaca-msgpack", "tdameritrade", "schwab", "coinbase", "coinbase-exchange", "financefeast",
         "marketprophit"]
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


class Harness:
    """One provider's pipeline as ``tickpipe process`` builds it, fed frame after frame; every
    state the integrity stage would save is saved after each frame, as the app does per batch."""

    def __init__(self, feed: str, frames: list[tuple]) -> None:
        self.provider = "alpaca" if feed == "alpaca-msgpack" else feed
        self.store: dict[bytes, bytes] = {}
        self.check = IntegrityCheck(self.provider, IntegritySettings(), self.store)
        self.pipe = Pipeline.for_provider(self.provider, checks=[self.check])
        self.seeds = [RawRecord.from_kafka(*f) for f in frames]
        self.seeds = [r for r in self.seeds if r.kind == KIND_FRAME]
        self.seq = 0
        self.outcome = OutcomeChecker()

    def feed(self, template: RawRecord, payload: bytes, must_dead_letter: bool = False, headers=None) -> None:
        self.seq += 1
        raw = dataclasses.replace(template, seq=self.seq, payload=payload)
        result = self.pipe.handle(raw.key, payload, headers if headers is not None else raw.headers())
        self.check.commit()
        self.outcome.check(result, payload, must_dead_letter)
        if self.seq % 50 == 0:
            self.pipe.tick(raw.recv_ns + 10**9)
            self.check.commit()


_HARNESSES: dict[str, Harness] = {}


@pytest.fixture
def harness(corpus, request, figures):
    feed = request.param
    if feed not in _HARNESSES:
        _HARNESSES[feed] = Harness(feed, corpus[feed])
    h = _HARNESSES[feed]
    tried = h.outcome.tried
    yield h
    figures["bad inputs tried (fuzzed frames through every normalizer)"] += h.outcome.tried - tried


def undecodable(payload: bytes, content_type: str) -> bool:
    """True if no parser of the frame's format reads it: the normalizer cannot, so it must dead-letter it."""
    if content_type == CT_MSGPACK:
        try:
            msgpack.unpackb(payload, raw=False, strict_map_key=False)
            return False
        except Exception:
            return True
    try:
        orjson.loads(payload)
        return False
    except orjson.JSONDecodeError:
        pass
    try:
        json.loads(payload.decode("utf-8"))
        return False
    except Exception:
        return True


# ----- adversarial values and payloads -----
HUGE = st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 2**64, 10**400])
ODD_TEXT = st.one_of(st.text(max_size=40), st.text(st.characters(codec=None, min_codepoint=0xD800, max_codepoint=0xDFFF),
                                                   min_size=1, max_size=3),
                     st.sampled_from(["", " ", "\x00", "1e99999", "-0", "NaN", "Infinity", "9" * 400, "\u202e",
                                      "2021-13-45T25:61:61Z", "AAPL\x00", "🚀" * 30]))
VALUES = st.one_of(HUGE, st.floats(allow_nan=True, allow_infinity=True), st.integers(), st.booleans(), st.none(),
                   ODD_TEXT, st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


def paths(doc, prefix=()):
    """Every path to a node of a JSON document."""
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from paths(v, prefix + (i,))


def replaced(doc, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {**doc, head: replaced(doc[head], rest, value)}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(doc)]


def dumps(doc, ascii_only: bool) -> bytes:
    """JSON text as a sloppy sender writes it: NaN/Infinity literals, lone surrogates passed through."""
    return json.dumps(doc, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


@st.composite
def mutated(draw, seed: RawRecord) -> tuple[bytes, bool]:
    """(payload, must be dead-lettered) derived from a real frame."""
    payload = seed.payload
    how = draw(st.sampled_from(["truncate", "replace", "socketio", "append", "flip"]))
    if how == "truncate":
        return payload[:draw(st.integers(0, max(0, len(payload) - 1)))], False
    if how == "append":
        return payload + draw(st.sampled_from([b"]", b"}", b",", b"\x00", b"\xff", b" garbage", b'{"a":1}'])), False
    if how == "flip":
        i = draw(st.integers(0, max(0, len(payload) - 1)))
        return payload[:i] + bytes([draw(st.integers(0, 255))]) + payload[i + 1:], False
    if how == "socketio":   # engine.io / socket.io packet framing around (or instead of) the event
        prefix = draw(st.sampled_from([b"4", b"42", b"40", b"41", b"43", b"2", b"3", b"451-", b"42/ns,", b"9", b""]))
        body = draw(st.sampled_from([payload, payload[1:], b"[", b'["res"]', b'["res",1,2]', b'[1,{}]', b"[]", b""]))
        return prefix + body, False
    try:
        doc = msgpack.unpackb(payload, raw=False, strict_map_key=False) if seed.content_type == CT_MSGPACK \
            else json.loads(payload)
    except Exception:
        return payload, False
    path = draw(st.sampled_from(list(paths(doc))))
    doc = replaced(doc, path, draw(VALUES))
    if seed.content_type == CT_MSGPACK:
        try:
            return msgpack.packb(doc), False
        except (OverflowError, ValueError, TypeError):
            return payload[:-1], False
    return dumps(doc, draw(st.booleans())), False


GARBAGE = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"", b" ", b"null", b"true", b"0", b"NaN", b"-Infinity", b'"x"', b"{}", b"[]", b"[[]]", b"[{}]",
                     b'{"type":null}', b"1e999999", b"[" * 5000, b'{"a":' * 3000, b"\xef\xbb\xbf{}", b"\x00" * 64]),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
                 lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                 max_leaves=20).map(lambda doc: dumps(doc, True)),
)


@pytest.mark.parametrize("harness", FEEDS, indirect=True)
@FUZZ
@given(data=st.data())
def test_mutated_real_frames_never_escape_and_undecodable_ones_are_dead_lettered(harness, data):
    seed = data.draw(st.sampled_from(harness.seeds))
    payload, _ = data.draw(mutated(seed))
    harness.feed(seed, payload, must_dead_letter=undecodable(payload, seed.content_type))


@pytest.mark.parametrize("harness", FEEDS, indirect=True)
@FUZZ
@given(data=st.data())
def test_garbage_payloads_never_escape_and_undecodable_ones_are_dead_lettered(harness, data):
    seed = data.draw(st.sampled_from(harness.seeds))
    if data.draw(st.booleans()) or seed.content_type == CT_MSGPACK:
        payload = data.draw(GARBAGE if seed.content_type != CT_MSGPACK else
                            st.one_of(GARBAGE, st.recursive(st.integers(-(2**63), 2**64 - 1) | st.binary(max_size=8) | st.floats(),
                                                            lambda i: st.lists(i, max_size=3), max_leaves=8)
                                      .map(msgpack.packb)))
    else:
        payload = data.draw(GARBAGE)
    harness.feed(seed, payload, must_dead_letter=undecodable(payload, seed.content_type))


HEADER_DAMAGE = st.sampled_from(["drop", "none", "non-numeric", "bad-utf8", "other-provider", "huge-seq"])


@pytest.mark.parametrize("harness", ["coinbase", "alpaca-msgpack", "marketprophit"], indirect=True)
@settings(FUZZ, max_examples=max(50, EXAMPLES // 4))
@given(data=st.data())
def test_damaged_envelopes_are_dead_lettered_with_their_bytes(harness, data):
    seed = data.draw(st.sampled_from(harness.seeds))
    headers = dataclasses.replace(seed, seq=harness.seq + 1).headers()
    name = data.draw(st.sampled_from(["tp-provider", "tp-conn", "tp-session", "tp-seq", "tp-recv-ns", "tp-content-type",
                                      "tp-kind"]))
    damage = data.draw(HEADER_DAMAGE)
    values = {"drop": None, "none": None, "non-numeric": b"12a", "bad-utf8": b"\xff\xfe", "other-provider": b"echo",
              "huge-seq": str(2**70).encode()}
    if damage == "drop":
        headers = [(k, v) for k, v in headers if k != name]
    else:
        headers = [(k, values[damage] if k == name else v) for k, v in headers]
    required = name not in ("tp-kind",)
    must = (required and damage in ("drop", "none")) \
        or (name in ("tp-seq", "tp-recv-ns") and damage in ("non-numeric", "bad-utf8")) \
        or (name == "tp-provider" and damage != "drop")
    harness.feed(seed, seed.payload, must_dead_letter=must, headers=headers)
    if must:
        assert harness.outcome.last_dead_letter["error_kind"] == "envelope"


def test_a_null_kind_header_is_read_as_a_frame_not_a_crash():
    """Kafka headers may be null: a null ``tp-kind`` crashed ``RawRecord.from_kafka`` (AttributeError)."""
    record = RawRecord("financefeast", "c1", "s1", 1, 1, b'{"type":"pong"}')
    headers = [(k, None if k == "tp-kind" else v) for k, v in record.headers()]
    result = Pipeline.for_provider("financefeast").handle(record.key, record.payload, headers)
    assert result.dead_letter is None and result.raw.kind == KIND_FRAME


BIG = 10 * 1024 * 1024


@pytest.mark.timeout(120)
@pytest.mark.parametrize("feed", FEEDS)
def test_ten_megabyte_frames_are_dead_lettered_or_normalized_without_escaping(feed, corpus, figures):
    harness = Harness(feed, corpus[feed])
    seed = max(harness.seeds, key=lambda r: len(r.payload))
    frames = {
        "garbage bytes": (os.urandom(BIG), True),
        "unterminated string": (b'{"type":"' + b"A" * BIG, True),
        "deep nesting": (b"[" * BIG, True),
        "huge number": (b"[" + b"9" * BIG + b"]", False),
        "seed padded with whitespace": (seed.payload + b" " * BIG, False),
    }
    if seed.content_type != CT_MSGPACK:
        doc = json.loads(seed.payload)
        for path in list(paths(doc))[1:4]:
            frames[f"giant string at {path}"] = (dumps(replaced(doc, path, "x" * BIG), True), False)
    else:
        frames["giant msgpack string"] = (msgpack.packb([{"T": "t", "S": "x" * BIG}]), False)
    for name, (payload, must) in frames.items():
        harness.feed(seed, payload, must_dead_letter=must or undecodable(payload, seed.content_type))
    figures["bad inputs tried (fuzzed frames through every normalizer)"] += len(frames)


@pytest.mark.parametrize("feed", FEEDS)
def test_the_seed_frames_are_real_and_clean(feed, corpus):
    """The corpus is what the emulators really send: each frame normalizes without a dead letter."""
    harness = Harness(feed, corpus[feed])
    records = 0
    for seed in harness.seeds:
        result = harness.pipe.handle(seed.key, seed.payload, seed.headers())
        assert result.dead_letter is None, result.dead_letter["reason"]
        records += len(result.records)
    assert len(harness.seeds) >= 20 and records > 0


def test_a_sequence_header_beyond_64_bits_is_an_envelope_dead_letter_not_a_crash():
    """``tp-seq``/``tp-recv-ns`` become Avro longs (records, alerts, dead letters, saved state):
    2**70 used to escape the pipeline as an OverflowError/ValueError while encoding."""
    record = RawRecord("financefeast", "c1", "s1", 1, 1, b'{"type":"pong"}')
    for name in ("tp-seq", "tp-recv-ns"):
        headers = [(k, str(2**70).encode() if k == name else v) for k, v in record.headers()]
        result = Pipeline.for_provider("financefeast").handle(record.key, record.payload, headers)
        assert result.dead_letter["error_kind"] == "envelope" and "64-bit" in result.dead_letter["reason"]
        assert result.dead_letter["frame_seq"] is None or result.dead_letter["frame_seq"] == 1


@pytest.mark.parametrize("provider, frames", [
    ("alpaca", ['[{"T":"t","S":"MSFT","i":842834,"x":"Y","p":70.76,"s":53,"c":["@"],"z":"B","t":"2026-11-21T18:03:32.9Z"}]',
                '[{"T":"t","S":"MSFT","i":%d,"x":"Y","p":70.76,"s":53,"c":["@"],"z":"B","t":"2026-11-21T18:03:33.0Z"}]' % 10**30,
                '[{"T":"t","S":"MSFT","i":842835,"x":"Y","p":70.77,"s":50,"c":["@"],"z":"B","t":"2026-11-21T18:03:33.1Z"}]']),
    ("coinbase", ['{"channel":"heartbeats","client_id":"","timestamp":"2026-11-21T18:06:29.3Z","sequence_num":0,'
                  '"events":[{"current_time":"2026-11-21 18:06:29.3 +0000 UTC","heartbeat_counter":1}]}',
                  '{"channel":"heartbeats","client_id":"","timestamp":"2026-11-21T18:06:29.4Z","sequence_num":%d,'
                  '"events":[{"current_time":"2026-11-21 18:06:29.4 +0000 UTC","heartbeat_counter":2}]}' % 10**30]),
])
def test_a_counter_beyond_64_bits_does_not_poison_the_saved_integrity_state(provider, frames):
    """A trade id or sequence number of 10**30 became integrity state that could not be saved
    (orjson: 'Integer exceeds 64-bit range', raised by the per-batch commit, frame after frame)
    and alerts that could not be encoded; it is now no counter at all."""
    store: dict[bytes, bytes] = {}
    check = IntegrityCheck(provider, IntegritySettings(), store)
    pipe = Pipeline.for_provider(provider, checks=[check])
    for seq, payload in enumerate(frames, start=1):
        raw = RawRecord(provider, "c1", "s1", seq, 1_795_284_000_000_000_000 + seq, payload.encode())
        result = pipe.handle(raw.key, raw.payload, raw.headers())
        check.commit()
        assert all(out.kind != "gap_alert" or out.value for out in result.outputs)
    assert store[b"c1"]
