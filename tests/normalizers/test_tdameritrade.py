"""TD Ameritrade / Schwab normalizers: golden frames from the protocol reference and from the
emulators, sparse level-one merging, exact decimals, and malformed frames to the DLQ."""

from __future__ import annotations

import json

import pytest

from tests.emulators.streamer_client import StreamerClient, data_records
from tests.normalizers.support import Feed
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.tdameritrade import SchwabEmulator, StreamerEmulatorSettings, TDAmeritradeEmulator
from tickpipe.envelope import RawRecord


COMMON = {"conn": "c1", "session": "s1", "recv_time": 1_700_000_000_000_000_000}


def test_schwab_chart_equity_capture_is_a_bar_with_sequence_field_1():
    frame = ('{"data":[{"service":"CHART_EQUITY","timestamp":1715908546054,"command":"SUBS","content":[{"seq":0,'
             '"key":"MSFT","1":779,"2":421.65,"3":421.79,"4":421.65,"5":421.755,"6":26.0,"7":1715903940000,"8":19859}]}]}')
    [bar] = Feed("schwab").records(frame)
    assert bar == {"type": "Bar", "provider": "schwab", "symbol": "MSFT", "provider_symbol": "MSFT",
                   "event_time": 1715903940000_000_000, **COMMON, "frame_seq": 1, "frame_index": 0,
                   "channel": "CHART_EQUITY", "sequence": 0, "sequence_scope": "key",
                   "interval": "1m", "bar_status": "final", "start_time": 1715903940000_000_000,
                   "end_time": 1715904000000_000_000, "open": "421.65", "high": "421.79", "low": "421.65",
                   "close": "421.755", "volume": "26.0",
                   "fields": {"SEQUENCE": "779", "CHART_DAY": "19859"}}


def test_tda_chart_equity_capture_uses_tda_numbering():
    frame = {"data": [{"service": "CHART_EQUITY", "timestamp": 1590597641293, "command": "SUBS", "content": [
        {"seq": 985, "key": "MSFT", "1": 179.445, "2": 179.57, "3": 179.4299, "4": 179.52, "5": 53742.0,
         "6": 339, "7": 1590597540000, "8": 18409}]}]}
    [bar] = Feed("tdameritrade").records(frame)
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == ("179.445", "179.57", "179.4299", "179.52", "53742.0")
    assert bar["sequence"] == 985 and bar["fields"] == {"SEQUENCE": "339", "CHART_DAY": "18409"}


def test_chart_futures_and_timesale_captures():
    feed = Feed("tdameritrade")
    [bar] = feed.records('{"data":[{"service":"CHART_FUTURES","timestamp":1590597913941,"command":"SUBS","content":'
                         '[{"seq":0,"key":"/ES","1":1590597840000,"2":2996.25,"3":2997.25,"4":2995.25,"5":2997.25,"6":1501.0}]}]}')
    assert (bar["symbol"], bar["open"], bar["close"], bar["volume"]) == ("/ES", "2996.25", "2997.25", "1501.0")
    trades = feed.records('{"data":[{"service":"TIMESALE_EQUITY","timestamp":1590599684016,"command":"SUBS","content":'
                          '[{"seq":43,"key":"MSFT","1":1590599683785,"2":179.64,"3":100.0,"4":111626},'
                          '{"seq":0,"key":"GOOG","1":1590599678467,"2":1406.87,"3":100.0,"4":8698}]}]}')
    assert [(t["symbol"], t["price"], t["size"], t["trade_id"], t["sequence"], t["sequence_scope"], t["event_time"])
            for t in trades] == [("MSFT", "179.64", "100.0", "111626", 43, "key", 1590599683785_000_000),
                                 ("GOOG", "1406.87", "100.0", "8698", 0, "key", 1590599678467_000_000)]
    assert [t["frame_index"] for t in trades] == [0, 1] and trades[0]["channel"] == "TIMESALE_EQUITY"


