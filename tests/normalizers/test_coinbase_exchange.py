"""Coinbase Exchange normalizer: golden frames from the protocol reference and the emulator, exact
decimals, malformed frames to the DLQ, and full-channel drops found exactly by the integrity stage."""

from __future__ import annotations

import json

import pytest

from tests.emulators.coinbase_exchange_support import connect, emulator, signed
from tests.normalizers.support import RECV, through_integrity
from tests.normalizers.support import Feed as ProviderFeed
from tickpipe.avro import AvroReader
from tickpipe.emulators.journal import read_journal
from tickpipe.processors.integrity.stage import IntegrityStage

PROVIDER = "coinbase-exchange"
ORIGIN = {"provider": PROVIDER, "conn": "c1", "session": "s1", "recv_time": RECV}


def Feed() -> ProviderFeed:
    return ProviderFeed(PROVIDER)


def base(kind: str, symbol: str, **fields) -> dict:
    return {"type": kind, **ORIGIN, "symbol": symbol, "provider_symbol": symbol, "frame_index": 0, **fields}


def test_reference_level2_snapshot_and_updates_are_book_records():
    feed = Feed()
    [snap] = feed.records('{"type":"snapshot","product_id":"SKL-USD","asks":[["0.7910","450.0"],["0.7911","2635.4"]],'
                          '"bids":[["0.7901","450.0"],["0.7900","8267.3"]]}')
    assert snap == base("BookUpdate", "SKL-USD", event_time=None, frame_seq=1, channel="level2", snapshot=True,
                        bids=[{"price": "0.7901", "size": "450.0"}, {"price": "0.7900", "size": "8267.3"}],
                        asks=[{"price": "0.7910", "size": "450.0"}, {"price": "0.7911", "size": "2635.4"}])
    [upd] = feed.records('{"type":"l2update","product_id":"BTC-USD","changes":[["buy","80688.08","0.59153273"],'
                         '["sell","80745.16","0.20558981"]],"time":"2026-08-25T03:35:57.300000Z"}')
    assert (upd["snapshot"], upd["event_time"], upd["channel"]) == (False, 1787628957300000000, "level2")
    assert [(b["price"], b["size"]) for b in upd["bids"]] == [("80688.08", "0.59153273")]
    assert [(a["price"], a["size"]) for a in upd["asks"]] == [("80745.16", "0.20558981")]
    [zero] = feed.records('{"type":"l2update","product_id":"ETH-USD","changes":[["sell","1957.66","0.00000000"]],'
                          '"time":"0001-01-01T00:00:00.000000Z"}')
    assert zero["event_time"] is None and zero["asks"][0]["size"] == "0.00000000"


def test_reference_matches_ticker_and_last_match():
    feed = Feed()
    feed.records('{"type":"subscriptions","channels":[{"name":"matches","product_ids":["BTC-USD","BAND-GBP"],"account_ids":null}]}')
    [trade] = feed.records('{"type":"match","trade_id":1081862675,"maker_order_id":"f07e510f-4edf-469d-b844-4f670f1e93f1",'
                           '"taker_order_id":"e6f50944-3e2a-439e-ae49-308300ba8296","side":"sell","size":"0.00000001",'
                           '"price":"80691.53","product_id":"BTC-USD","sequence":134905860111,"time":"2026-08-25T03:35:57.198335Z"}')
    assert {k: trade[k] for k in ("type", "channel", "sequence", "sequence_scope", "trade_id", "price", "size", "side", "event_time")} == {
        "type": "Trade", "channel": "matches", "sequence": 134905860111, "sequence_scope": "instrument",
        "trade_id": "1081862675", "price": "80691.53", "size": "0.00000001", "side": "buy", "event_time": 1787628957198335000}
    [last] = feed.records('{"type":"last_match","trade_id":881613,"maker_order_id":"27fff20b-af29-4f45-8744-56dd1ef57dc0",'
                          '"taker_order_id":"1da6ce16-c8da-4732-9f71-6049f4c6aaf8","side":"sell","size":"0.04","price":"14.7775",'
                          '"product_id":"BAND-GBP","sequence":333938798,"time":"2021-04-17T16:43:30.244075Z"}')
    assert (last["type"], last["channel"], last["last_price"], last["last_size"], last["trade_id"], last["fields"]) == (
        "LevelOne", "last_match", "14.7775", "0.04", "881613", {"taker_side": "buy"})
    [tick] = feed.records('{"type":"ticker","sequence":137212619516,"product_id":"BTC-USD","price":"84737.58","open_24h":"84430.55",'
                          '"volume_24h":"1836.96781750","low_24h":"84400","high_24h":"85021.57","volume_30d":"175984.53012145",'
                          '"best_bid":"84737.58","best_bid_size":"0.19921154","best_ask":"84737.59","best_ask_size":"0.05223077",'
                          '"side":"sell","time":"2026-10-03T20:58:31.127510Z","trade_id":1102042811,"last_size":"0.00000025"}')
    assert {k: tick[k] for k in ("type", "channel", "sequence", "trade_id", "last_price", "last_size", "bid_price", "bid_size",
                                 "ask_price", "ask_size", "open_price", "high_price", "low_price", "volume")} == {
        "type": "LevelOne", "channel": "ticker", "sequence": 137212619516, "trade_id": "1102042811", "last_price": "84737.58",
        "last_size": "0.00000025", "bid_price": "84737.58", "bid_size": "0.19921154", "ask_price": "84737.59",
        "ask_size": "0.05223077", "open_price": "84430.55", "high_price": "85021.57", "low_price": "84400",
        "volume": "1836.96781750"}
    assert tick["fields"] == {"volume_30d": "175984.53012145", "taker_side": "sell"}
    [old] = feed.records('{"type":"ticker","sequence":5,"product_id":"BTC-USD","price":"400.00","best_bid":"399.99",'
                         '"best_ask":"400.01"}')                                  # a 2018 initial ticker: fields missing
    assert (old["last_price"], old["event_time"], old.get("trade_id"), old.get("last_size")) == ("400.00", None, None, None)


