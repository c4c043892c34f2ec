"""Market Prophit normalizer: golden events from the reference and the emulator, precision, DLQ, integrity."""

from __future__ import annotations

import asyncio
import base64

import aiohttp
import pytest
import socketio

from tests.normalizers.support import RECV, Feed
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal
from tickpipe.emulators.marketprophit import MarketProphitEmulator, MarketProphitSettings
from tickpipe.envelope import CT_SOCKETIO
from tickpipe.processors.normalizers.convert import rfc3339_ns
from tickpipe.producers.marketprophit import recorder
from tickpipe.producers.transport import QueueTransport

MINUTE = 60 * 10**9


def feed() -> Feed:
    return Feed("marketprophit", CT_SOCKETIO)


def essentials(records: list[dict]) -> list[tuple]:
    return [(r["symbol"], r["metric"], r["event_time"], r.get("value"), r.get("sequence"), r.get("sequence_scope"))
            for r in records]


def test_generation_a_rest_body_as_a_res_array():
    frame = ('["res",[{"ts":"2014-08-12T20:42:00.000Z","ticker":"AAPL","average_sentiment":"-0.1019677038794017"},'
             '{"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"0.3671460543121055"},'
             '{"ts":"2014-08-12T20:40:00.000Z","ticker":"AAPL","average_sentiment":"0.1230545641077323"}]]')
    records = feed().records(frame)
    t0 = rfc3339_ns("2014-08-12T20:38:00.000Z")
    assert essentials(records) == [  # oldest first
        ("AAPL", "crowd-sentiment", t0, "0.3671460543121055", t0 // MINUTE, "instrument"),
        ("AAPL", "crowd-sentiment", t0 + 2 * MINUTE, "0.1230545641077323", t0 // MINUTE + 2, "instrument"),
        ("AAPL", "crowd-sentiment", t0 + 4 * MINUTE, "-0.1019677038794017", t0 // MINUTE + 4, "instrument")]
    assert records[0]["type"] == "Sentiment" and records[0]["channel"] == "crowd-sentiment"
    assert records[0]["values"] == {"average_sentiment": "0.3671460543121055"} and records[0]["frame_index"] == 0


def test_june_2014_json_numbers_keep_their_exact_text():
    [record] = feed().records('["res",[{"ts":"2014-06-20T14:00:00.000Z","ticker":"AAPL","average_sentiment":-0.0068080911819361}]]')
    assert record["value"] == "-0.0068080911819361"


def test_generation_b_data_events_from_the_reference():
    f = feed()
    crowd = f.records('["data",{"path":"crowd-sentiment","params":{},"timestamp":"2014-09-15T05:06:01.321Z","results":['
                      '{"ts":"2014-09-15T09:04:00.000Z","ticker":"CSCO","crowd_sentiment":"-0.0511838856522857"},'
                      '{"ts":"2014-09-15T09:04:00.000Z","ticker":"EURAUD","crowd_sentiment":"0.2983217845157061"}]}]')
    t = rfc3339_ns("2014-09-15T09:04:00.000Z")
    assert essentials(crowd) == [("CSCO", "crowd-sentiment", t, "-0.0511838856522857", t // MINUTE, "instrument"),
                                 ("EURAUD", "crowd-sentiment", t, "0.2983217845157061", t // MINUTE, "instrument")]
    [user] = f.records('["data",{"path":"user-sentiment","params":{},"timestamp":"2014-09-15T05:00:51.390Z","results":['
                       '{"ts":"2014-09-15T09:00:30.000Z","ticker":"JABA","user_id":"2243075472",'
                       '"sentiment":"0.067644772321236","user_score":"0.0348298733495368"}]}]')
    assert (user["metric"], user["value"], user["user_id"], user.get("sequence")) == \
        ("user-sentiment", "0.067644772321236", "2243075472", None)
    assert user["values"] == {"sentiment": "0.067644772321236", "user_score": "0.0348298733495368"}
    [chart] = f.records('["data",{"path":"crowd-sentiment-chart-data","params":{},"timestamp":"2014-09-15T04:58:00.404Z",'
                        '"results":[{"ts":"2014-09-15T08:56:00.000Z","ticker":"TSLA","crowd_sentiment":"0.6908441588708437",'
                        '"crowd_sentiment_moving_average":"0.0472162020321326","crowd_sentiment_z_score":"-1.4353067630458214",'
                        '"crowd_sentiment_z_score_moving_average":"0.0068693110284658","volume":"1","buzz":"0.7897299690128375"}]}]')
    assert chart["value"] == "0.6908441588708437" and len(chart["values"]) == 6 and chart["values"]["volume"] == "1"
    assert f.records('["data",{"path":"market-prophit-sentiment","params":{},"timestamp":"2014-09-15T05:03:05.458Z","results":[]}]') == []


def test_wrapper_res_with_params_and_err_events():
    f = feed()
    [record] = f.records('["res",{"path":"/real-time/tweet-volume","method":"get","params":{"ticker":"TSLA","n":2},'
                         '"timestamp":"2014-08-12T20:38:01.000Z","results":[{"ts":"2014-08-12T20:38:00.000Z","ticker":"TSLA","volume":"17"}]}]')
    assert (record["metric"], record["value"], record["params"]) == ("tweet-volume", "17", {"ticker": "TSLA", "n": "2"})
    assert f.records('["err",{"message":"Unknown endpoint: /real-time/x","request":{"path":"/real-time/x"}}]') == []


@pytest.mark.parametrize("payload, reason", [
    (b'["res","{\\"truncated\\": [1, 2"]', "neither an array nor an object"),
    (b"42[\"res\",[]]", "not JSON"),
    (b'{"event":"res"}', "not a socket.io event"),
    (b'["tick",[]]', "unknown event 'tick'"),
    (b'["res",[{"ticker":"AAPL","average_sentiment":"0.1"}]]', "ts"),
    (b'["res",[{"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","average_sentiment":"abc"}]]', "average_sentiment"),
    (b'["res",[{"ts":"2014-08-12T20:38:00.000Z","ticker":"AAPL","mood":"0.1"}]]', "cannot tell which stream"),
    (b'["data",{"path":"crowd-sentiment","results":"x"}]', "lacks a results array"),
    (b'["res",["x"]]', "not an object"),
])
def test_malformed_events_go_to_the_dead_letter_topic(payload, reason):
    assert reason in feed().dead_letter(payload)


GEN_A = [{"path": "/real-time/crowd-sentiment", "method": "get", "params": {"ticker": "AAPL"}},
         {"path": "/real-time/market-prophit-sentiment", "method": "get", "params": {"ticker": "TSLA"}}]
GEN_B = [{"path": "crowd-sentiment", "params": {}}, {"path": "market-prophit-sentiment", "params": {}}]


async def recorded_events(tmp_path, faults: str, n: int, requests=GEN_A, **settings) -> tuple[list[str], list[dict]]:
    """What the producer would record: the adapter's own recorder on a python-socketio client."""
    path = tmp_path / "j.jsonl"
    options = EmulatorOptions(rate=400, seed=4, faults=FaultPlan.parse(faults), journal=str(path),
                              credentials=MarketProphitSettings(**settings))
    async with MarketProphitEmulator(options) as emu:
        transport, client = QueueTransport(), socketio.AsyncClient(reconnection=False)
        for event in ("res", "data"):
            client.on(event, recorder(event, transport))
        await client.connect(emu.http_url("") + f"?token={await _token(emu)}")
        for request in requests:
            assert await client.call("subscribe", request) is None
        frames = [await asyncio.wait_for(transport.recv(), 5) for _ in range(n)]
        await client.disconnect()
    return frames, read_journal(str(path))


async def _token(emu) -> str:
    basic = base64.b64encode(b"sk_live_" + b"a" * 24 + b":").decode()
    async with aiohttp.ClientSession() as http:
        async with http.post(emu.http_url("/jwt"), headers={"Authorization": f"Basic {basic}"}) as resp:
            return (await resp.json())["token"]


@pytest.mark.parametrize("shape", ["array", "wrapper"])
async def test_every_emulator_event_normalizes_to_the_journaled_records(tmp_path, shape):
    frames, journal = await recorded_events(tmp_path, "", 200, res_shape=shape)
    f = feed()
    records = [r for frame in frames for r in f.records(frame)]
    sent = [(e["ids"]["ticker"], rfc3339_ns(e["ids"]["ts"])) for e in journal if e["event"] == "sent"]
    assert [(r["provider_symbol"], r["event_time"]) for r in records] == sent[:200]
    assert {r["metric"] for r in records} == {"crowd-sentiment", "market-prophit-sentiment"}


@pytest.mark.parametrize("requests", [GEN_A, GEN_B], ids=["generation_a", "generation_b"])
async def test_integrity_stage_finds_exactly_the_journaled_faults(tmp_path, requests):
    """Emulator faults -> recorded events -> normalizer -> integrity stage, scored against the journal."""
    from tickpipe.processors.integrity.stage import IntegrityStage

    frames, journal = await recorded_events(tmp_path, "drop=0.05,duplicate=0.05,reorder=0.05,malformed=0.02", 800,
                                            requests)
    f, stage, alerts, seen, dead = feed(), IntegrityStage("marketprophit"), [], {}, 0
    for i, frame in enumerate(frames):
        raw = f.raw(frame, RECV + i * 1_000_000)
        result = f.pipe.handle_raw(raw)
        dead += result.dead_letter is not None
        for r in result.records:
            seen.setdefault((r["channel"], r["provider_symbol"]), set()).add(r["sequence"])
        alerts += stage.on_frame(raw, result.records, result.marks).alerts
    alerts += stage.close().alerts
    cadence = {"crowd-sentiment": 60, "market-prophit-sentiment": 1}
    symbols = {ticker for _, ticker in seen}

    def found(kind: str) -> set:
        return {(a["channel"], a["provider_symbol"], i) for a in alerts if a["kind"] == kind and a["counter"] == "sequence"
                for i in range(a["first_missing"], a["last_missing"] + 1)}

    def injected(fault: str) -> set:
        hits = {(metric, ticker, rfc3339_ns(i["ts"]) // (cadence[metric] * 10**9))
                for e in journal if e.get("fault") == fault for i in e["ids"][:1]
                for metric in [i["path"].rsplit("/", 1)[-1]] for ticker in (symbols if i["ticker"] == "*" else [i["ticker"]])}
        return {(m, t, q) for m, t, q in hits if min(seen[m, t]) <= q <= max(seen[m, t])}  # a late first value is caught too

    assert injected("drop") and found("GAP") == injected("drop")
    assert injected("duplicate") and found("DUPLICATE") == injected("duplicate")
    assert injected("reorder") and found("OUT_OF_ORDER") == injected("reorder")
    assert dead > 0