def test_tda_quote_delta_and_sparse_merge():
    feed = Feed("tdameritrade")
    [first] = feed.records('{"data":[{"service":"QUOTE","timestamp":1674011807268,"command":"SUBS","content":[{"key":"AAPL",'
                           '"delayed":false,"assetMainType":"EQUITY","cusip":"037833100","1":135.45,"2":135.51,"3":135.45,'
                           '"4":4,"5":1,"8":63646627,"15":134.76,"48":"Normal","49":135.51,"51":1674003599054}]}]}')
    assert (first["bid_price"], first["ask_price"], first["last_price"], first["bid_size"], first["volume"]) == \
        ("135.45", "135.51", "135.45", "4", "63646627")
    assert first["close_price"] == "134.76" and first["mark_price"] == "135.51" and first["delayed"] is False
    assert first["trade_time"] == 1674003599054_000_000 and first["event_time"] == first["trade_time"]
    assert first["fields"] == {"assetMainType": "EQUITY", "cusip": "037833100", "SECURITY_STATUS": "Normal"}
    [second] = feed.records('{"data":[{"service":"QUOTE","timestamp":1674011808000,"command":"SUBS",'
                            '"content":[{"key":"AAPL","2":135.52,"50":1674011807999}]}]}')
    assert (second["bid_price"], second["ask_price"], second["close_price"]) == ("135.45", "135.52", "134.76")
    assert second["quote_time"] == 1674011807999_000_000 and second["event_time"] == second["quote_time"]
    other = Feed("tdameritrade")                        # another connection: no state carried over
    [alone] = other.records('{"data":[{"service":"QUOTE","timestamp":1,"command":"SUBS","content":[{"key":"AAPL","2":1.5}]}]}')
    assert alone["bid_price"] is None and alone["ask_price"] == "1.5"


def test_schwab_futures_capture_keeps_every_field():
    frame = ('{"data":[{"service":"LEVELONE_FUTURES","timestamp":1719002948000,"command":"SUBS","content":[{"key":"/ES",'
             '"delayed":false,"assetMainType":"FUTURE","1":5536.5,"2":5537,"3":5536.75,"4":61,"5":112,"6":"?","7":"?",'
             '"8":1250270,"9":2,"10":1719002947349,"11":1719002945728,"12":5550.75,"13":5519,"14":5544.5,"15":"@",'
             '"16":"E-mini S&P 500 Index Futures,Sep-2024,ETH","17":"?","18":5545,"19":-7.75,"20":-0.13977816,'
             '"21":"XCME","22":"Normal","23":1976987,"24":5536.75,"25":0.25,"26":12.5,"27":"/ES","28":"D,D",'
             '"29":"GLBX(de=1640;0=-17001600;1=r-17001600d-15551640;7=d-16401555)","30":false,"31":50,"32":true,'
             '"33":5544.5,"34":"/ESU24","35":1726804800000,"36":"Unknown","37":1719002947349,"38":1719002946189,'
             '"39":true,"40":1718928000000}]}]}')
    [l1] = Feed("schwab").records(frame)
    assert (l1["bid_price"], l1["ask_price"], l1["net_change"], l1["open_price"]) == ("5536.5", "5537", "-7.75", "5545")
    assert l1["quote_time"] == 1719002947349_000_000 and l1["trade_time"] == 1719002945728_000_000
    assert l1["fields"]["FUTURE_ACTIVE_SYMBOL"] == "/ESU24" and l1["fields"]["FUTURE_IS_TRADEABLE"] == "false"
    assert l1["fields"]["BID_ID"] == "?" and l1["fields"]["FUTURE_PERCENT_CHANGE"] == "-0.13977816"


def test_book_and_screener_captures():
    feed = Feed("tdameritrade")
    [book] = feed.records({"data": [{"service": "NASDAQ_BOOK", "timestamp": 1590532470149, "command": "SUBS", "content": [
        {"key": "MSFT", "1": 1590532442608,
         "2": [{"0": 181.77, "1": 100, "2": 1, "3": [{"0": "edgx", "1": 100, "2": 63150257}]},
               {"0": 181.75, "1": 545, "2": 2, "3": [{"0": "NSDQ", "1": 345, "2": 62685730}, {"0": "arcx", "1": 200, "2": 63242588}]}],
         "3": [{"0": 181.95, "1": 100, "2": 1, "3": [{"0": "arcx", "1": 100, "2": 63006734}]}]}]}]})
    assert book["snapshot"] is True and book["event_time"] == 1590532442608_000_000
    assert book["bids"][1] == {"price": "181.75", "size": "545", "orders": 2, "venues": [
        {"venue": "NSDQ", "size": "345", "time": 62685730}, {"venue": "arcx", "size": "200", "time": 63242588}]}
    assert book["asks"][0]["price"] == "181.95"
    [screener] = Feed("schwab").records(
        '{"data":[{"service":"SCREENER_EQUITY","timestamp":1718996308740,"command":"SUBS","content":[{"key":"NYSE_VOLUME_5",'
        '"1":1718996308700,"2":"VOLUME","3":5,"4":[{"symbol":"XLF","description":"SELECT STR FINANCIAL SELECT SPDR ETF",'
        '"lastPrice":41.305,"netChange":41.305,"netPercentChange":1,"marketShare":3.40228332,"totalVolume":51730877,'
        '"volume":1760031,"trades":644}]}]}]}')
    assert (screener["symbol"], screener["sort_field"], screener["window"]) == ("NYSE_VOLUME_5", "VOLUME", "5")
    assert screener["entries"] == [{"rank": 1, "symbol": "XLF", "provider_symbol": "XLF", "volume": "1760031",
                                    "percent_change": "1", "last_price": "41.305", "net_change": "41.305", "trades": 644,
                                    "description": "SELECT STR FINANCIAL SELECT SPDR ETF",
                                    "fields": {"marketShare": "3.40228332", "totalVolume": "51730877"}}]


