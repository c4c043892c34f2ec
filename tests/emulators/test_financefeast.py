"""Financefeast emulator: handshake, error replies, every fault kind, journal, official client, CLI."""

from __future__ import annotations

import asyncio
import enum
import json
import threading
import time
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import websockets

from tickpipe.children import Child, tickpipe_command
from tickpipe.config import ConfigError, Secret, load_section
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.financefeast import (AUTHENTICATED, NO_ACCESS, NOT_AUTHORISED, FinancefeastEmulator,
                                             FinancefeastSettings)
from tickpipe.emulators.journal import read_journal

TOKEN = "pk_" + "Ab3" * 7


def emulator(faults: str = "", rate: float = 200, settings: FinancefeastSettings | None = None, **kw):
    return FinancefeastEmulator(EmulatorOptions(rate=rate, faults=FaultPlan.parse(faults), credentials=settings, **kw))


async def login(url: str, token: str = TOKEN):
    ws = await websockets.connect(url, close_timeout=0.5)
    await ws.send(json.dumps({"type": "authenticate", "data": {"token": token}}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 5))


async def collect(ws, n: int) -> list:
    """The next ``n`` frames, parsed where they are JSON (garbage kept as the raw frame)."""
    out = []
    for _ in range(n):
        frame = await asyncio.wait_for(ws.recv(), 5)
        try:
            out.append(json.loads(frame))
        except (ValueError, TypeError):
            out.append(frame)
    return out


def prices(frames: list) -> list[dict]:
    return [f["data"] for f in frames if isinstance(f, dict) and f.get("type") == "price"]


async def test_handshake_then_prices_for_every_symbol_on_tick_with_increasing_dates():
    async with emulator(rate=3000) as emu:
        ws, reply = await login(emu.ws_url("/ws"))
        assert reply == {"type": "authenticated", "data": {"message": AUTHENTICATED}}
        data = prices(await collect(ws, 400))
        await ws.close()
    assert len(data) == 400 and {d["symbol"] for d in data} == set(emu.default_symbols)
    last: dict[str, str] = {}
    for d in data:
        assert set(d) == {"date", "price", "volume", "symbol"}
        assert isinstance(d["price"], float) and isinstance(d["volume"], int) and d["volume"] > 0
        assert len(d["date"]) == 19 and d["date"][10] == "T"  # no fraction, no offset
        tick = Decimal("0.0001") if any(c.isdigit() for c in d["symbol"]) else Decimal("0.01")
        assert Decimal(repr(d["price"])) % tick == 0
        assert d["date"] > last.get(d["symbol"], ""), "dates must be strictly increasing per symbol"
        last[d["symbol"]] = d["date"]


@pytest.mark.parametrize("token, settings, error", [
    ("pk_short", None, NOT_AUTHORISED),                                        # malformed token
    ("tk_" + "a" * 20, None, NOT_AUTHORISED),                                  # test-region token on prod
    ("pk_" + "b" * 20, FinancefeastSettings(token=Secret(TOKEN)), NOT_AUTHORISED),  # not the configured token
    (TOKEN, FinancefeastSettings(stream_access=False), NO_ACCESS),
])
async def test_bad_login_gets_the_provider_error_then_a_close(token, settings, error):
    async with emulator(settings=settings) as emu:
        ws, reply = await login(emu.ws_url("/ws"), token)
        assert reply == {"type": "error", "data": {"message": error}}
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == 1008


async def test_configured_token_and_test_region_are_enforced_exactly():
    settings = FinancefeastSettings(token=Secret("tk_" + "Z9" * 10), environment="test", reject_close_code=4003)
    async with emulator(settings=settings) as emu:
        ws, reply = await login(emu.ws_url("/ws"), "tk_" + "Z9" * 10)
        assert reply["type"] == "authenticated"
        await ws.close()
        ws, reply = await login(emu.ws_url("/ws"), "pk_" + "Z9" * 10)
        assert reply["data"]["message"] == NOT_AUTHORISED
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 4003
        assert "Z9Z9" not in repr(settings)


async def test_stream_limit_refuses_the_extra_stream_and_frees_it_on_close():
    async with emulator(settings=FinancefeastSettings(stream_limit=1)) as emu:
        first, reply = await login(emu.ws_url("/ws"))
        assert reply["type"] == "authenticated"
        second, reply = await login(emu.ws_url("/ws"))
        assert reply["data"]["message"].startswith("You are at your stream limit of 1")
        await first.close()
        await asyncio.sleep(0.2)
        third, reply = await login(emu.ws_url("/ws"))
        assert reply["type"] == "authenticated"
        await third.close()


async def test_close_code_only_form_sends_no_json():
    async with emulator(settings=FinancefeastSettings(reject_with_json=False)) as emu:
        ws = await websockets.connect(emu.ws_url("/ws"))
        await ws.send(json.dumps({"type": "authenticate", "data": {"token": "nope"}}))
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 1008 and ws.close_reason == NOT_AUTHORISED[:100]


