"""TD Ameritrade / Schwab emulators: every fault kind, the journal against what a client got,
schwab-py's own StreamClient (fidelity), determinism and the ``tickpipe emulate`` command."""

from __future__ import annotations

import asyncio
import time
import types

import pytest
import websockets

from tickpipe.children import Child, tickpipe_command
from tickpipe.config import Secret
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal
from tickpipe.emulators.tdameritrade import SchwabEmulator, StreamerEmulatorSettings, TDAmeritradeEmulator
from tests.emulators.streamer_client import StreamerClient, data_records, discovery, fetch_token

FAST = StreamerEmulatorSettings(heartbeat_s=0.1, clock_speed=120)


def options(faults: str = "", **kw) -> EmulatorOptions:
    return EmulatorOptions(rate=kw.pop("rate", 300), faults=FaultPlan.parse(faults),
                           credentials=kw.pop("credentials", FAST), **kw)


def notices(frames) -> list[dict]:
    return [n for f in frames if isinstance(f, dict) for n in f.get("notify", []) if "content" in n]


async def test_message_faults_match_the_journal(tmp_path):
    path = str(tmp_path / "journal.jsonl")
    plan = "drop=0.08,reorder=0.08,duplicate=0.08,malformed=0.05"
    async with TDAmeritradeEmulator(options(plan, journal=path, seed=11)) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        await client.subscribe("TIMESALE_EQUITY", "AAPL,MSFT", "0,1,2,3,4")
        await client.subscribe("QUOTE", "AAPL", "0,1,2,3")              # unfaulted traffic alongside
        await client.collect(3, lambda fs: len(data_records(client.frames, "TIMESALE_EQUITY")) >= 250)
        await client.response(await client.request("TIMESALE_EQUITY", "UNSUBS", {"keys": "AAPL,MSFT"}))
        await client.response(await client.request("QUOTE", "UNSUBS", {"keys": "AAPL"}))   # nothing can follow now
        await client.close()
    journal = [e for e in read_journal(path) if e["conn"] == 1]
    sent = [(e["ids"]["instrument"], e["ids"]["product_seq"], e["ids"]["trade_id"])
            for e in journal if e["event"] == "sent" and e["ids"]["kind"] == "trade"]
    got = [(r["key"], r["seq"], r["4"]) for r in data_records(client.frames, "TIMESALE_EQUITY")]
    assert got == sent                                                  # the journal is exactly the wire
    faults = {}
    for e in journal:
        if e["event"] == "fault":
            faults.setdefault(e["fault"], []).append(e)
    assert {"drop", "reorder", "duplicate", "malformed"} <= set(faults)
    received = set(got)
    for e in faults["drop"]:
        ids = e["ids"][0]
        assert (ids["instrument"], ids["product_seq"], ids["trade_id"]) not in received
    for e in faults["duplicate"]:
        ids = e["ids"][0]
        assert got.count((ids["instrument"], ids["product_seq"], ids["trade_id"])) == 2
    for e in faults["reorder"]:
        first, second = ((i["instrument"], i["product_seq"], i["trade_id"]) for i in e["ids"])
        assert got.index(second) < got.index(first)
    garbage = [f for f in client.frames if not isinstance(f, dict) or "garbage" in f]
    assert len(garbage) == len(faults["malformed"])
    quotes = [e for e in journal if e["event"] == "sent" and e["ids"]["kind"] == "quote"]
    assert len(quotes) == len(data_records(client.frames, "QUOTE"))   # level one is never faulted
    per_key = {}
    for key, seq, _ in got:                                             # the faults are detectable from seq
        per_key.setdefault(key, []).append(seq)
    assert any(b != a + 1 for seqs in per_key.values() for a, b in zip(seqs, seqs[1:]))


