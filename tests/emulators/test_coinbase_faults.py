"""Coinbase emulator fault injection: every fault kind, scored against the ground-truth journal."""

from __future__ import annotations

import asyncio
import time

import pytest
import websockets

from tests.emulators.coinbase_helpers import connect, ec_key, emulator, is_error, make_jwt, recv, recv_until, sub
from tickpipe.children import Child, tickpipe_command
from tickpipe.emulators.journal import read_journal


def envelope(frame) -> bool:
    return isinstance(frame, dict) and "sequence_num" in frame


async def collect(ws, count: int, timeout: float = 5.0) -> list:
    out = []
    while len(out) < count:
        out.append(await recv(ws, timeout))
    return out


async def test_message_faults_match_journal_exactly(tmp_path):
    path = tmp_path / "journal.jsonl"
    async with emulator("drop=0.1,reorder=0.1,duplicate=0.1,malformed=0.05", rate=200, seed=4, journal=path) as emu:
        async with connect(emu) as ws:
            for ch in ("heartbeats", "market_trades", "level2", "ticker"):
                await ws.send(sub(ch, ["BTC-USD", "ETH-USD"]))
            received = await collect(ws, 400)
    journal = [e for e in read_journal(str(path)) if e["conn"] == 1]
    expected = []   # what the wire should carry, in order, from the journal alone
    for e in journal:
        if e["event"] == "sent":
            expected.append(e["ids"]["seq"])
        elif e["event"] == "fault" and e["fault"] == "malformed":
            expected.append("garbage")
    got = [f["sequence_num"] if envelope(f) else "garbage" for f in received]
    assert got == expected[:len(got)]
    faults = {k: [e for e in journal if e.get("fault") == k] for k in ("drop", "reorder", "duplicate", "malformed")}
    assert all(faults.values()), {k: len(v) for k, v in faults.items()}
    seqs = [s for s in got if s != "garbage"]
    dropped = {e["ids"][0]["seq"] for e in faults["drop"]}
    assert dropped.isdisjoint(seqs) and dropped & set(range(max(seqs)))
    assert any(b < a for a, b in zip(seqs, seqs[1:]))           # out of order
    assert len(seqs) > len(set(seqs))                          # duplicates
    assert all(e["ids"][0]["kind"] != "subscriptions" for e in faults["drop"])   # acks are not faulted by default


@pytest.mark.parametrize("close_code", [4001, 0])
async def test_disconnect_fault_uses_close_code_and_is_journaled(tmp_path, close_code):
    path = tmp_path / "journal.jsonl"
    async with emulator(f"disconnect_every=0.4,close_code={close_code}", journal=path) as emu:
        async with connect(emu) as ws:
            await ws.send(sub("heartbeats"))
            await ws.send(sub("ticker", ["BTC-USD"]))
            with pytest.raises(websockets.ConnectionClosed) as info:
                await collect(ws, 10_000, timeout=3)
            assert (info.value.rcvd.code if info.value.rcvd else 1006) == (close_code or 1006)
    journal = read_journal(str(path))
    fault = next(e for e in journal if e.get("fault") == "disconnect")
    end = next(e for e in journal if e["event"] == "disconnect")
    assert fault["code"] == (close_code or 1006) and end["reason"] == "fault" and end["code"] == (close_code or 1006)


async def test_stall_pauses_the_stream(tmp_path):
    path = tmp_path / "journal.jsonl"
    async with emulator("stall_every=0.5,stall_for=1.0", rate=50, journal=path) as emu, connect(emu) as ws:
        await ws.send(sub("ticker", ["BTC-USD"]))
        stamps, seqs = [], []
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            f = await recv(ws)
            stamps.append(time.monotonic())
            seqs.append(f["sequence_num"])
    assert max(b - a for a, b in zip(stamps, stamps[1:])) >= 0.7
    assert seqs == list(range(len(seqs)))                       # a stall delays, it loses nothing
    assert any(e.get("fault") == "stall" for e in read_journal(str(path)))


async def test_slow_delays_the_ack():
    async with emulator("slow=0.5") as emu, connect(emu) as ws:
        started = time.monotonic()
        await ws.send(sub("heartbeats"))
        assert (await recv(ws))["channel"] == "subscriptions"
        assert time.monotonic() - started >= 0.45


async def test_auth_fail_rejects_first_attempts_then_accepts(tmp_path):
    path = tmp_path / "journal.jsonl"
    key = ec_key()
    async with emulator("auth_fail=2", journal=path) as emu, connect(emu) as ws:
        for _ in range(2):
            await ws.send(sub("user", [], make_jwt(key)))
            assert await recv(ws) == {"type": "error", "message": "authentication failure"}
        await ws.send(sub("user", [], make_jwt(key)))
        assert (await recv(ws))["channel"] == "subscriptions"
    assert sum(e.get("fault") == "auth_fail" for e in read_journal(str(path))) == 2


async def test_token_expiry_ends_authenticated_connection(tmp_path):
    path = tmp_path / "journal.jsonl"
    async with emulator("token_expiry=0.4", journal=path) as emu, connect(emu) as ws:
        await ws.send(sub("user", [], make_jwt(ec_key())))
        frames = await recv_until(ws, is_error, timeout=3)
        assert frames[-1]["message"] == "authentication failure"
        with pytest.raises(websockets.ConnectionClosed):
            await collect(ws, 1000)
        assert ws.close_code == 1008
    journal = read_journal(str(path))
    assert any(e.get("fault") == "token_expiry" for e in journal)
    assert next(e for e in journal if e["event"] == "disconnect")["reason"] == "token_expiry"


