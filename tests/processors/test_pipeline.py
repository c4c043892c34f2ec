"""The processing path without Kafka: normalize, dead-letter, markers, state, the integrity seam."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from tests.processors.example_normalizer import normalize, normalize_merging
from tickpipe.avro import AvroReader
from tickpipe.envelope import KIND_SESSION_START, RawRecord
from tickpipe.processors.normalizers.errors import NormalizeError
from tickpipe.processors.pipeline import Pipeline

PRICE = b'{"type":"price","data":{"date":"2021-09-29T09:35:53","price":3.0424,"volume":181123,"symbol":"NZB.NZ"}}'


def raw(payload: bytes, seq: int = 1, kind: str = "frame", provider: str = "financefeast", session: str = "s1") -> RawRecord:
    return RawRecord(provider=provider, conn="c1", session=session, seq=seq, recv_ns=1_700_000_000_123_456_789,
                     payload=payload, kind=kind)


def dead_letters(provider: str, error_kind: str) -> float:
    return REGISTRY.get_sample_value("tickpipe_processor_dead_letters_total",
                                     {"provider": provider, "error_kind": error_kind}) or 0.0


def test_worked_example_yields_exact_trade_that_decodes_with_shipped_schema():
    result = Pipeline("financefeast", normalize).handle_raw(raw(PRICE, seq=7))
    assert result.dead_letter is None
    [out] = result.outputs
    assert (out.kind, out.key) == ("trade", b"NZB.NZ")
    decoded = AvroReader().decode(out.value)
    assert decoded.name == "Trade"
    assert decoded["price"] == "3.0424" and decoded["size"] == "181123"
    assert decoded["event_time"] == 1632908153000000000
    assert decoded["recv_time"] == 1_700_000_000_123_456_789
    assert (decoded["conn"], decoded["session"], decoded["frame_seq"], decoded["frame_index"]) == ("c1", "s1", 7, 0)
    assert decoded["provider"] == "financefeast" and decoded["channel"] == "price"
    assert decoded["action"] == "new" and decoded["conditions"] == []  # schema defaults filled in


def test_trailing_zeros_of_json_numbers_survive():
    payload = PRICE.replace(b"3.0424", b"3.04240").replace(b"181123", b"1.5e3")
    [out] = Pipeline("financefeast", normalize).handle_raw(raw(payload)).outputs
    decoded = AvroReader().decode(out.value)
    assert (decoded["price"], decoded["size"]) == ("3.04240", "1.5e3")


@pytest.mark.parametrize("payload, error_kind, reason", [
    (b'{"type":"price","data":{"date":', "parse", "payload is not JSON"),
    (b'{"type":"price","data":{"date":"2021-09-29T09:35:53","price":1}}', "validation", "missing field 'symbol'"),
    (b'{"type":"price","data":{"date":"yesterday","price":1,"volume":2,"symbol":"X"}}', "validation", "date:"),
    (b'{"type":"price","data":{"date":"2021-09-29T09:35:53","price":true,"volume":2,"symbol":"X"}}', "validation", "price: expected a number"),
    (b'{"type":"nonsense"}', "validation", "unknown message type 'nonsense'"),
    (b'[1,2]', "validation", "not a JSON object"),
])
def test_malformed_frames_become_dead_letters_with_original_bytes(payload, error_kind, reason):
    before = dead_letters("financefeast", error_kind)
    record = raw(payload, seq=3)
    result = Pipeline("financefeast", normalize).handle(record.key, record.payload, record.headers())
    assert result.records == []
    [out] = result.outputs
    assert out.kind == "dead_letter" and out.key == b"c1"
    decoded = AvroReader().decode(out.value)
    assert decoded["payload"] == payload
    assert decoded["error_kind"] == error_kind and reason in decoded["reason"]
    assert [(h["key"], h["value"]) for h in decoded["headers"]] == record.headers()
    assert (decoded["conn"], decoded["session"], decoded["frame_seq"]) == ("c1", "s1", 3)
    assert dict(out.headers)["tp-dlq-kind"] == error_kind.encode()
    assert dead_letters("financefeast", error_kind) == before + 1


def test_normalizer_bug_is_an_internal_dead_letter_not_a_crash():
    def broken(frame):
        raise RuntimeError("boom")

    result = Pipeline("financefeast", broken).handle_raw(raw(PRICE))
    assert result.dead_letter["error_kind"] == "internal"
    assert "RuntimeError: boom" in result.dead_letter["reason"]


def test_record_that_does_not_fit_its_schema_dead_letters_the_whole_frame():
    def wrong_type(frame):
        frame.record("trade", "AAPL", price="1.0")
        frame.record("trade", "AAPL", price=1.0)  # a float where decimal text belongs

    result = Pipeline("financefeast", wrong_type).handle_raw(raw(PRICE))
    assert [o.kind for o in result.outputs] == ["dead_letter"]
    assert result.dead_letter["error_kind"] == "validation"
    assert "Trade does not fit its schema" in result.dead_letter["reason"]


def test_bad_envelope_keeps_original_key_value_and_headers():
    headers = [("tp-provider", b"financefeast"), ("tp-seq", b"x")]
    result = Pipeline("financefeast", normalize).handle(b"k", b"payload", headers)
    decoded = AvroReader().decode(result.outputs[0].value)
    assert decoded["error_kind"] == "envelope"
    assert decoded["payload"] == b"payload" and decoded["key"] == b"k"
    assert [(h["key"], h["value"]) for h in decoded["headers"]] == headers


def test_frame_of_another_provider_is_rejected():
    record = raw(PRICE, provider="alpaca")
    result = Pipeline("financefeast", normalize).handle(record.key, record.payload, record.headers())
    assert result.dead_letter["error_kind"] == "envelope"
    assert "'alpaca' on the financefeast topic" in result.dead_letter["reason"]


def test_control_messages_are_counted_not_recorded():
    result = Pipeline("financefeast", normalize).handle_raw(raw(b'{"type":"authenticated","data":{}}'))
    assert result.outputs == [] and result.dead_letter is None
    assert REGISTRY.get_sample_value("tickpipe_processor_ignored_messages_total",
                                     {"provider": "financefeast", "reason": "authenticated"}) >= 1


def test_state_merges_deltas_per_session_and_resets_on_session_start():
    pipe = Pipeline("schwab", normalize_merging)
    pipe.handle_raw(raw(b'{"key":"MSFT","1":417.01,"2":417.08}', provider="schwab"))
    [rec] = pipe.handle_raw(raw(b'{"key":"MSFT","2":417.10}', seq=2, provider="schwab")).records
    assert (rec["bid_price"], rec["ask_price"]) == ("417.01", "417.10")
    marker = pipe.handle_raw(raw(b"{}", seq=3, kind=KIND_SESSION_START, provider="schwab", session="s2"))
    assert marker.outputs == [] and marker.is_marker
    [rec] = pipe.handle_raw(raw(b'{"key":"MSFT","2":417.2}', seq=4, provider="schwab", session="s2")).records
    assert (rec["bid_price"], rec["ask_price"]) == (None, "417.2")


def test_checks_see_every_frame_before_produce_and_may_drop_records():
    seen = []

    class DropSecondRecord:
        def check(self, result):
            seen.append((result.raw.seq, result.is_marker, len(result.records), result.dead_letter is not None))
            del result.records[1:]

    def two_trades(frame):
        if frame.json() is None:
            raise NormalizeError("null frame")
        frame.record("trade", "A", price="1")
        frame.record("trade", "B", price="2")

    pipe = Pipeline("financefeast", two_trades, checks=[DropSecondRecord()])
    result = pipe.handle_raw(raw(PRICE, seq=1))
    pipe.handle_raw(raw(b"{}", seq=2, kind=KIND_SESSION_START))
    pipe.handle_raw(raw(b"null", seq=3))
    assert [o.key for o in result.outputs] == [b"A"]
    assert result.records[0].encoded == result.outputs[0].value  # validated once, before the checks
    assert seen == [(1, False, 2, False), (2, True, 0, False), (3, False, 0, True)]


def test_a_flood_of_bad_frames_is_counted_in_full_but_logged_sparingly(caplog):
    pipe = Pipeline("financefeast", normalize)
    before = dead_letters("financefeast", "parse")
    with caplog.at_level("WARNING", logger="tickpipe.processors"):
        results = [pipe.handle_raw(raw(b"{not json", seq=i)) for i in range(1, 51)]
    assert all(r.dead_letter is not None for r in results)
    assert dead_letters("financefeast", "parse") == before + 50
    logged = [r for r in caplog.records if r.getMessage() == "raw record dead-lettered"]
    assert 1 <= len(logged) <= 10


def test_checks_can_hold_records_and_release_them_on_tick_or_finish():
    class HoldUntilTick:
        def __init__(self):
            self.held = []

        def check(self, result):
            self.held += result.records
            result.records = []

        def tick(self, result, now_ns):
            result.records, self.held = self.held[:1], self.held[1:]

        def finish(self, result):
            result.records, self.held = self.held, []

    pipe = Pipeline("financefeast", normalize, checks=[HoldUntilTick()])
    assert pipe.handle_raw(raw(PRICE, seq=1)).outputs == []
    assert pipe.handle_raw(raw(PRICE.replace(b"NZB.NZ", b"AIR.NZ"), seq=2)).outputs == []
    ticked = pipe.tick(now_ns=5)
    assert ticked.raw is None and [o.key for o in ticked.outputs] == [b"NZB.NZ"]
    finished = pipe.finish()
    assert [AvroReader().decode(o.value)["frame_seq"] for o in finished.outputs] == [2]


def test_a_failing_check_is_counted_and_the_records_still_go_out():
    class Broken:
        def check(self, result):
            raise RuntimeError("integrity bug")

    before = REGISTRY.get_sample_value("tickpipe_processor_check_errors_total", {"provider": "financefeast"}) or 0
    result = Pipeline("financefeast", normalize, checks=[Broken()]).handle_raw(raw(PRICE))
    assert [o.kind for o in result.outputs] == ["trade"]
    assert REGISTRY.get_sample_value("tickpipe_processor_check_errors_total", {"provider": "financefeast"}) == before + 1


def test_normalizer_state_saves_on_commit_and_restores_per_session():
    from tickpipe.processors.normalizers.state import NormalizerState

    store: dict[bytes, bytes] = {}  # the Faust app passes its table; a dict is the same mapping
    first = Pipeline("schwab", normalize_merging, state=NormalizerState(store))
    first.handle_raw(raw(b'{"key":"MSFT","1":417.01,"2":417.08}', provider="schwab"))
    assert store == {}  # nothing saved before the batch is delivered
    first.state.commit()
    second = Pipeline("schwab", normalize_merging, state=NormalizerState(store))  # a restarted worker
    [rec] = second.handle_raw(raw(b'{"key":"MSFT","2":417.1}', seq=2, provider="schwab")).records
    assert (rec["bid_price"], rec["ask_price"]) == ("417.01", "417.1")
    [rec] = second.handle_raw(raw(b'{"key":"MSFT","2":1}', seq=3, provider="schwab", session="s2")).records
    assert rec["bid_price"] is None  # another session of the connection starts empty
    second.handle_raw(raw(b"{}", seq=4, kind=KIND_SESSION_START, provider="schwab", session="s3"))
    second.state.commit()
    assert store == {}  # a session marker clears the connection's saved state


def test_headers_that_do_not_decode_are_an_envelope_dead_letter():
    record = raw(PRICE)
    headers = [(k, 5 if k == "tp-conn" else v) for k, v in record.headers()]  # not bytes at all
    result = Pipeline("financefeast", normalize).handle(record.key, record.payload, headers)
    assert result.dead_letter["error_kind"] == "envelope" and result.dead_letter["payload"] == PRICE