@pytest.mark.parametrize("close_code,seen", [(4001, 4001), (0, 1006)])
async def test_disconnect_every_with_close_code(tmp_path, close_code, seen):
    path = str(tmp_path / "j.jsonl")
    async with SchwabEmulator(options(f"disconnect_every=0.4,close_code={close_code}", journal=path)) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1,2")
        with pytest.raises(websockets.ConnectionClosed) as info:
            while True:
                await client.recv(3)
        assert info.value.rcvd is None if close_code == 0 else info.value.rcvd.code == seen
    ends = [e for e in read_journal(path) if e["event"] == "disconnect"]
    assert ends[0]["reason"] == "fault" and ends[0]["code"] == seen


async def test_stall_pauses_data_and_heartbeats(tmp_path):
    path = str(tmp_path / "j.jsonl")
    async with SchwabEmulator(options("stall_every=0.4,stall_for=1.2", journal=path)) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1,2")
        last, longest = time.monotonic(), 0.0
        deadline = last + 2.5
        while time.monotonic() < deadline:
            await client.recv(3)
            now = time.monotonic()
            longest, last = max(longest, now - last), now
        await client.close()
    assert longest >= 0.9
    assert any(e["event"] == "fault" and e["fault"] == "stall" for e in read_journal(path))


async def test_slow_replies_auth_fail_and_slow_client(tmp_path):
    path = str(tmp_path / "j.jsonl")
    async with SchwabEmulator(options("slow=0.4,auth_fail=1,slow_client=0.5", journal=path)) as emu:
        started = time.monotonic()
        token = (await fetch_token(emu)).body["access_token"]
        assert time.monotonic() - started >= 0.35                      # the REST reply was delayed
        first = await StreamerClient.connect(emu, token)
        assert (await first.login())["content"]["code"] == 3           # auth_fail: the first LOGIN is denied
        with pytest.raises(websockets.ConnectionClosed):
            await first.recv(2)
        second = await StreamerClient.connect(emu, token)
        assert (await second.login())["content"]["code"] == 0
        await second.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1,2")
        frames = await second.collect(3)
        assert notices(frames)[-1]["content"]["code"] == 30 and "slow client" in notices(frames)[-1]["content"]["msg"]
        assert second.ws.close_code is not None
    kinds = [e.get("fault") for e in read_journal(path) if e["event"] == "fault"]
    assert "auth_fail" in kinds and "slow_client" in kinds


async def test_token_expiry_on_rest_login_and_session():
    settings = StreamerEmulatorSettings(heartbeat_s=0.1, drop_on_token_expiry=True)
    async with SchwabEmulator(options("token_expiry=0.6", credentials=settings)) as emu:
        tok = await fetch_token(emu)
        assert tok.status == 200 and tok.body["expires_in"] <= 1          # the configured lifetime
        client = await StreamerClient.connect(emu, tok.body["access_token"])
        assert (await client.login())["content"]["code"] == 0
        await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1")
        frames = await client.collect(3)
        assert notices(frames)[-1]["content"]["code"] == 3               # session dropped at expiry
        assert (await discovery(emu, tok.body["access_token"]))[0] == 401
        late = await StreamerClient.connect(emu, (await fetch_token(emu, refresh=tok.body["refresh_token"])).body["access_token"])
        assert (await late.login(token=tok.body["access_token"]))["content"]["code"] == 3   # expired token
        fresh = await StreamerClient.connect(emu, (await fetch_token(emu)).body["access_token"])
        assert (await fresh.login())["content"]["code"] == 0
        await fresh.close()


async def test_same_seed_same_data_and_fast_rate():
    firsts = []
    for _ in range(2):
        async with TDAmeritradeEmulator(options(seed=5, rate=0)) as emu:
            client = await StreamerClient.connect(emu)
            await client.login()
            await client.subscribe("TIMESALE_EQUITY", "AAPL", "0,2,3,4")
            recs = data_records(await client.collect(2, lambda fs: len(data_records(fs)) >= 200))
            firsts.append([(r["seq"], r["2"], r["3"], r["4"]) for r in recs[:50]])
            assert len(recs) >= 200
            await client.close()
    assert firsts[0] == firsts[1]


