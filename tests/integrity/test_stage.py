"""The integrity stage over frames and records shaped exactly as the pipeline hands them over."""

from __future__ import annotations

import io

import fastavro

from tickpipe.envelope import KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, RawRecord
from tickpipe.processors.integrity.stage import IntegritySettings, IntegrityStage
from tickpipe.processors.records import Record
from tickpipe.schemas import __file__ as schemas_init

SCHEMA = fastavro.schema.load_schema(schemas_init.replace("__init__.py", "gap_alert.avsc"))
WIDE = IntegritySettings(reorder_window_items=100, reorder_window_ms=10_000, stale_after_s=5)


class Feed:
    """Builds raw frames of one connection with a running tp-seq."""

    def __init__(self, stage: IntegrityStage, conn: str = "c1") -> None:
        self.stage, self.conn, self.seq, self.session, self.t = stage, conn, 0, "s1", 1_000_000_000
        self.records, self.alerts = [], []

    def raw(self, kind=KIND_FRAME, seq=None):
        if seq is None:
            self.seq += 1
        self.t += 1_000_000
        return RawRecord(self.stage.provider, self.conn, self.session, seq or self.seq, self.t, b"{}", kind=kind)

    def send(self, records=(), kind=KIND_FRAME, seq=None, marks=()):
        raw = self.raw(kind, seq)
        for r in records:
            r.setdefault("recv_time", raw.recv_ns)
        out = self.stage.on_frame(raw, list(records), marks)
        self.records += out.records
        self.alerts += out.alerts
        return out

    def start(self, session):
        self.session = session
        return self.send(kind=KIND_SESSION_START)

    def close(self):
        out = self.stage.close()
        self.records += out.records
        self.alerts += out.alerts


def trade(symbol, trade_id, t, channel="trades", **extra):
    return Record("trade", {"provider": "x", "symbol": symbol, "provider_symbol": symbol, "event_time": t,
                            "trade_id": str(trade_id), "channel": channel, "price": "1.5", "size": "2", **extra})


def coinbase_frame(seq_num, *records):
    for r in records:
        r.update(sequence=seq_num, sequence_scope="connection")
    return list(records)


def summary(alerts):
    return [(a["kind"], a["scope"], a["counter"], a.get("first_missing"), a.get("last_missing")) for a in alerts]


def valid(alert):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMA, dict(alert))
    return True


def test_producer_scope_gap_and_redelivered_frames():
    feed = Feed(IntegrityStage("alpaca", WIDE))
    feed.start("s1")
    feed.send([trade("AAPL", 1, 10)])
    feed.seq += 1                                      # frame tp-seq 3 never reached Kafka
    feed.send([trade("AAPL", 3, 30)])
    feed.send([trade("AAPL", 3, 30)], seq=4)           # redelivered after a processor restart
    assert summary(feed.alerts)[:2] == [("GAP", "producer", "tp_seq", 3, 3), ("DUPLICATE", "producer", "tp_seq", 4, 4)]
    assert [r["trade_id"] for r in feed.records] == ["1"]  # trade 3 is held: trade 2 may still come
    feed.close()
    assert ("GAP", "instrument", "trade_id", 2, 2) in summary(feed.alerts)
    assert [r["trade_id"] for r in feed.records] == ["1", "3"]
    assert all(valid(a) for a in feed.alerts)


def test_coinbase_connection_counter_reorders_frames_and_resets_per_session():
    feed = Feed(IntegrityStage("coinbase", WIDE))
    feed.start("s1")
    feed.send(coinbase_frame(0, trade("BTC-USD", 100, 1)))
    feed.send(coinbase_frame(2, trade("BTC-USD", 102, 3)))
    feed.send(coinbase_frame(1, trade("BTC-USD", 101, 2)))
    assert [r["trade_id"] for r in feed.records] == ["100", "101", "102"]
    assert summary(feed.alerts) == [("OUT_OF_ORDER", "connection", "sequence_num", 1, 1)]
    feed.send(kind=KIND_SESSION_END)
    feed.start("s2")
    feed.send(coinbase_frame(0, trade("BTC-USD", 500, 9)))   # the counter restarts: not a gap
    reset = feed.alerts[-1]
    assert reset["kind"] == "RESET" and reset["scope"] == "connection" and reset["span_end"] > reset["span_start"]
    assert [r["trade_id"] for r in feed.records][-1] == "500"
    assert all(valid(a) for a in feed.alerts)


