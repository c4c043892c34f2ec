"""Coinbase Advanced Trade normalizer: golden frames from the protocol reference and from the emulator,
exact decimals, sequence marks, malformed frames to the DLQ, and drops found exactly by the integrity stage."""

from __future__ import annotations

import json

import pytest

from tests.emulators.coinbase_helpers import connect, emulator, recv, sub
from tests.normalizers.support import Feed
from tickpipe.avro import AvroReader
from tickpipe.emulators.journal import read_journal
from tickpipe.processors.integrity.stage import IntegrityStage

RECV = 1_700_000_000_000_000_000
COMMON = {"provider": "coinbase", "conn": "c1", "session": "s1", "recv_time": RECV}


def test_reference_l2_snapshot_and_update_are_book_records():
    feed = Feed("coinbase")
    snapshot = ('{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:50.714964855Z","sequence_num":0,'
                '"events":[{"type":"snapshot","product_id":"BTC-USD","updates":[{"side":"bid","event_time":"1970-01-01T00:00:00Z",'
                '"price_level":"21921.73","new_quantity":"0.06317902"},{"side":"offer","event_time":"1970-01-01T00:00:00Z",'
                '"price_level":"21922.11","new_quantity":"0.02"}]}]}')
    [book] = feed.records(snapshot)
    assert book == {"type": "BookUpdate", **COMMON, "symbol": "BTC-USD", "provider_symbol": "BTC-USD",
                    "event_time": 1675974770714964855, "frame_seq": 1, "frame_index": 0, "channel": "l2_data",
                    "sequence": 0, "sequence_scope": "connection", "snapshot": True,
                    "bids": [{"price": "21921.73", "size": "0.06317902"}], "asks": [{"price": "21922.11", "size": "0.02"}]}
    update = ('{"channel":"l2_data","client_id":"","timestamp":"2023-02-09T20:32:51.0021Z","sequence_num":7,"events":[{"type":"update",'
              '"product_id":"BTC-USD","updates":[{"side":"offer","event_time":"2023-02-09T20:32:50.9991Z","price_level":"21922.11","new_quantity":"0"}]}]}')
    [book] = feed.records(update)
    assert (book["snapshot"], book["bids"], book["event_time"], book["sequence"]) == (False, [], 1675974770999100000, 7)
    assert book["asks"] == [{"price": "21922.11", "size": "0"}]


def test_reference_market_trades_oldest_first_with_taker_side():
    frame = {"channel": "market_trades", "timestamp": "2026-09-05T22:11:02.114Z", "sequence_num": 57, "events": [
        {"type": "update", "trades": [
            {"trade_id": "812734456", "product_id": "BTC-USD", "price": "79881.03", "size": "0.5", "side": "BUY", "time": "2026-09-05T22:11:01.999731Z"},
            {"trade_id": "812734455", "product_id": "BTC-USD", "price": "79881.02", "size": "0.00012", "side": "SELL", "time": "2026-09-05T22:11:01.998731Z"}]}]}
    first, second = Feed("coinbase").records(frame)
    assert (first["trade_id"], first["price"], first["size"], first["side"]) == ("812734455", "79881.02", "0.00012", "buy")
    assert (second["trade_id"], second["side"], second["frame_index"]) == ("812734456", "sell", 1)
    assert first["event_time"] == 1788646261998731000 and first["action"] == "new" and first["sequence"] == 57
    docs_sample = ('{"channel":"market_trades","client_id":"","timestamp":"2023-02-09T20:19:35.39625135Z","sequence_num":0,"events":'
                   '[{"type":"snapshot","trades":[{"trade_id":"000000000","product_id":"ETH-USD","price":"1260.01","size":"0.3",'
                   '"side":"BUY","time":"2019-08-14T20:42:27.265Z"}]}]}')
    [trade] = Feed("coinbase").records(docs_sample)
    assert (trade["trade_id"], trade["symbol"], trade["price"]) == ("000000000", "ETH-USD", "1260.01")


