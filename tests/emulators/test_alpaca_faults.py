"""Alpaca emulator faults, scored against the journal: what the client got is what the journal says."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from tests.emulators.alpaca_support import GARBAGE, Client, journal_lines, running


def token(msg) -> tuple:
    """A received message as the journal names it."""
    if msg == GARBAGE:
        return (GARBAGE,)
    kind = {"t": "trade", "x": "cancelError", "c": "correction", "q": "quote"}[msg["T"]]
    return (kind, msg["S"], msg["oi"] if kind == "correction" else msg.get("i"))


def expected_stream(lines: list[dict], conn: int) -> list[tuple]:
    """The journal of one connection replayed: garbage frames and sent messages, in order."""
    out = []
    for e in lines:
        if e["conn"] != conn:
            continue
        if e["event"] == "fault" and e["fault"] == "malformed":
            out.append((GARBAGE,))
        elif e["event"] == "sent":
            out.append((e["ids"]["kind"], e["ids"]["instrument"], e["ids"].get("trade_id")))
    return out


@pytest.mark.parametrize("use_msgpack", [False, True])
async def test_message_faults_match_the_journal_exactly(tmp_path, use_msgpack):
    faults = "drop=0.08,duplicate=0.08,reorder=0.08,malformed=0.05"
    async with running(rate=400, faults=faults, journal=tmp_path / "j.jsonl", seed=3) as emu:
        c = await Client.open(emu, "/v2/iex", use_msgpack=use_msgpack)
        await c.login()
        await c.subscribe(trades=["AAPL", "MSFT"], quotes=["MSFT"])
        got = [token(m) for m in await c.collect(300, kinds=("t", "x", "c"))]
        await c.close()
        await asyncio.sleep(0.05)
        lines = journal_lines(emu)
    expected = expected_stream(lines, conn=1)
    assert got == expected[:len(got)], "the client received exactly what the journal says was sent"
    faults_seen = {e["fault"] for e in lines if e["event"] == "fault"}
    assert {"drop", "duplicate", "reorder", "malformed"} <= faults_seen
    for sym in ("AAPL", "MSFT"):
        ids = [t[2] for t in got if t[:2] == ("trade", sym)]
        faulted = [e for e in lines if e["event"] == "fault" and e.get("ids") and e["ids"][0]["instrument"] == sym]
        dropped = {e["ids"][0]["trade_id"] for e in faulted if e["fault"] == "drop"}
        gaps = set(range(min(ids), max(ids) + 1)) - set(ids)
        assert gaps <= dropped, "every trade-id gap is a journaled drop"
        dupes = {e["ids"][0]["trade_id"] for e in faulted if e["fault"] == "duplicate"}
        assert {i for i in ids if ids.count(i) > 1} <= dupes
        for e in (e for e in faulted if e["fault"] == "reorder"):
            (a, b) = e["ids"]
            assert a["instrument"] == b["instrument"] == sym, "a swap stays within one instrument"
            if a["trade_id"] in ids and b["trade_id"] in ids:
                assert ids.index(b["trade_id"]) < ids.index(a["trade_id"]), "so it shows as out of order"


async def test_quotes_and_bars_are_never_faulted(tmp_path):
    async with running(rate=300, faults="drop=0.5,duplicate=0.3", journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(quotes=["AAPL"])
        quotes = await c.collect(50, kinds=("q",))
        await c.close()
        await asyncio.sleep(0.05)
        lines = journal_lines(emu)
    assert len({q["t"] for q in quotes}) == len(quotes) == 50
    assert not [e for e in lines if e["event"] == "fault"]


@pytest.mark.parametrize("close_code", [4001, 0])
async def test_disconnect_fault_close_code_or_dead_tcp(tmp_path, close_code):
    faults = f"disconnect_every=0.4,close_code={close_code},reorder=0.2"
    async with running(rate=300, faults=faults, journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AMD"])
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await c.collect(10_000)
        assert (closed.value.rcvd.code if closed.value.rcvd else 1006) == (close_code or 1006)
        await asyncio.sleep(0.1)
        lines = journal_lines(emu)
    end = [e for e in lines if e["event"] == "disconnect"][0]
    assert (end["reason"], end["code"]) == ("fault", close_code or 1006)
    assert [e for e in lines if e.get("fault") == "reorder"], "a held message is journaled when swapped or lost"


async def test_stall_pauses_the_stream(tmp_path):
    async with running(rate=200, faults="stall_every=0.3,stall_for=0.6", journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AAPL"], quotes=["AAPL"])
        arrivals = []
        deadline = time.monotonic() + 1.6
        while time.monotonic() < deadline:
            await c.recv()
            arrivals.append(time.monotonic())
        await c.close()
        stalls = [e for e in journal_lines(emu) if e.get("fault") == "stall"]
    assert stalls and stalls[0]["seconds"] == 0.6
    assert max(b - a for a, b in zip(arrivals, arrivals[1:])) > 0.45


async def test_slow_control_replies_and_auth_fail(tmp_path):
    async with running(faults="slow=0.3,auth_fail=1", journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        assert (await c.recv())["msg"] == "connected"
        started = time.monotonic()
        await c.send({"action": "auth", "key": "k", "secret": "s"})
        assert await c.recv() == {"T": "error", "code": 402, "msg": "auth failed"}
        assert time.monotonic() - started >= 0.25
        await c.send({"action": "auth", "key": "k", "secret": "s"})
        assert await c.recv() == {"T": "success", "msg": "authenticated"}
        await c.close()
        assert [e["attempt"] for e in journal_lines(emu) if e.get("fault") == "auth_fail"] == [1]


async def test_slow_client_fault_sends_407_then_closes(tmp_path):
    async with running(faults="slow_client=0.3", journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AAPL"])
        assert await c.control() == {"T": "error", "code": 407, "msg": "slow client"}
        with pytest.raises(websockets.ConnectionClosed):
            await c.collect(10_000)
        assert c.ws.close_code == 1008
        await asyncio.sleep(0.05)
        end = [e for e in journal_lines(emu) if e["event"] == "disconnect"][0]
        assert (end["reason"], end["code"]) == ("slow_client", 1008)