@pytest.mark.parametrize("first", ["not json", '{"type":"subscribe","data":{}}', '["authenticate"]', b"\x00\x01"])
async def test_garbage_instead_of_authenticate_is_answered_and_closed(first):
    async with emulator() as emu:
        ws = await websockets.connect(emu.ws_url("/ws"))
        await ws.send(first)
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["type"] == "error" and reply["data"]["message"].startswith("Invalid message")
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()


async def test_auth_deadline_closes_a_silent_client():
    async with emulator(settings=FinancefeastSettings(auth_timeout_s=0.3)) as emu:
        ws = await websockets.connect(emu.ws_url("/ws"))
        reply = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["data"]["message"].startswith("Authentication timeout")
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()


async def test_after_login_bad_input_gets_errors_pings_get_pongs_and_the_stream_goes_on():
    async with emulator(rate=50, max_frame_bytes=1000) as emu:
        ws, _ = await login(emu.ws_url("/ws"))
        await ws.send("garbage")
        await ws.send(json.dumps({"type": "subscribe", "data": {"symbols": ["AIR.NZ"]}}))
        await ws.send(json.dumps({"type": "ping"}))
        await ws.send(json.dumps({"type": "x", "pad": "y" * 5000}))
        await asyncio.wait_for(await ws.ping(), 5)  # WebSocket ping answered
        frames = await collect(ws, 60)
        others = [f for f in frames if f.get("type") != "price"]
        assert others == [
            {"type": "error", "data": {"message": "Invalid message: not JSON"}},
            {"type": "error", "data": {"message": "Unknown message type: subscribe"}},
            {"type": "pong"},
            {"type": "error", "data": {"message": "Invalid message: larger than 1000 bytes"}},
        ]
        assert len(prices(await collect(ws, 5))) == 5
        await ws.close()


def received_keys(frames: list) -> list[tuple[str, str]]:
    return [(d["symbol"], d["date"]) for d in prices(frames)]


def sent_keys(journal: list[dict]) -> list[tuple[str, str]]:
    return [(e["ids"]["instrument"], e["ids"]["date"]) for e in journal if e["event"] == "sent"]


async def run_faulted(tmp_path, faults: str, n: int = 300):
    path = tmp_path / "journal.jsonl"
    async with emulator(faults, rate=3000, journal=str(path), seed=5) as emu:
        ws, _ = await login(emu.ws_url("/ws"))
        frames = await collect(ws, n)
        await ws.close()
        await asyncio.sleep(0.1)
    return frames, read_journal(str(path))


async def test_reorder_is_a_per_symbol_regression_matching_the_journal(tmp_path):
    frames, journal = await run_faulted(tmp_path, "reorder=0.05")
    faults = [e for e in journal if e["event"] == "fault"]
    assert faults and all(f["fault"] == "reorder" for f in faults)
    last, regressions = {}, []
    for sym, date in received_keys(frames):
        if date < last.get(sym, ""):
            regressions.append((sym, date))
        last[sym] = max(date, last.get(sym, ""))
    received = set(received_keys(frames))
    injected = [(f["ids"][0]["instrument"], f["ids"][0]["date"]) for f in faults
                if (f["ids"][1]["instrument"], f["ids"][1]["date"]) in received and
                (f["ids"][0]["instrument"], f["ids"][0]["date"]) in received]
    assert regressions == injected
    assert received_keys(frames) == sent_keys(journal)[:len(received_keys(frames))]


async def test_duplicate_repeats_an_event_time_and_drop_is_never_injected(tmp_path):
    frames, journal = await run_faulted(tmp_path, "duplicate=0.05,drop=0.5")
    keys = received_keys(frames)
    repeats = [keys[i] for i in range(1, len(keys)) if keys[i] == keys[i - 1]]
    dups = [(f["ids"][0]["instrument"], f["ids"][0]["date"]) for f in journal if f["event"] == "fault"]
    assert repeats and repeats == dups[:len(repeats)]
    assert not [e for e in journal if e.get("fault") == "drop"]
    assert keys == sent_keys(journal)[:len(keys)]


async def test_malformed_frames_match_the_journal(tmp_path):
    frames, journal = await run_faulted(tmp_path, "malformed=0.05")
    seen = ["price" if isinstance(f, dict) and f.get("type") == "price" else "garbage" for f in frames]
    expected = ["price" if e["event"] == "sent" else "garbage" for e in journal if e["event"] in ("sent", "fault")]
    assert "garbage" in seen and seen == expected[:len(seen)]