def test_control_frames_are_ignored_without_records():
    feed = Feed("schwab")
    for frame in ('{"response":[{"service":"ADMIN","command":"LOGIN","requestid":"1","SchwabClientCorrelId":"x",'
                  '"timestamp":1669828276886,"content":{"code":0,"msg":"server=s0166bdv-1;status=PN"}}]}',
                  '{"notify":[{"heartbeat":"1674011769604"}]}',
                  '{"notify":[{"service":"ADMIN","timestamp":1674011775644,"content":{"code":30,"msg":"Stop streaming due to empty subscription"}}]}',
                  '{"data":[{"service":"ACCT_ACTIVITY","timestamp":1591754497594,"command":"SUBS","content":'
                  '[{"seq":1,"key":"k","1":"1001","2":"OrderEntryRequest","3":""}]}]}'):
        result = feed(frame)
        assert result.dead_letter is None and result.records == []


def test_precision_round_trip_keeps_the_decimal_text():
    literal = "12345678901234.123456789012"
    [trade] = Feed("tdameritrade").records('{"data":[{"service":"TIMESALE_FUTURES","timestamp":1,"command":"SUBS","content":'
                                           f'[{{"seq":1,"key":"/ES","1":1590600568524,"2":{literal},"3":0.1,"4":9236856}}]}}]}}')
    assert trade["price"] == literal and trade["size"] == "0.1"
    [l1] = Feed("schwab").records('{"data":[{"service":"LEVELONE_FOREX","timestamp":1,"command":"SUBS","content":'
                                  '[{"key":"EUR/USD","1":1.08001,"2":1.0800200000000001,"8":1700000000001}]}]}')
    assert (l1["symbol"], l1["bid_price"], l1["ask_price"]) == ("EUR-USD", "1.08001", "1.0800200000000001")


@pytest.mark.parametrize("frame,reason", [
    (b"\x00\xff not json", "not JSON"),
    ("[1,2]", "not a JSON object"),
    ('{"data":[{"service":"TIMESALE_EQUITY","timestamp":1,"command":"SUBS","content":[{"seq":1,"key":"A","1":1,"2":1.0}]}]}',
     "unknown schwab service"),
    ('{"data":[{"service":"CHART_EQUITY","timestamp":1,"content":[{"seq":0,"key":"A","1":1,"2":"x","3":1,"4":1,"5":1,"7":1}]}]}',
     "OPEN_PRICE"),
    ('{"data":[{"service":"LEVELONE_EQUITIES","timestamp":1,"content":[{"1":1.0}]}]}', "without a key"),
    ('{"data":{"service":"LEVELONE_EQUITIES"}}', "'data' must be a list"),
    ('{"hello":1}', "unknown message keys"),
    ('{"data":[{"service":"CHART_EQUITY","timestamp":1,"content":[{"seq":"zero","key":"A","2":1,"3":1,"4":1,"5":1,"7":1}]}]}',
     "seq is not an integer"),
])
def test_malformed_frames_are_dead_lettered_with_a_reason(frame, reason):
    result = Feed("schwab")(frame)
    assert result.records == [] and result.dead_letter is not None
    assert reason in result.dead_letter["reason"]


