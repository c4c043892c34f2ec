"""Financefeast normalizer: golden frames from the reference and the emulator, precision, DLQ, integrity."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.normalizers.support import RECV, Feed
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.financefeast import FinancefeastEmulator
from tickpipe.emulators.journal import read_journal
from tickpipe.envelope import RawRecord
from tickpipe.processors.pipeline import Pipeline

ORIGIN = {"type": "Trade", "provider": "financefeast", "recv_time": RECV, "conn": "c1", "session": "s1",
          "frame_index": 0, "channel": "price"}


@pytest.mark.parametrize("frame, symbol, event_time, price, size", [
    ('{"type":"price","data":{"date":"2021-09-29T09:35:53","price":3.0424,"volume":181123,"symbol":"NZB.NZ"}}',
     "NZB.NZ", 1632908153_000_000_000, "3.0424", "181123"),
    ('{"type":"price","data":{"date":"2021-09-29T09:36:28","price":2.9491,"volume":408798,"symbol":"NZC.NZ"}}',
     "NZC.NZ", 1632908188_000_000_000, "2.9491", "408798"),
    ('{"type":"price","data":{"date":"2021-09-29T09:34:45","price":3.0,"volume":55000,"symbol":"WIA080.NZ"}}',
     "WIA080.NZ", 1632908085_000_000_000, "3.0", "55000"),
])
def test_reference_price_frames_become_exact_trades(frame, symbol, event_time, price, size):
    feed = Feed("financefeast")
    [record] = feed.records(frame)
    assert record == {**ORIGIN, "symbol": symbol, "provider_symbol": symbol, "event_time": event_time,
                      "frame_seq": 1, "price": price, "size": size}


def test_prices_keep_every_digit_a_float_would_lose():
    frame = '{"type":"price","data":{"date":"2021-09-29T09:35:53","price":0.30000000000000004441,"volume":1,"symbol":"A.NZ"}}'
    [record] = Feed("financefeast").records(frame)
    assert record["price"] == "0.30000000000000004441"


@pytest.mark.parametrize("frame", [
    '{"type":"authenticated","data":{"message":"You have been authenticated to the Stream api. Data stream now starts"}}',
    '{"type":"pong"}',
    '{"type":"error","data":{"message":"Token not authorised. Please check your token and try again"}}',
])
def test_control_frames_yield_no_records(frame):
    assert Feed("financefeast").records(frame) == []


@pytest.mark.parametrize("payload, reason", [
    (b"\x00\xff\xfe not json", "payload is not JSON"),
    (b'{"truncated": [1, 2', "payload is not JSON"),
    (b"[[[[", "payload is not JSON"),
    (b"null", "frame is not a JSON object"),
    (b'{"type":"quote","data":{}}', "unknown message type 'quote'"),
    (b'{"type":"price","data":"x"}', "price without a data object"),
    (b'{"type":"price","data":{"date":"2021-09-29T09:35:53","price":"abc","volume":1,"symbol":"A.NZ"}}', "price"),
    (b'{"type":"price","data":{"date":"yesterday","price":1.5,"volume":1,"symbol":"A.NZ"}}', "date"),
    (b'{"type":"price","data":{"date":"2021-09-29T09:35:53","price":1.5,"volume":1}}', "symbol"),
])
def test_malformed_frames_go_to_the_dead_letter_topic(payload, reason):
    assert reason in Feed("financefeast").dead_letter(payload)


def test_nz_local_variant_reads_the_date_as_new_zealand_time():
    pipe = Pipeline.for_provider("financefeast", overrides={
        "financefeast": "tickpipe.processors.normalizers.financefeast:normalize_nz_local"})
    raw = RawRecord(provider="financefeast", conn="c1", session="s1", seq=1, recv_ns=RECV,
                    payload=b'{"type":"price","data":{"date":"2021-09-29T09:35:53","price":1.5,"volume":2,"symbol":"A.NZ"}}')
    [record] = pipe.handle_raw(raw).records
    assert record["event_time"] == 1632908153_000_000_000 - 13 * 3600 * 10**9  # NZDT is UTC+13


async def emulator_frames(tmp_path, faults: str, count: int, seed: int = 3) -> tuple[list[str], list[dict]]:
    path = tmp_path / "j.jsonl"
    options = EmulatorOptions(rate=3000, seed=seed, faults=FaultPlan.parse(faults), journal=str(path))
    async with FinancefeastEmulator(options) as emu:
        async with websockets.connect(emu.ws_url("/ws"), close_timeout=0.5) as ws:
            await ws.send(json.dumps({"type": "authenticate", "data": {"token": "pk_" + "x" * 20}}))
            frames = [await asyncio.wait_for(ws.recv(), 5) for _ in range(count)]
    return frames, read_journal(str(path))


async def test_every_emulator_frame_normalizes_to_the_journaled_trades(tmp_path):
    frames, journal = await emulator_frames(tmp_path, "", 300)
    feed = Feed("financefeast")
    records = [r for f in frames for r in feed.records(f)]
    sent = [(e["ids"]["instrument"], e["ids"]["event_ns"]) for e in journal if e["event"] == "sent"]
    assert [(r["provider_symbol"], r["event_time"]) for r in records] == sent[:len(records)]
    assert len(records) == 299 and all(r["price"] and r["size"].isdigit() for r in records)


async def test_integrity_stage_finds_exactly_the_journaled_swaps_and_repeats(tmp_path):
    """Emulator faults -> normalizer -> integrity stage: every alert is a journaled fault and back."""
    from tickpipe.processors.integrity.stage import IntegrityStage

    frames, journal = await emulator_frames(tmp_path, "reorder=0.05,duplicate=0.05,malformed=0.02", 800, seed=8)
    feed, stage, alerts, received, dead = Feed("financefeast"), IntegrityStage("financefeast"), [], set(), 0
    for i, frame in enumerate(frames):
        raw = feed.raw(frame, RECV + i * 1_000_000)
        result = feed.pipe.handle_raw(raw)
        dead += result.dead_letter is not None
        received |= {(r["provider_symbol"], r["event_time"]) for r in result.records}
        alerts += stage.on_frame(raw, result.records, result.marks).alerts
    alerts += stage.close().alerts

    def found(kind: str) -> set:
        return {(a["provider_symbol"], a["event_time"]) for a in alerts if a["kind"] == kind}

    def injected(fault: str) -> set:
        hits = [e["ids"][0] for e in journal if e.get("fault") == fault]
        return {(i["instrument"], i["event_ns"]) for i in hits if (i["instrument"], i["event_ns"]) in received}

    assert injected("reorder") and found("OUT_OF_ORDER") == injected("reorder")
    assert injected("duplicate") and found("DUPLICATE") == injected("duplicate")
    assert not found("GAP")
    events = [e for e in journal if e["event"] == "sent" or e.get("fault") == "malformed"][:len(frames) - 1]
    assert dead == sum(e.get("fault") == "malformed" for e in events) > 0  # every garbage frame: a dead letter
