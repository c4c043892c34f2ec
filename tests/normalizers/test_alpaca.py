"""Alpaca normalizer: golden frames from the protocol reference and from the emulator (JSON and
msgpack), exact decimals, and malformed frames to the dead-letter queue."""

from __future__ import annotations

import json

import msgpack
import pytest

from tests.emulators.alpaca_support import Client, journal_lines, running
from tests.normalizers.support import Feed
from tickpipe.envelope import CT_JSON, CT_MSGPACK, RawRecord

COMMON = {"provider": "alpaca", "recv_time": 1_700_000_000_000_000_000, "conn": "c1", "session": "s1"}


def pick(rec: dict, *names: str) -> tuple:
    return tuple(rec.get(n) for n in names)


def test_stock_trades_and_quote_from_the_reference():
    frame = ('[{"T":"t","S":"AAPL","i":628,"x":"K","p":162.92,"s":3,"c":["@","F","T","I"],"z":"C",'
             '"t":"2023-04-06T11:54:26.838232225Z"},{"T":"t","S":"AAPL","i":75,"x":"Z","p":162.92,"s":3,'
             '"c":["@","F","T","I"],"z":"C","t":"2023-04-06T11:54:26.838562809Z"}]')
    first, second = Feed("alpaca").records(frame)
    assert first == {"type": "Trade", **COMMON, "symbol": "AAPL", "provider_symbol": "AAPL",
                     "event_time": 1680782066838232225, "frame_seq": 1, "frame_index": 0, "channel": "t",
                     "trade_id": "628", "price": "162.92", "size": "3", "exchange": "K",
                     "conditions": ["@", "F", "T", "I"], "tape": "C", "side": None}
    assert pick(second, "trade_id", "exchange", "frame_index") == ("75", "Z", 1)
    [q] = Feed("alpaca").records('[{"T":"q","S":"AMD","bx":"K","bp":91.95,"bs":2,"ax":"Q","ap":91.98,"as":1,"c":["R"],'
                         '"z":"C","t":"2023-04-06T11:54:21.670905508Z"}]')
    assert pick(q, "type", "bid_price", "bid_size", "ask_price", "ask_size", "bid_exchange", "ask_exchange",
                "conditions", "tape", "event_time") == ("Quote", "91.95", "2", "91.98", "1", "K", "Q", ["R"], "C",
                                                        1680782061670905508)


def test_bars_statuses_corrections_and_cancels_from_the_reference():
    feed = Feed("alpaca")
    [b] = feed.records('[{"T":"b","S":"FAKEPACA","o":132.65,"h":136,"l":132.12,"c":134.65,"v":205,'
                       '"t":"2024-07-24T07:56:00Z","n":16,"vw":133.7}]')
    assert pick(b, "interval", "bar_status", "start_time", "open", "high", "low", "close", "volume",
                "trade_count", "vwap") == ("1m", "final", 1721807760000000000, "132.65", "136", "132.12",
                                           "134.65", "205", 16, "133.7")
    [d] = feed.records('[{"T":"d","S":"SPY","o":388.985,"h":389.13,"l":388.975,"c":389.12,"v":749378,'
                       '"t":"2021-02-16T04:00:00Z"}]')
    assert pick(d, "interval", "bar_status", "trade_count", "vwap", "open") == ("1d", "partial", None, None, "388.985")
    [s] = feed.records('[{"T":"s","S":"AAPL","sc":"H","sm":"Trading Halt","rc":"T12","rm":"Trading Halted; '
                       'For information requested by NASDAQ","t":"2021-02-22T19:15:00Z","z":"C"}]')
    assert pick(s, "type", "status", "status_message", "reason_code", "tape") == ("TradingStatus", "H", "Trading Halt", "T12", "C")
    [luld] = feed.records('[{"T":"l","S":"IONM","u":3.24,"d":2.65,"i":"B","t":"2023-04-06T13:34:45.565004401Z","z":"C"}]')
    assert pick(luld, "status", "limit_up", "limit_down", "indicator") == ("luld", "3.24", "2.65", "B")
    [imb] = feed.records('[{"T":"i","S":"INAQU","p":9.12,"z":"C","t":"2024-12-13T19:58:09.242138635Z"}]')
    assert pick(imb, "status", "price") == ("imbalance", "9.12")
    [c] = feed.records('[{"T":"c","S":"EEM","x":"M","oi":52983525033527,"op":39.1582,"os":440000,"oc":[" ","7"],'
                       '"ci":52983525034326,"cp":39.1809,"cs":440000,"cc":[" ","7"],"z":"B",'
                       '"t":"2023-04-06T14:25:06.542305024Z"}]')
    assert pick(c, "action", "trade_id", "price", "ref_trade_id", "ref_price", "ref_size", "ref_conditions") == \
        ("correction", "52983525034326", "39.1809", "52983525033527", "39.1582", "440000", [" ", "7"])
    [x] = feed.records('[{"T":"x","S":"GOOGL","i":465,"x":"D","p":105.31,"s":300,"a":"C","z":"C",'
                       '"t":"2023-04-06T13:15:42.83540958Z"}]')
    assert pick(x, "action", "trade_id", "ref_trade_id", "price", "event_time") == \
        ("cancel", None, "465", "105.31", 1680786942835409580)