def test_full_channel_match_is_sequenced_and_order_events_mark_the_sequence():
    feed = Feed()
    ack = feed('{"type":"subscriptions","channels":[{"name":"full","product_ids":["ETH-USD"],"account_ids":null}]}')
    assert ack.records == [] and ack.dead_letter is None
    frames = [
        '{"type":"received","order_id":"c1ac921c-021f-446d-ad6f-06057a6c17f5","order_type":"limit","size":"0.01495400",'
        '"price":"309.41000000","side":"buy","product_id":"ETH-USD","sequence":617133250,"time":"2017-06-25T11:23:14.864000Z"}',
        '{"type":"open","side":"buy","price":"309.41000000","order_id":"c1ac921c-021f-446d-ad6f-06057a6c17f5",'
        '"remaining_size":"0.01495400","product_id":"ETH-USD","sequence":617133251,"time":"2017-06-25T11:23:14.864000Z"}',
        '{"price":"16556.88","old_size":"0.24076471","new_size":"0.04076471","order_id":"9675d63e-0432-413d-a3f3-f30d7df39614",'
        '"reason":"STP","type":"change","side":"buy","product_id":"ETH-USD","time":"2022-11-24T00:35:28.904847Z","sequence":617133252}',
        '{"type":"done","side":"sell","order_id":"1bd5ad13-96d0-4042-94a5-dd55cbdf4a27","reason":"canceled","product_id":"ETH-USD",'
        '"price":"2628.61000000","remaining_size":"4.97552900","sequence":617133253,"time":"2017-06-25T11:23:14.903000Z"}']
    for i, frame in enumerate(frames):
        result = feed(frame)
        assert result.records == [] and result.dead_letter is None
        assert [(m.scope, m.key, m.value, m.channel) for m in result.marks] == [("instrument", "ETH-USD", 617133250 + i, "full")]
    [trade] = feed.records({"type": "match", "trade_id": 1090000001, "sequence": 617133254, "maker_order_id": "3a9e",
                            "taker_order_id": "7d1e", "time": "2026-03-02T14:05:11.402201Z", "product_id": "ETH-USD",
                            "size": "0.02971000", "price": "84120.15", "side": "sell", "taker_fee_rate": "0.006"})
    assert (trade["channel"], trade["sequence"], trade["side"]) == ("full", 617133254, "buy")
    other = feed('{"type":"done","side":"sell","order_id":"x","reason":"filled","product_id":"BTC-USD","sequence":3,'
                 '"time":"2017-06-25T11:23:14.903000Z"}')
    assert other.marks == [] and other.records == []    # not on our full subscription: nothing to mark


