"""Coinbase Exchange emulator: every fault kind, checked against the ground-truth journal."""

from __future__ import annotations

import time

import aiohttp
import pytest
import websockets

from tests.emulators.coinbase_exchange_support import (
    connect, emulator, identity, journal_stream, of_type, settings, signed)
from tickpipe.emulators.journal import read_journal

FULL = {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["full"]}
TRADES = {"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["matches", "ticker"]}
def faults(journal: list[dict], kind: str) -> list[dict]:
    return [line for line in journal if line["event"] == "fault" and line["fault"] == kind]


async def collect(emu, request, seconds: float) -> list:
    async with connect(emu) as c:
        await c.send(request)
        return await c.for_seconds(seconds)


@pytest.mark.parametrize("spec", ["drop=0.05", "duplicate=0.05", "reorder=0.05", "malformed=0.05"])
async def test_full_channel_faults_are_detectable_by_product_sequence_and_journaled(tmp_path, spec):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=400, faults=spec, journal=path) as emu:
        got = await collect(emu, signed(FULL), 1.2)
    journal = read_journal(path)
    received = [identity(m) for m in got]
    assert received == journal_stream(journal, 1)[:len(received)]      # the journal is the ground truth
    kind = spec.partition("=")[0]
    events = [m for m in got if isinstance(m, dict) and "sequence" in m]
    for pid in ("BTC-USD", "ETH-USD"):
        seqs = [m["sequence"] for m in events if m["product_id"] == pid]
        last = max(seqs)
        injected = [f for f in faults(journal, kind) if f.get("ids", [{}])[0].get("instrument") == pid]
        if kind == "drop":
            missing = set(range(seqs[0], last)) - set(seqs)
            assert missing == {f["ids"][0]["product_seq"] for f in injected if f["ids"][0]["product_seq"] < last}
        elif kind == "duplicate":
            repeated = {s for s in seqs if seqs.count(s) > 1}
            assert repeated == {f["ids"][0]["product_seq"] for f in injected if f["ids"][0]["product_seq"] < last}
        elif kind == "reorder":
            late = {b for a, b in zip(seqs, seqs[1:]) if b < a}
            assert late == {f["ids"][0]["product_seq"] for f in injected          # a swap across products is
                            if f["ids"][1]["instrument"] == pid and f["ids"][1]["product_seq"] < last}  # invisible
        else:
            assert sorted(seqs) == list(range(seqs[0], last + 1))
    assert faults(journal, kind), f"no {kind} fault was injected"
    if kind == "malformed":
        assert ("GARBAGE",) in received             # and the prefix check above placed each one exactly


async def test_trade_channel_drops_are_detectable_by_trade_id(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=400, faults="drop=0.1", journal=path) as emu:
        got = await collect(emu, TRADES, 1.2)
    journal = read_journal(path)
    assert [identity(m) for m in got] == journal_stream(journal, 1)[:len(got)]
    for kind in ("match", "ticker"):
        for pid in ("BTC-USD", "ETH-USD"):
            ids = [m["trade_id"] for m in of_type(got, kind) if m["product_id"] == pid]
            missing = set(range(ids[0], ids[-1])) - set(ids)
            dropped = {f["ids"][0]["trade_id"] for f in faults(journal, "drop")
                       if f["ids"][0]["kind"] == kind and f["ids"][0]["instrument"] == pid}
            assert missing == {t for t in dropped if ids[0] < t < ids[-1]}
    assert faults(journal, "drop")


@pytest.mark.parametrize("close_code", [4001, 0])
async def test_disconnect_fault_closes_with_the_configured_code(tmp_path, close_code):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=100, faults=f"disconnect_every=0.4,close_code={close_code}", journal=path) as emu:
        async with connect(emu) as c:
            await c.send(TRADES)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await c.for_seconds(3)
    journal = read_journal(path)
    expected = close_code or 1006
    if close_code:
        assert closed.value.rcvd.code == close_code
    else:
        assert closed.value.rcvd is None                                 # TCP dropped, no close frame
    assert faults(journal, "disconnect")[0]["code"] == expected
    assert [(j["reason"], j["code"]) for j in journal if j["event"] == "disconnect"] == [("fault", expected)]
    assert [j["event"] for j in journal if j["event"] in ("connect", "disconnect")] == ["connect", "disconnect"]


async def test_stall_pauses_the_stream_then_resumes(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(rate=200, faults="stall_every=0.4,stall_for=1.0", journal=path) as emu, connect(emu) as c:
        await c.send(TRADES)
        stamps = []
        deadline = time.monotonic() + 2.2
        while time.monotonic() < deadline:
            await c.recv(timeout=3)
            stamps.append(time.monotonic())
    assert faults(read_journal(path), "stall")
    assert max(b - a for a, b in zip(stamps, stamps[1:])) >= 0.7      # silence of about stall_for


async def test_slow_fault_delays_control_replies():
    async with emulator(faults="slow=0.5") as emu, connect(emu) as c, aiohttp.ClientSession() as http:
        started = time.monotonic()
        await c.send(TRADES)
        assert (await c.recv())["type"] == "subscriptions"
        assert time.monotonic() - started >= 0.45
        started = time.monotonic()
        async with http.get(emu.http_url("/products/BTC-USD/book")) as r:
            assert r.status == 200
        assert time.monotonic() - started >= 0.45


async def test_auth_fail_refuses_the_first_attempts_only(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(faults="auth_fail=1", journal=path) as emu, connect(emu) as c:
        await c.send(signed(FULL))
        assert await c.recv() == {"type": "error", "message": "Sorry, you could not be authenticated: Bad Request",
                                  "reason": "invalid signature"}
        await c.send(signed(FULL))
        assert (await c.recv())["channels"][0]["name"] == "full"
    assert len(faults(read_journal(path), "auth_fail")) == 1


async def test_token_expiry_ends_authenticated_sockets_only(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    async with emulator(faults="token_expiry=0.5", journal=path) as emu, connect(emu) as authed, connect(emu) as public:
        await authed.send(signed(FULL))
        await public.send(TRADES)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await authed.for_seconds(3)
        assert closed.value.rcvd.code == 1008
        assert authed.raw[-1].startswith('{"type":"error","message":"Sorry, you could not be authenticated')
        assert of_type(await public.for_seconds(0.3), "match", "ticker")    # the unsigned socket lives on
    assert len(faults(read_journal(path), "token_expiry")) == 1


@pytest.mark.parametrize("how", ["slow_client fault", "queue overflow"])
async def test_slow_consumer_gets_err_slow_consume_then_close(tmp_path, how):
    path = str(tmp_path / "journal.jsonl")
    kwargs = ({"faults": "slow_client=0.4"} if how == "slow_client fault"
              else {"faults": "stall_every=0.2,stall_for=5", "creds": settings(send_queue_cap=50), "rate": 400})
    async with emulator(journal=path, **kwargs) as emu, connect(emu) as c:
        await c.send(TRADES)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await c.for_seconds(4)
        assert closed.value.rcvd.code == 1008
        assert '"message":"ErrSlowConsume"' in c.raw[-1]
    journal = read_journal(path)
    assert [(j["reason"], j["code"]) for j in journal if j["event"] == "disconnect"] == [("ErrSlowConsume", 1008)]