def test_crypto_frames_from_the_reference():
    feed = Feed("alpaca")
    [t] = feed.records('[{"T":"t","S":"AVAX/USD","p":47.299,"s":29.205707815,"t":"2024-03-12T10:27:48.858228144Z",'
                       '"i":3447222699101865076,"tks":"S"}]')
    assert pick(t, "symbol", "provider_symbol", "price", "size", "trade_id", "side", "exchange") == \
        ("AVAX-USD", "AVAX/USD", "47.299", "29.205707815", "3447222699101865076", "sell", None)
    [book] = feed.records('[{"T":"o","S":"BTC/USD","t":"2024-03-12T10:38:50.79613221Z","b":[{"p":71859.53,'
                          '"s":0.27994},{"p":71849.4,"s":0.553986}],"a":[{"p":71939.7,"s":0.83953}],"r":true}]')
    assert book["snapshot"] is True and book["bids"][1] == {"price": "71849.4", "size": "0.553986"}
    [upd] = feed.records('[{"T":"o","S":"CRV/USD","t":"2024-03-12T10:39:40.501160019Z","b":[{"p":0.7904,"s":0}],"a":[]}]')
    assert upd["snapshot"] is False and upd["bids"][0]["size"] == "0" and upd["asks"] == []


def test_legacy_v1_frames():
    feed = Feed("alpaca")
    [t] = feed.records('{"stream":"T.SPY","data":{"ev":"T","T":"SPY","i":117537207,"x":2,"p":283.63,"s":2,'
                       '"t":1587407015152775000,"c":[14,37,41],"z":2}}')
    assert pick(t, "channel", "trade_id", "price", "exchange", "conditions", "tape", "event_time") == \
        ("T", "117537207", "283.63", "2", ["14", "37", "41"], "B", 1587407015152775000)
    [q] = feed.records('{"stream":"Q.SPY","data":{"ev":"Q","T":"SPY","x":17,"p":283.35,"s":1,"X":17,"P":283.4,'
                       '"S":1,"c":[1],"t":1587407015152775000}}')
    assert pick(q, "bid_price", "ask_price", "ask_size", "bid_exchange") == ("283.35", "283.4", "1", "17")
    [am] = feed.records('{"stream":"AM.SPY","data":{"ev":"AM","T":"SPY","v":48526,"av":9663586,"op":282.6,'
                        '"vw":282.0362,"o":282.13,"c":281.94,"h":282.14,"l":281.86,"a":284.4963,"s":1587409020000,'
                        '"e":1587409080000}}')
    assert pick(am, "start_time", "end_time", "vwap", "fields") == (
        1587409020000000000, 1587409080000000000, "282.0362", {"av": "9663586", "op": "282.6", "a": "284.4963"})
    assert feed.records('{"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}') == []


def test_control_frames_are_ignored_and_msgpack_precision():
    feed = Feed("alpaca")
    for frame in ('[{"T":"success","msg":"connected"}]', '[{"T":"error","code":405,"msg":"symbol limit exceeded"}]',
                  '[{"T":"subscription","trades":["AAPL"],"quotes":[]}]'):
        assert feed.records(frame) == []
    packed = msgpack.packb([{"T": "t", "S": "BTC/USD", "p": 0.1, "s": 1e-08, "t": msgpack.Timestamp(1710239268, 858228144),
                             "i": 2**62, "tks": "B"}])
    [t] = feed.records(packed, CT_MSGPACK)
    assert pick(t, "price", "size", "trade_id", "event_time", "side") == ("0.1", "1e-08", str(2**62), 1710239268858228144, "buy")


@pytest.mark.parametrize("frame,content_type,kind,reason", [
    (b"not json at all", CT_JSON, "parse", "not JSON"),
    (b"\xc1\x00", CT_MSGPACK, "parse", "MessagePack"),
    ('{"a": 1}', CT_JSON, "validation", "neither"),
    ('[{"T":"t","S":"AAPL","i":1}]', CT_JSON, "validation", "missing field"),
    ('[{"T":"zz","S":"AAPL"}]', CT_JSON, "validation", "unknown message type"),
    ('[{"T":"t","S":"AAPL","i":1,"p":"abc","s":1,"t":"2023-04-06T11:54:26Z"}]', CT_JSON, "validation", "p:"),
    ('[{"T":"q","S":"AAPL","bp":1,"bs":1,"ap":2,"as":1,"t":"yesterday"}]', CT_JSON, "validation", "RFC 3339"),
    ('[7]', CT_JSON, "validation", "not an object"),
    ('{"stream":"T.SPY","data":{"ev":"Z","T":"SPY"}}', CT_JSON, "validation", "unknown v1 event"),
])
def test_malformed_frames_are_dead_lettered(frame, content_type, kind, reason):
    result = Feed("alpaca")(frame, content_type)
    assert result.records == [] and result.dead_letter is not None
    assert result.dead_letter["error_kind"] == kind and reason in result.dead_letter["reason"]