def test_level3_schema_arrays_status_auction_rfq_and_control_frames():
    feed = Feed()
    assert feed('{"type":"level3","schema":{"open":["type","product_id","sequence","order_id","side","price","size","time"],'
                '"match":["type","product_id","sequence","maker_order_id","taker_order_id","price","size","time"]}}').records == []
    opened = feed('["open","BTC-USD","57560479456","12aca6e0-7400-418a-9e59-c0020a3bf8cc","buy","27268.09","0.02",'
                  '"2023-03-28T23:24:03.185394Z"]')
    assert [(m.key, m.value, m.channel) for m in opened.marks] == [("BTC-USD", 57560479456, "level3")]
    [trade] = feed.records('["match","BTC-USD","57560479457","12aca6e0","9d2f4c1e","27268.09","0.01","2023-03-28T23:24:03.201117Z"]')
    assert (trade["channel"], trade["sequence"], trade["price"], trade["size"], trade.get("side")) == ("level3", 57560479457, "27268.09", "0.01", None)
    [st] = feed.records('{"type":"status","products":[{"id":"BTC-USD","base_currency":"BTC","quote_currency":"USD",'
                        '"base_increment":"0.00000001","quote_increment":"0.01","display_name":"BTC-USD","status":"online",'
                        '"status_message":null,"min_market_funds":"1","post_only":false,"limit_only":false,"cancel_only":false,'
                        '"fx_stablecoin":false,"auction_mode":false}],"currencies":[{"id":"USD"}]}')
    assert (st["type"], st["status_kind"], st["status"], st["channel"]) == ("TradingStatus", "product_status", "online", "status")
    assert st["fields"]["quote_increment"] == "0.01" and st["fields"]["post_only"] == "false"
    [au] = feed.records('{"type":"auction","product_id":"LTC-USD","sequence":3262786978,"auction_state":"collection",'
                        '"best_bid_price":"333.98","best_bid_size":"4.39088265","best_ask_price":"333.99","best_ask_size":"25.23542881",'
                        '"open_price":"333.99","open_size":"0.193","can_open":"yes","timestamp":"2015-11-14T20:46:03.511254Z"}')
    assert (au["status_kind"], au["status"], au["price"], au["fields"]["can_open"], au["fields"]["sequence"]) == (
        "auction", "collection", "333.99", "yes", "3262786978")
    [rfq] = feed.records('{"type":"rfq_match","maker_order_id":"ac92","taker_order_id":"132f","time":"2026-03-02T14:10:27.028459Z",'
                         '"trade_id":138740126,"product_id":"BTC-USD","size":"5.23512","price":"84012.23","side":"BUY"}')
    assert (rfq["channel"], rfq["trade_id"], rfq["side"], rfq["price"]) == ("rfq_matches", "rfq:138740126", "buy", "84012.23")
    for frame in ('{"type":"heartbeat","last_trade_id":17393422,"product_id":"BTC-USD","sequence":3419023015,"time":"2017-06-25T11:23:14.838000Z"}',
                  '{"type":"error","message":"Failed to subscribe","reason":"ETH-USD is not a valid product"}',
                  '{"type":"activate","product_id":"BTC-USD","timestamp":"1772460371.299000","private":true}',
                  '{"type":"balance","account_id":"d50e","currency":"USD","holds":"1000.23","available":"102030.99"}',
                  '{"type":"brand_new_type","x":1}', '["brand_new_kind","BTC-USD"]'):
        result = feed(frame)
        assert result.records == [] and result.marks == [] and result.dead_letter is None, frame


@pytest.mark.parametrize("payload, reason", [
    (b"\x00\xff\xfe not json", "not JSON"),
    (b'{"truncated": [1, 2', "not JSON"),
    (b"null", "not a JSON object"),
    (b'{"no_type":1}', "not a JSON object with a type"),
    (b'{"type":"l2update","product_id":"BTC-USD","changes":[["bid","1","2"]],"time":"2026-08-25T03:35:57Z"}', "buy|sell"),
    (b'{"type":"match","trade_id":"7","side":"sell","size":"1","price":"1","product_id":"BTC-USD","sequence":1,"time":"2026-08-25T03:35:57Z"}', "trade_id"),
    (b'{"type":"match","trade_id":7,"side":"sell","size":"1","price":"abc","product_id":"BTC-USD","sequence":1,"time":"2026-08-25T03:35:57Z"}', "not a decimal"),
    (b'{"type":"snapshot","product_id":"BTC-USD","asks":[["1"]],"bids":[]}', "[price, size]"),
    (b'{"type":"ticker","product_id":"BTC-USD","price":"1","time":"yesterday"}', "RFC 3339"),
    (b'{"type":"open","product_id":"BTC-USD","sequence":"12"}', "integer sequence"),
    (b'["open","BTC-USD","x1"]', "values for"),
    (b'{"type":"match","side":"sell"}', "product_id"),
])
def test_malformed_frames_go_to_the_dlq_with_a_clear_reason(payload, reason):
    assert reason in Feed().dead_letter(payload)