@pytest.mark.parametrize("code", [4000, 0])
async def test_disconnect_fault_closes_with_the_configured_code_and_is_journaled(tmp_path, code):
    path = tmp_path / "j.jsonl"
    async with emulator(f"disconnect_every=0.4,close_code={code}", rate=100, journal=str(path)) as emu:
        ws, _ = await login(emu.ws_url("/ws"))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == (code or 1006)
        await asyncio.sleep(0.1)
    journal = read_journal(str(path))
    assert {"fault": "disconnect", "code": code or 1006}.items() <= next(e for e in journal if e.get("fault") == "disconnect").items()
    assert [e["reason"] for e in journal if e["event"] == "disconnect"] == ["fault"]


async def test_stall_pauses_the_stream_and_is_journaled(tmp_path):
    path = tmp_path / "j.jsonl"
    async with emulator("stall_every=0.3,stall_for=0.8", rate=100, journal=str(path)) as emu:
        ws, _ = await login(emu.ws_url("/ws"))
        loop, gaps, last = asyncio.get_running_loop(), [], None
        for _ in range(120):
            await asyncio.wait_for(ws.recv(), 5)
            now = loop.time()
            gaps.append(now - last if last else 0)
            last = now
        await ws.close()
    assert max(gaps) >= 0.6
    assert any(e.get("fault") == "stall" for e in read_journal(str(path)))


async def test_auth_fail_rejects_the_first_attempt_only_and_slow_delays_the_reply():
    async with emulator("auth_fail=1,slow=0.3") as emu:
        loop = asyncio.get_running_loop()
        ws, reply = await login(emu.ws_url("/ws"))
        assert reply["data"]["message"] == NOT_AUTHORISED
        started = loop.time()
        ws, reply = await login(emu.ws_url("/ws"))
        assert reply["type"] == "authenticated" and loop.time() - started >= 0.3
        await ws.close()


async def test_same_seed_gives_the_same_prices():
    async def first_prices(seed):
        async with emulator(rate=3000, seed=seed) as emu:
            ws, _ = await login(emu.ws_url("/ws"))
            data = prices(await collect(ws, 50))
            await ws.close()
        return [(d["symbol"], d["price"], d["volume"]) for d in data]
    assert await first_prices(3) == await first_prices(3) != await first_prices(4)


class _Stop(BaseException):
    """Raised from the official client's callback to end its endless reconnect loop."""


async def test_official_financefeast_client_authenticates_and_receives_prices():
    stream_mod = pytest.importorskip("financefeast.stream")
    async with emulator(rate=100) as emu:
        env = enum.Enum("Env", {"emulator": emu.ws_url("/ws")})  # pointed by URL only
        received: list[dict] = []

        def on_data(stream, data):  # websocket-client >= 1 hands text over as bytes here
            received.append(json.loads(data))
            if len(received) >= 10:
                raise _Stop

        client = stream_mod.Stream(token=TOKEN, on_data=on_data, environment=env.emulator)
        thread = threading.Thread(target=lambda: _run_until_stop(client), daemon=True)
        thread.start()
        for _ in range(100):
            if not thread.is_alive():
                break
            await asyncio.sleep(0.05)
        assert not thread.is_alive()
    assert received[0] == {"type": "authenticated", "data": {"message": AUTHENTICATED}}
    assert all(m["type"] == "price" for m in received[1:])


def _run_until_stop(client) -> None:
    try:
        client.connect()
    except _Stop:
        pass


async def test_cli_serves_on_the_port_of_its_ready_line_and_enforces_the_configured_token():
    cmd = tickpipe_command("emulate", "financefeast", "--port", "0", "--rate", "50", "--ops-port", "0")
    with Child(cmd, "financefeast emulator", env={"TICKPIPE_EMULATOR_FINANCEFEAST_TOKEN": TOKEN}) as child:
        url = f"ws://127.0.0.1:{child.ready['port']}/ws"
        ws, reply = await login(url)
        assert reply["type"] == "authenticated"
        assert len(prices(await collect(ws, 3))) == 3
        await ws.close()
        ws, reply = await login(url, "pk_" + "q" * 20)
        assert reply["data"]["message"] == NOT_AUTHORISED


async def test_date_time_zone_is_configurable_and_validated():
    async with emulator(rate=50, settings=FinancefeastSettings(timezone="Pacific/Auckland"), journal=None) as emu:
        ws, _ = await login(emu.ws_url("/ws"))
        [price] = prices(await collect(ws, 1))
        await ws.close()
    wall = datetime.fromisoformat(price["date"]).replace(tzinfo=ZoneInfo("Pacific/Auckland"))
    # NZ wall time, not UTC; either reading of the hour repeated when daylight saving ends
    assert min(abs(wall.replace(fold=fold).timestamp() - time.time()) for fold in (0, 1)) < 120
    with pytest.raises(ConfigError, match="TIMEZONE"):
        load_section(FinancefeastSettings, "emulator_financefeast", env={"TICKPIPE_EMULATOR_FINANCEFEAST_TIMEZONE": "Mars/Olympus"})