STRICT = StreamerEmulatorSettings(client_id=Secret("app-key"), client_secret=Secret("app-secret"),
                                  refresh_token=Secret("refresh-1"), heartbeat_s=0.1, clock_speed=120)


@pytest.mark.parametrize("settings", [FAST, STRICT], ids=["any-credentials", "configured-credentials"])
async def test_schwab_py_stream_client_logs_in_subscribes_and_receives(settings):
    """schwab-py's StreamClient, unmodified; only the user-preference call target points at the emulator."""
    from schwab.auth import client_from_access_functions
    from schwab.streaming import StreamClient

    async with SchwabEmulator(options(rate=100, credentials=settings)) as emu:
        issued = (await fetch_token(emu)).body
        token = {"creation_timestamp": int(time.time()),
                 "token": {**issued, "expires_at": time.time() + issued["expires_in"]}}
        client = client_from_access_functions("app-key", "app-secret", lambda: token, lambda *a, **k: None, asyncio=True)
        client.get_user_preferences = lambda: client.session.get(emu.http_url("/trader/v1/userPreference"))
        stream = StreamClient(client)
        got: dict[str, list] = {}
        stream.add_level_one_equity_handler(lambda m: got.setdefault("l1", []).append(m))
        stream.add_chart_equity_handler(lambda m: got.setdefault("chart", []).append(m))
        stream.add_level_one_futures_handler(lambda m: got.setdefault("fut", []).append(m))
        await stream.login()
        await stream.level_one_equity_subs(["AAPL", "MSFT"])
        await stream.chart_equity_subs(["AAPL"])
        await stream.level_one_futures_subs(["/ES"])
        deadline = time.monotonic() + 4
        while time.monotonic() < deadline and not ({"l1", "chart", "fut"} <= set(got) and len(got["chart"]) >= 2):
            await asyncio.wait_for(stream.handle_message(), 3)
        first = got["l1"][0]["content"][0]
        assert first["key"] in ("AAPL", "MSFT") and first["BID_PRICE"] < first["ASK_PRICE"] and "DESCRIPTION" in first
        bars = [m["content"][0] for m in got["chart"]]
        assert [b["seq"] for b in bars[:2]] == [0, 1] and {"SEQUENCE", "OPEN_PRICE", "CHART_TIME_MILLIS"} <= set(bars[0])
        assert got["fut"][0]["content"][0]["key"] == "/ES"
        await stream.logout()
        await client.close_async_session()


def test_emulate_command_serves_schwab_with_configured_credentials():
    env = {"TICKPIPE_EMULATOR_SCHWAB_CLIENT_ID": "cli-app", "TICKPIPE_EMULATOR_SCHWAB_CLIENT_SECRET": "cli-secret",
           "TICKPIPE_EMULATOR_SCHWAB_REFRESH_TOKEN": "cli-refresh"}
    cmd = tickpipe_command("emulate", "schwab", "--port", "0", "--rate", "50", "--ops-port", "0")
    with Child(cmd, "schwab emulator", env=env) as child:
        port = child.ready["port"]
        emu = types.SimpleNamespace(flavour="schwab", http_url=lambda p: f"http://127.0.0.1:{port}{p}")

        async def talk():
            assert (await fetch_token(emu, "cli-app", "wrong", "cli-refresh")).status == 401
            token = (await fetch_token(emu, "cli-app", "cli-secret", "cli-refresh")).body["access_token"]
            client = await StreamerClient.connect(emu, token)
            assert (await client.login())["content"]["code"] == 0
            await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1,2")
            recs = data_records(await client.collect(3, lambda fs: data_records(fs)))
            await client.close()
            return recs

        assert asyncio.run(talk())[0]["key"] == "AAPL"