@pytest.mark.parametrize("cls", [TDAmeritradeEmulator, SchwabEmulator])
async def test_emulator_frames_normalize_without_dead_letters(cls):
    settings = StreamerEmulatorSettings(heartbeat_s=0.1, clock_speed=120)
    async with cls(EmulatorOptions(rate=300, credentials=settings)) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        l1 = "QUOTE" if cls is TDAmeritradeEmulator else "LEVELONE_EQUITIES"
        services = [l1, "CHART_EQUITY", "NASDAQ_BOOK", "LEVELONE_FUTURES", "LEVELONE_FOREX"]
        services += ["TIMESALE_EQUITY", "ACTIVES_NASDAQ"] if cls is TDAmeritradeEmulator else ["SCREENER_EQUITY"]
        for service in services:
            key = {"LEVELONE_FUTURES": "/ES", "LEVELONE_FOREX": "EUR/USD", "ACTIVES_NASDAQ": "NASDAQ-60",
                   "SCREENER_EQUITY": "NYSE_VOLUME_5"}.get(service, "AAPL")
            assert (await client.subscribe(service, key))["content"]["code"] == 0
        await client.collect(3, lambda fs: len({r["_service"] for r in data_records(client.frames)}) == len(services))
        await client.close()
    feed = Feed(emu.provider)
    kinds, last_l1 = {}, {}
    for frame in client.frames:
        for rec in feed.records(frame):
            kinds.setdefault(rec["channel"], set()).add(rec["type"])
            if rec["channel"] == l1:
                last_l1 = rec
    expected = {l1: "LevelOne", "CHART_EQUITY": "Bar", "NASDAQ_BOOK": "BookUpdate", "LEVELONE_FUTURES": "LevelOne",
                "LEVELONE_FOREX": "LevelOne", "TIMESALE_EQUITY": "Trade", "ACTIVES_NASDAQ": "MostActive",
                "SCREENER_EQUITY": "MostActive"}
    assert kinds == {s: {expected[s]} for s in services}
    raw = [r for r in data_records(client.frames, l1)]                  # the merged image equals the sum of deltas
    merged = {}
    for r in raw:
        merged.update(r)
    assert last_l1["bid_price"] == str(merged["1"]) and last_l1["ask_price"] == str(merged["2"])


async def test_integrity_stage_finds_exactly_the_journaled_seq_faults(tmp_path):
    """Emulator faults on per-key ``seq`` (timesales and charts) -> normalizer -> integrity stage."""
    from tickpipe.emulators.faults import FaultPlan
    from tickpipe.emulators.journal import read_journal
    from tickpipe.processors.integrity.stage import IntegrityStage

    path = str(tmp_path / "j.jsonl")
    options = EmulatorOptions(rate=1500, seed=4, journal=path, faults=FaultPlan.parse("drop=0.05,duplicate=0.05,reorder=0.05"),
                              credentials=StreamerEmulatorSettings(heartbeat_s=0.2, clock_speed=3000))
    async with TDAmeritradeEmulator(options) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        await client.subscribe("TIMESALE_EQUITY", "AAPL,MSFT", "0,1,2,3,4")
        await client.subscribe("CHART_EQUITY", "AAPL,MSFT")
        await client.collect(4, lambda fs: len(data_records(client.frames, "CHART_EQUITY")) >= 150
                             and len(data_records(client.frames, "TIMESALE_EQUITY")) >= 600)
        await client.close()
    received = len(data_records(client.frames))
    lines, sent = [], 0
    for line in read_journal(path):            # the journal up to the last message the client read
        lines.append(line)
        sent += line["event"] == "sent"
        if sent == received:
            break
    feed, stage, alerts, seen = Feed("tdameritrade"), IntegrityStage("tdameritrade"), [], {}
    for i, frame in enumerate(f for f in client.frames if isinstance(f, dict) and "garbage" not in f):
        raw = RawRecord(provider="tdameritrade", conn="c1", session="s1", seq=i + 1,
                        recv_ns=10**18 + i * 1_000_000, payload=json.dumps(frame).encode())
        result = feed.pipe.handle_raw(raw)
        assert result.dead_letter is None
        for r in result.records:
            if r.get("sequence") is not None:
                seen.setdefault((r["channel"], r["provider_symbol"]), set()).add(r["sequence"])
        alerts += stage.on_frame(raw, result.records, result.marks).alerts
    alerts += stage.close().alerts

    def found(kind: str) -> set:
        return {(a["channel"], a["provider_symbol"], i) for a in alerts if a["kind"] == kind and a["counter"] == "seq"
                for i in range(a["first_missing"], a["last_missing"] + 1)}

    def injected(fault: str) -> set:
        """Faults a per-key check can see: a drop inside the seen range, a swap of two records of one key."""
        hits = set()
        for e in lines:
            if e.get("fault") != fault or (fault == "reorder" and len({(i["service"], i["instrument"]) for i in e["ids"]}) > 1):
                continue
            c, s, q = e["ids"][0]["service"], e["ids"][0]["instrument"], e["ids"][0]["product_seq"]
            if (c, s) in seen and (min(seen[c, s]) < q < max(seen[c, s]) or fault != "drop"):
                hits.add((c, s, q))
        return hits

    chart_drops = [e for e in lines if e.get("fault") == "drop" and e["ids"][0]["service"] == "CHART_EQUITY"]
    assert {c for c, _, _ in injected("drop")} == {"TIMESALE_EQUITY", "CHART_EQUITY"}, (
        len(data_records(client.frames, "CHART_EQUITY")), chart_drops, {k: (min(v), max(v), len(v)) for k, v in seen.items()})
    assert found("GAP") == injected("drop")
    assert injected("duplicate") and found("DUPLICATE") == injected("duplicate")
    assert injected("reorder") and found("OUT_OF_ORDER") == injected("reorder")