def test_decimal_text_round_trips_exactly():
    feed = Feed()
    prices = ["0.00000001", "123456789.123456789", "1e-8", "79914.60", "0.00000000"]
    for i, p in enumerate(prices):
        feed({"type": "match", "trade_id": i, "maker_order_id": "m", "taker_order_id": "t", "side": "buy", "size": p,
              "price": p, "product_id": "BTC-USD", "sequence": 10 + i, "time": "2026-08-25T03:35:57.198335Z"})
    result = feed({"type": "l2update", "product_id": "BTC-USD", "changes": [["buy", p, p] for p in prices],
                   "time": "2026-08-25T03:35:57.3Z"})
    [book] = [AvroReader().decode(r.encoded) for r in result.records]      # through the Avro bytes and back
    assert [(b["price"], b["size"]) for b in book["bids"]] == [(p, p) for p in prices]


async def test_emulator_frames_normalize_and_full_channel_drops_are_found_exactly(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=300, faults="drop=0.05", journal=path) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"],
                             "channels": ["full", "heartbeat", "status", "level2_batch", "ticker"]}))
        for _ in range(900):
            await c.recv()
        frames = c.raw
    kinds, gaps = through_integrity(Feed(), frames, IntegrityStage(PROVIDER))
    assert kinds == {"book", "trade", "level1", "status"}
    events = [json.loads(f) for f in frames]
    last = {pid: max(e["sequence"] for e in events if e.get("product_id") == pid and e["type"] in ("open", "done", "match"))
            for pid in ("BTC-USD", "ETH-USD")}
    journal = read_journal(path)
    full_kinds = {"received", "open", "done", "match", "change"}
    dropped = sorted((e["ids"][0]["instrument"], e["ids"][0]["product_seq"]) for e in journal
                     if e.get("fault") == "drop" and e["ids"][0]["kind"] in full_kinds
                     and e["ids"][0]["product_seq"] < last[e["ids"][0]["instrument"]])
    found = sorted((a["provider_symbol"], s) for a in gaps if a["counter"] == "sequence" and a["channel"] == "full"
                   for s in range(a["first_missing"], a["last_missing"] + 1))
    assert dropped and found == dropped                 # every drop found, nothing else reported
    assert not [a for a in gaps if a["channel"] == "ticker"]    # ticker sequences jump by design: order-checked only


async def test_matches_and_level3_subscribers_drops_found_by_trade_id_and_level3_sequence(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=300, faults="drop=0.05", journal=path) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "channels": [{"name": "matches", "product_ids": ["BTC-USD", "ETH-USD"]},
                                                              {"name": "level3", "product_ids": ["ETH-USD"]}]}))
        for _ in range(900):
            await c.recv()
        frames = c.raw
    kinds, gaps = through_integrity(Feed(), frames, IntegrityStage(PROVIDER))
    assert kinds == {"trade", "level1"}                              # trades and the last_match images
    docs = [json.loads(f) for f in frames]
    newest = {pid: max(d["trade_id"] for d in docs if isinstance(d, dict) and d.get("type") == "match" and d["product_id"] == pid)
              for pid in ("BTC-USD", "ETH-USD")}
    last_l3 = max(int(d[2]) for d in docs if isinstance(d, list))
    journal = read_journal(path)
    dropped_trades = sorted((e["ids"][0]["instrument"], e["ids"][0]["trade_id"]) for e in journal if e.get("fault") == "drop"
                            and e["ids"][0]["kind"] == "match" and e["ids"][0]["trade_id"] < newest[e["ids"][0]["instrument"]])
    dropped_l3 = sorted(e["ids"][0]["product_seq"] for e in journal if e.get("fault") == "drop"
                        and e["ids"][0]["kind"].startswith("level3:") and e["ids"][0]["product_seq"] < last_l3)
    found_trades = sorted((a["provider_symbol"], t) for a in gaps if a["counter"] == "trade_id" and a["channel"] == "matches"
                          for t in range(a["first_missing"], a["last_missing"] + 1))
    found_l3 = sorted(s for a in gaps if a["counter"] == "sequence" and a["channel"] == "level3"
                      for s in range(a["first_missing"], a["last_missing"] + 1))
    assert dropped_trades and found_trades == dropped_trades
    assert dropped_l3 and found_l3 == dropped_l3
    assert {a["channel"] for a in gaps} == {"matches", "level3"}      # matches' sparse sequence raises nothing