@pytest.mark.parametrize("use_msgpack,path,channels", [
    (False, "/v2/iex", dict(trades=["AAPL"], quotes=["AAPL"], bars=["AAPL"], updatedBars=["AAPL"],
                            dailyBars=["AAPL"], statuses=["*"], lulds=["*"], imbalances=["*"])),
    (True, "/v1beta3/crypto/us", dict(trades=["BTC/USD"], quotes=["BTC/USD"], orderbooks=["BTC/USD"], bars=["BTC/USD"])),
])
async def test_every_emulator_frame_normalizes(tmp_path, use_msgpack, path, channels):
    feed, kinds, trades = Feed("alpaca"), set(), []
    async with running(rate=500, bar_interval_s=0.1, journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, path, use_msgpack=use_msgpack)
        await c.login()
        await c.subscribe(**channels)
        for _ in range(150):
            raw = await c.ws.recv()
            msgs = msgpack.unpackb(raw) if use_msgpack else json.loads(raw)
            data = [m for m in msgs if m["T"] not in ("success", "subscription", "error")]
            records = feed.records(raw if isinstance(raw, bytes) else raw.encode(), CT_MSGPACK if use_msgpack else CT_JSON)
            assert len(records) == len(data)
            for m, rec in zip(data, records):
                kinds.add(m["T"])
                if m["T"] == "t":
                    assert float(rec["price"]) == m["p"] and float(rec["size"]) == m["s"]
                    trades.append((rec["provider_symbol"], int(rec["trade_id"]), rec["event_time"]))
        await c.close()
        sent = [(e["ids"]["instrument"], e["ids"]["trade_id"], e["ids"]["event_ns"]) for e in journal_lines(emu)
                if e["event"] == "sent" and e["ids"]["kind"] == "trade"]
    assert {"t", "q", "b"} | ({"o"} if use_msgpack else {"d"}) <= kinds
    assert trades and trades == sent[:len(trades)], "ids and event times are the emulator's"


async def test_rare_emulator_messages_normalize():
    """Statuses, LULDs, imbalances, corrections and cancels are rare: stream fast until each was seen."""
    feed, kinds = Feed("alpaca"), set()
    async with running(rate=0) as emu:
        c = await Client.open(emu, "/v2/sip", use_msgpack=True)
        await c.login()
        await c.subscribe(trades=["*"], statuses=["*"], lulds=["*"], imbalances=["*"])
        for _ in range(20_000):
            raw = await c.ws.recv()
            msgs = msgpack.unpackb(raw)
            if {"s", "l", "i", "c", "x"} & {m["T"] for m in msgs}:
                records = feed.records(raw, CT_MSGPACK)
                assert len(records) == len(msgs)
                kinds.update(m["T"] for m in msgs)
            if {"s", "l", "i", "c", "x"} <= kinds:
                break
        await c.close()
    assert {"s", "l", "i", "c", "x"} <= kinds


async def test_integrity_stage_finds_exactly_the_journaled_trade_faults(tmp_path):
    """Emulator faults -> normalizer -> integrity stage: every alert is a journaled fault and back."""
    from tickpipe.processors.integrity.stage import IntegrityStage

    faults = "drop=0.05,duplicate=0.05,reorder=0.05"
    async with running(rate=2000, seed=11, faults=faults, journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AAPL", "MSFT"])
        frames = []
        while sum(f.count('"T":"t"') for f in frames) < 600:
            frames.append(await c.ws.recv())
        await c.close()
        lines = journal_lines(emu)
    feed, stage, alerts, seen = Feed("alpaca"), IntegrityStage("alpaca"), [], {}
    for i, frame in enumerate(frames):
        raw = RawRecord(provider="alpaca", conn="c1", session="s1", seq=i + 1, recv_ns=10**18 + i * 1_000_000,
                        payload=frame.encode())
        result = feed.pipe.handle_raw(raw)
        assert result.dead_letter is None
        for r in result.records:
            if r.get("action", "new") == "new":
                seen.setdefault(r["provider_symbol"], set()).add(int(r["trade_id"]))
        alerts += stage.on_frame(raw, result.records, result.marks).alerts
    alerts += stage.close().alerts

    def found(kind: str) -> set:
        return {(a["provider_symbol"], i) for a in alerts if a["kind"] == kind and a["counter"] == "trade_id"
                for i in range(a["first_missing"], a["last_missing"] + 1)}

    def injected(fault: str) -> set:
        """Faults a consumer can see: inside the received id range (a copy comes in the same frame)."""
        hits = {(e["ids"][0]["instrument"], e["ids"][0]["trade_id"]) for e in lines if e.get("fault") == fault}
        return {(s, i) for s, i in hits if min(seen[s]) < i <= max(seen[s])}

    assert injected("drop") and found("GAP") == injected("drop")
    assert injected("duplicate") and found("DUPLICATE") == injected("duplicate")
    assert injected("reorder") and found("OUT_OF_ORDER") == injected("reorder")