def test_coinbase_heartbeat_marks_count_and_gap_at_connection_scope():
    from tickpipe.processors.normalizers.base import SequenceMark

    feed = Feed(IntegrityStage("coinbase", IntegritySettings(reorder_window_items=1, reorder_window_ms=10_000)))
    feed.start("s1")
    feed.send(marks=[SequenceMark("connection", "c1", 0)])
    feed.send(coinbase_frame(2, trade("ETH-USD", 7, 1)))
    feed.send(coinbase_frame(3, trade("ETH-USD", 8, 2)))      # window of 1 overflows: 1 is gone
    assert ("GAP", "connection", "sequence_num", 1, 1) in summary(feed.alerts)
    assert [r["trade_id"] for r in feed.records] == ["7", "8"]


def test_exchange_sparse_ticker_sequence_is_not_a_gap_but_full_channel_is():
    feed = Feed(IntegrityStage("coinbase-exchange", WIDE))
    feed.start("s1")
    ticker = lambda seq, tid: trade("BTC-USD", tid, seq, channel="ticker", sequence=seq, sequence_scope="instrument")
    match = lambda seq, tid: trade("BTC-USD", tid, seq, channel="matches", sequence=seq, sequence_scope="instrument")
    feed.send([ticker(100, 1), match(100, 1)])                # same sequence, different records
    feed.send([ticker(140, 2), match(140, 2)])                # sequence jumps by design
    assert feed.alerts == [] and len(feed.records) == 4
    full = lambda seq: Record("book", {"provider": "x", "symbol": "BTC-USD", "provider_symbol": "BTC-USD",
                                       "channel": "full", "sequence": seq, "sequence_scope": "instrument"})
    feed.send([full(200)])
    feed.send([full(202)])
    feed.close()
    assert summary(feed.alerts) == [("GAP", "instrument", "sequence", 201, 201)]
    assert feed.alerts[0]["instrument"] == "BTC-USD" and feed.alerts[0]["channel"] == "full"


def test_event_times_without_sequence_numbers():
    feed = Feed(IntegrityStage("financefeast", WIDE))
    feed.start("s1")
    price = lambda t, p: Record("trade", {"provider": "financefeast", "symbol": "NZB.NZ", "provider_symbol": "NZB.NZ",
                                          "event_time": t, "channel": "price", "price": p, "size": "5"})
    feed.send([price(1000, "3.04")])
    feed.send([price(3000, "3.05")])
    feed.send([price(2000, "3.06")])                          # late
    feed.send([price(3000, "3.05")])                          # the same message again
    feed.send([price(3000, "3.07")])                          # same second, new price: fine
    assert summary(feed.alerts) == [("OUT_OF_ORDER", "instrument", "event_time", 2000, 2000),
                                    ("DUPLICATE", "instrument", "event_time", 3000, 3000)]
    assert feed.alerts[0]["lateness"] == 1000
    assert [r["price"] for r in feed.records] == ["3.04", "3.05", "3.06", "3.07"]


def test_staleness_is_reported_once_per_silence():
    stage = IntegrityStage("alpaca", WIDE)
    feed = Feed(stage)
    feed.start("s1")
    feed.send([trade("AAPL", 1, 10)])
    assert stage.tick(feed.t + 1_000_000_000).alerts == []
    stale = stage.tick(feed.t + 6_000_000_000).alerts
    assert [(a["kind"], a["scope"]) for a in stale] == [("STALE", "connection")]
    assert stage.tick(feed.t + 9_000_000_000).alerts == []
    assert valid(stale[0])


def test_state_survives_a_snapshot_round_trip():
    import orjson

    settings = WIDE
    feed = Feed(IntegrityStage("coinbase", settings))
    feed.start("s1")
    feed.send(coinbase_frame(0, trade("BTC-USD", 1, 1)))
    feed.send(coinbase_frame(2, trade("BTC-USD", 3, 3)))      # held, waiting for 1
    state = orjson.loads(orjson.dumps(feed.stage.connection("c1").snapshot()))
    restarted = IntegrityStage("coinbase", settings)
    restarted.connection("c1").restore(state)
    feed.stage = restarted
    feed.send(coinbase_frame(1, trade("BTC-USD", 2, 2)))
    feed.send(coinbase_frame(2, trade("BTC-USD", 3, 3)), seq=3)   # redelivered frame: duplicate
    assert [r["trade_id"] for r in feed.records] == ["1", "2", "3"]
    assert [a["kind"] for a in feed.alerts] == ["OUT_OF_ORDER", "DUPLICATE"]