def test_reference_ticker_ticker_batch_candles_and_status():
    ticker = ('{"channel":"ticker","timestamp":"2026-09-05T21:52:10.940239371Z","sequence_num":91,"events":[{"type":"update","tickers":'
              '[{"type":"ticker","product_id":"BTC-PERP-INTX","price":"79914.6","volume_24_h":"14174.4213","low_24_h":"79445",'
              '"high_24_h":"80206","low_52_w":"57705.8","high_52_w":"126340.3","price_percent_chg_24_h":"0.27303411671707",'
              '"best_bid":"79914.5","best_ask":"79914.6","best_bid_quantity":"0.7944","best_ask_quantity":"0.7554"}]}]}')
    [l1] = Feed("coinbase").records(ticker)
    assert (l1["type"], l1["symbol"], l1["last_price"], l1["bid_price"], l1["ask_size"], l1["volume"]) == (
        "LevelOne", "BTC-PERP-INTX", "79914.6", "79914.5", "0.7554", "14174.4213")
    assert (l1["low_price"], l1["high_price"], l1["event_time"]) == ("79445", "80206", 1788645130940239371)
    assert l1["fields"] == {"low_52_w": "57705.8", "high_52_w": "126340.3", "price_percent_chg_24_h": "0.27303411671707"}
    batch = json.loads(ticker)
    batch["channel"] = "ticker_batch"
    for k in ("best_bid", "best_ask", "best_bid_quantity", "best_ask_quantity"):
        del batch["events"][0]["tickers"][0][k]
    [l1] = Feed("coinbase").records(batch)
    assert l1["channel"] == "ticker_batch" and "bid_price" not in l1 and l1["last_price"] == "79914.6"
    candles = ('{"channel":"candles","client_id":"","timestamp":"2023-06-09T20:19:35.39625135Z","sequence_num":0,"events":[{"type":"snapshot",'
               '"candles":[{"start":"1688998200","high":"1867.72","low":"1865.63","open":"1867.38","close":"1866.81","volume":"0.20269406","product_id":"ETH-USD"}]}]}')
    [bar] = Feed("coinbase").records(candles)
    assert (bar["type"], bar["interval"], bar["bar_status"], bar["start_time"]) == ("Bar", "5m", "partial", 1688998200_000_000_000)
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == ("1867.38", "1867.72", "1865.63", "1866.81", "0.20269406")
    status = ('{"channel":"status","client_id":"","timestamp":"2023-02-09T20:29:49.753424311Z","sequence_num":0,"events":[{"type":"snapshot",'
              '"products":[{"product_type":"SPOT","id":"BTC-USD","base_currency":"BTC","quote_currency":"USD","base_increment":"0.00000001",'
              '"quote_increment":"0.01","display_name":"BTC/USD","status":"online","status_message":"","min_market_funds":"1"}]}]}')
    [st] = Feed("coinbase").records(status)
    assert (st["type"], st["status_kind"], st["status"], st["status_message"]) == ("TradingStatus", "product_status", "online", None)
    assert st["fields"]["quote_increment"] == "0.01" and st["fields"]["product_type"] == "SPOT"


def test_control_frames_yield_no_records_but_mark_the_sequence():
    feed = Feed("coinbase")
    frames = [
        '{"channel":"subscriptions","timestamp":"2026-09-05T22:10:29.562097895Z","sequence_num":2,"events":[{"subscriptions":{"ticker":["BTC-PERP-INTX"]}}]}',
        '{"channel":"heartbeats","timestamp":"2026-09-05T22:10:30.260465255Z","sequence_num":4,"events":[{"current_time":"2026-09-05 22:10:30.25788961 +0000 UTC m=+139651.272674714","heartbeat_counter":139651}]}',
        '{"channel":"user","client_id":"","timestamp":"2023-02-09T20:33:57.609931463Z","sequence_num":5,"events":[{"type":"snapshot","orders":[],"positions":{}}]}',
        '{"channel":"brand_new_channel","timestamp":"2026-09-05T22:10:30Z","sequence_num":6,"events":[{"x":1}]}',
        '{"channel":"market_trades","timestamp":"2026-09-05T22:10:30Z","sequence_num":7,"events":[{"type":"snapshot","trades":[]}]}']
    for frame, seq in zip(frames, (2, 4, 5, 6, 7)):
        result = feed(frame)
        assert result.dead_letter is None and result.records == []
        assert [(m.scope, m.value) for m in result.marks] == [("connection", seq)]
    error = feed('{"type":"error","message":"authentication failure"}')
    assert error.dead_letter is None and error.records == [] and error.marks == []