async def test_slow_client_gets_error_and_close():
    async with emulator("slow_client=0.4", slow_client_message="too slow") as emu, connect(emu) as ws:
        await ws.send(sub("ticker", ["BTC-USD"]))
        frames = await recv_until(ws, is_error, timeout=3)
        assert frames[-1] == {"type": "error", "message": "too slow"}
        with pytest.raises(websockets.ConnectionClosed):
            await collect(ws, 1000)


async def test_same_seed_same_market_and_as_fast_as_possible():
    async def trades(seed):
        async with emulator(rate=0, seed=seed) as emu, connect(emu) as ws:
            await ws.send(sub("market_trades", ["BTC-USD", "ETH-USD"]))
            frames = await collect(ws, 600)
        return [(t["trade_id"], t["price"], t["size"]) for f in frames[2:] for t in f["events"][0]["trades"]]

    first, again, other = await trades(9), await trades(9), await trades(10)
    assert len(first) > 600 and first[:500] == again[:500] and first[:50] != other[:50]


async def test_cli_emulate_coinbase_serves_on_ready_port(tmp_path):
    journal = tmp_path / "journal.jsonl"
    with Child(tickpipe_command("emulate", "coinbase", "--port", "0", "--seed", "3", "--journal", str(journal)),
               "coinbase emulator", log_file=tmp_path / "emu.log") as child:
        url = f"ws://127.0.0.1:{child.ready['port']}/"
        async with websockets.connect(url) as ws:
            await ws.send(sub("level2", ["BTC-USD"]))
            frames = await collect(ws, 3)
        assert [f["channel"] for f in frames] == ["subscriptions", "l2_data", "l2_data"]
        await asyncio.sleep(0.1)
    assert any(e["event"] == "connect" for e in read_journal(str(journal)))


@pytest.mark.parametrize("fault_acks", [False, True])
async def test_every_enveloped_frame_is_faultable_acks_only_when_configured(fault_acks):
    async with emulator("drop=1", rate=100, fault_acks=fault_acks) as emu, connect(emu) as ws:
        await ws.send(sub("heartbeats"))
        await ws.send(sub("level2", ["BTC-USD"]))
        await ws.send(sub("market_trades", ["BTC-USD"]))
        if fault_acks:   # everything carrying a sequence_num is dropped: the socket stays silent
            with pytest.raises(asyncio.TimeoutError):
                await recv(ws, timeout=1.2)
        else:            # only the acks arrive, and the holes between them are the dropped snapshots
            acks = [await recv(ws) for _ in range(3)]
            assert [a["channel"] for a in acks] == ["subscriptions"] * 3
            assert [a["sequence_num"] for a in acks] == [0, 1, 3]
            with pytest.raises(asyncio.TimeoutError):
                await recv(ws, timeout=1.2)     # data and heartbeats: all dropped


async def test_error_closes_setting_closes_after_an_error():
    async with emulator(error_closes=True) as emu, connect(emu) as ws:
        await ws.send("garbage")
        assert await recv(ws) == {"type": "error", "message": "failure to parse message"}
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1008


async def test_cli_reads_emulator_settings_from_environment(tmp_path):
    from tests.emulators.coinbase_helpers import KEY_NAME, public_pem
    key = ec_key()
    (tmp_path / "keys.pem").write_text(public_pem(key))
    env = {"TICKPIPE_EMULATOR_COINBASE_PUBLIC_KEYS_FILE": str(tmp_path / "keys.pem"),
           "TICKPIPE_EMULATOR_COINBASE_KEY_NAME": KEY_NAME, "TICKPIPE_EMULATOR_COINBASE_SEND_CLIENT_ID": "false"}
    with Child(tickpipe_command("emulate", "coinbase", "--port", "0", "--faults", "slow=0.01"), "coinbase emulator",
               log_file=tmp_path / "emu.log", env=env) as child:
        async with websockets.connect(f"ws://127.0.0.1:{child.ready['port']}/") as ws:
            await ws.send(sub("user", [], make_jwt(ec_key())))   # signed by a key the emulator does not know
            assert await recv(ws) == {"type": "error", "message": "authentication failure"}
            await ws.send(sub("user", [], make_jwt(key)))
            ack = await recv(ws)
            assert ack["channel"] == "subscriptions" and "client_id" not in ack


async def test_a_frozen_emulator_sends_journals_and_answers_nothing_more(tmp_path):
    """``freeze()`` stands in for SIGSTOP in in-process tests: the journal ends where the wire does."""
    path = tmp_path / "journal.jsonl"
    async with emulator("drop=0.1,duplicate=0.1,disconnect_every=0.8,close_code=4000", rate=200, journal=path) as emu:
        async with connect(emu) as ws:
            await ws.send(sub("heartbeats"))
            await ws.send(sub("ticker", ["BTC-USD", "ETH-USD"]))
            received = await collect(ws, 20)
            emu.freeze()
            with pytest.raises(asyncio.TimeoutError):   # what was on the wire arrives, then nothing for 1.5 s:
                while True:                             # no frame, no heartbeat, no disconnect fault
                    received.append(await recv(ws, timeout=1.5))
            with pytest.raises(asyncio.TimeoutError):   # a new connection gets no answer
                await asyncio.wait_for(connect(emu).__aenter__(), 0.5)
    journal = [e for e in read_journal(str(path)) if e["conn"] == 1]
    assert [e["ids"]["seq"] for e in journal if e["event"] == "sent"] == [f["sequence_num"] for f in received]
    assert not any(e.get("fault") == "disconnect" for e in journal)
    assert {e["conn"] for e in read_journal(str(path)) if e["event"] == "connect"} == {1}