def test_a_connection_gap_asks_the_producer_to_resubscribe_every_book_it_may_have_hit():
    stage = IntegrityStage("coinbase", IntegritySettings(reorder_window_items=1, reorder_window_ms=10_000))
    feed = Feed(stage)
    feed.start("s1")
    book = lambda symbol: Record("book", {"provider": "coinbase", "symbol": symbol, "provider_symbol": symbol,
                                          "channel": "l2_data", "snapshot": True})
    out = feed.send(coinbase_frame(0, book("BTC-USD"), book("ETH-USD")))
    assert out.resyncs == []
    feed.send(coinbase_frame(2, trade("BTC-USD", 1, 2)))
    out = feed.send(coinbase_frame(3, trade("BTC-USD", 2, 3)))   # frame 1 is gone: a book delta may be lost
    assert [(r["action"], r["instrument"], r["channel"], r["conn"]) for r in out.resyncs] == [
        ("resync", "BTC-USD", "l2_data", "c1"), ("resync", "ETH-USD", "l2_data", "c1")]


def test_an_instrument_gap_resyncs_only_that_book():
    stage = IntegrityStage("coinbase-exchange", WIDE)
    feed = Feed(stage)
    feed.start("s1")
    full = lambda symbol, seq: Record("book", {"provider": "x", "symbol": symbol, "provider_symbol": symbol,
                                               "channel": "full", "sequence": seq, "sequence_scope": "instrument"})
    feed.send([full("BTC-USD", 10), full("ETH-USD", 50)])
    feed.send([full("BTC-USD", 12), full("ETH-USD", 51)])
    out = stage.close()
    assert [(r["instrument"], r["channel"]) for r in out.resyncs] == [("BTC-USD", "full")]


def test_a_processor_catching_up_closes_no_window_early():
    """Ticks run in stream time: records received long ago but processed just now are not expired."""
    import time as clock

    from tickpipe.processors.integrity.check import IntegrityCheck
    from tickpipe.processors.pipeline import FrameResult

    check = IntegrityCheck("coinbase", IntegritySettings(reorder_window_items=100, reorder_window_ms=500))
    old = clock.time_ns() - 60 * 10**9                     # a backlog from a minute ago
    results = []
    for seq, (counter, trade_id) in enumerate([(0, 1), (2, 3)], start=1):
        raw = RawRecord("coinbase", "c1", "s1", seq, old + seq * 1_000_000, b"{}")
        result = FrameResult(raw, coinbase_frame(counter, trade("BTC-USD", trade_id, seq)))
        check.check(result)
        results.append(result)
    ticked = FrameResult(None)
    check.tick(ticked)                                     # wall clock is a minute ahead of the stream
    assert ticked.alerts == [] and ticked.records == []    # sequence_num 1 may still come
    late = FrameResult(RawRecord("coinbase", "c1", "s1", 3, old + 3_000_000, b"{}"),
                       coinbase_frame(1, trade("BTC-USD", 2, 2)))
    check.check(late)
    assert [a["kind"] for a in late.alerts] == ["OUT_OF_ORDER"]
    assert [r["trade_id"] for r in late.records] == ["2", "3"]


def test_content_fingerprint_leaves_out_the_origin_whichever_origin_fields_a_record_has():
    import zlib

    import orjson

    from tickpipe.processors.integrity.stage import ORIGIN_FIELDS, _fingerprint
    from tickpipe.processors.records import Record

    full = Record("trade", provider="p", symbol="S", price="1.5", event_time=5, recv_time=9, conn="c", session="s",
                  frame_seq=3, frame_index=0)
    mark = Record("sequence_mark", symbol="S", sequence=4, recv_time=9)   # no conn, session, frame_seq, index
    for record in (full, mark):
        body = {k: v for k, v in record.items() if k not in ORIGIN_FIELDS}
        assert _fingerprint(record) == zlib.crc32(orjson.dumps(body, option=orjson.OPT_SORT_KEYS))
        assert set(record) > set(body)   # the record itself is untouched
    assert _fingerprint(full) == _fingerprint(Record("trade", {**full, "recv_time": 10, "conn": "d", "frame_seq": 4}))