@pytest.mark.parametrize("payload, reason", [
    (b"\x00\xff\xfe not json", "not JSON"),
    (b'{"truncated": [1, 2', "not JSON"),
    (b"null", "not a JSON object"),
    (b'{"channel":"ticker","events":[]}', "not a Coinbase envelope"),
    (b'{"channel":"ticker","timestamp":"2026-09-05T22:10:30Z","sequence_num":"1","events":[]}', "not a Coinbase envelope"),
    (b'{"channel":"l2_data","timestamp":"2026-09-05T22:10:30Z","sequence_num":1,"events":[{"type":"update","product_id":"BTC-USD",'
     b'"updates":[{"side":"ask","event_time":"2026-09-05T22:10:30Z","price_level":"1","new_quantity":"2"}]}]}', "unknown side"),
    (b'{"channel":"market_trades","timestamp":"2026-09-05T22:10:30Z","sequence_num":1,"events":[{"type":"update","trades":'
     b'[{"trade_id":"1","product_id":"BTC-USD","price":"abc","size":"1","side":"BUY","time":"2026-09-05T22:10:30Z"}]}]}', "not a decimal"),
    (b'{"channel":"ticker","timestamp":"yesterday","sequence_num":1,"events":[]}', "RFC 3339"),
    (b'{"channel":"candles","timestamp":"2026-09-05T22:10:30Z","sequence_num":1,"events":[{"type":"update","candles":[{"start":"x","product_id":"BTC-USD"}]}]}', "epoch"),
    (b'{"channel":"ticker","timestamp":"2026-09-05T22:10:30Z","sequence_num":1,"events":[{"type":"update"}]}', "tickers"),
])
def test_malformed_frames_go_to_the_dlq_with_a_clear_reason(payload, reason):
    result = Feed("coinbase")(payload)
    assert result.records == [] and result.dead_letter is not None
    assert reason in result.dead_letter["reason"] and result.dead_letter["payload"] == payload


def test_decimal_text_round_trips_exactly():
    prices = ["0.00000001", "123456789.123456789", "1e-8", "79914.60", "0"]
    frame = {"channel": "market_trades", "timestamp": "2026-09-05T22:11:02.114Z", "sequence_num": 1, "events": [
        {"type": "update", "trades": [{"trade_id": str(i), "product_id": "BTC-USD", "price": p, "size": p, "side": "BUY",
                                       "time": "2026-09-05T22:11:01.998731Z"} for i, p in enumerate(prices, 1)]}]}
    result = Feed("coinbase")(frame)
    decoded = [AvroReader().decode(r.encoded) for r in result.records]   # through the Avro bytes and back
    assert [(r["price"], r["size"]) for r in decoded] == [(p, p) for p in prices]


async def test_emulator_frames_normalize_and_drops_are_found_exactly(tmp_path):
    path = tmp_path / "journal.jsonl"
    async with emulator("drop=0.05", rate=200, seed=5, journal=path, ticker_batch_s=0.2, status_every_s=0.2) as emu:
        async with connect(emu) as ws:
            for ch in ("heartbeats", "level2", "market_trades", "ticker", "ticker_batch", "candles", "status"):
                await ws.send(sub(ch, ["BTC-USD", "ETH-USD"]))
            frames = [await recv(ws) for _ in range(600)]
    feed, stage, kinds, gaps = Feed("coinbase"), IntegrityStage("coinbase"), set(), []
    for i, frame in enumerate(frames):
        raw = feed.raw(frame, RECV + i * 1_000_000)   # 1 ms apart, so reorder windows expire
        result = feed.pipe.handle_raw(raw)
        assert result.dead_letter is None, result.dead_letter["reason"]
        kinds |= {r.kind for r in result.records}
        gaps += [a for a in stage.on_frame(raw, result.records, result.marks).alerts if a["kind"] == "GAP"]
    gaps += [a for a in stage.close().alerts if a["kind"] == "GAP"]
    assert kinds == {"book", "trade", "level1", "bar", "status"}
    last = frames[-1]["sequence_num"]
    dropped = sorted(e["ids"][0]["seq"] for e in read_journal(str(path)) if e.get("fault") == "drop" and e["ids"][0]["seq"] < last)
    found = sorted(s for a in gaps if a["scope"] == "connection" for s in range(a["first_missing"], a["last_missing"] + 1))
    assert dropped and found == dropped
    missing_trades = {(a["provider_symbol"], t) for a in gaps if a["counter"] == "trade_id"
                      for t in range(a["first_missing"], a["last_missing"] + 1)}
    newest = {}   # instrument -> the highest trade id received: drops after it are not detectable yet
    for f in frames:
        for t in (f["events"][0].get("trades", []) if f["channel"] == "market_trades" else []):
            newest[t["product_id"]] = max(newest.get(t["product_id"], 0), int(t["trade_id"]))
    dropped_trades = {(e["ids"][0]["instrument"], t) for e in read_journal(str(path))
                      if e.get("fault") == "drop" and e["ids"][0]["kind"] == "trades"
                      for t in e["ids"][0]["trade_ids"] if t < newest[e["ids"][0]["instrument"]]}
    assert dropped_trades and missing_trades == dropped_trades   # a lost market_trades frame is a trade-id gap too
