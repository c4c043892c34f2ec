"""Market Prophit emulator: /jwt, the socket.io handshake and requests, every fault kind, journal, CLI.

Clients: python-socketio 4.x (the Engine.IO 3 client the emulator imitates the server of),
aiohttp for REST, and a raw ``websockets`` client speaking the EIO3 wire framing.
"""

from __future__ import annotations

import asyncio
import base64
import json

import aiohttp
import jwt
import pytest
import socketio
import websockets

from tickpipe.children import Child, tickpipe_command
from tickpipe.config import Secret
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal
from tickpipe.emulators.marketprophit import MarketProphitEmulator, MarketProphitSettings

KEY = "sk_live_" + "Q7x" * 8
CROWD = {"path": "/real-time/crowd-sentiment", "method": "get", "params": {"ticker": "AAPL"}}
USERS = {"path": "/real-time/user-sentiment", "method": "GET", "params": {"ticker": "TSLA"}}
SIGNAL = {"path": "/real-time/market-prophit-sentiment", "method": "GET", "params": {"ticker": "TSLA"}}


def emulator(faults: str = "", rate: float = 50, settings: MarketProphitSettings | None = None, **kw):
    return MarketProphitEmulator(EmulatorOptions(rate=rate, faults=FaultPlan.parse(faults), credentials=settings, **kw))


async def post_jwt(emu, key: str | None = KEY) -> aiohttp.ClientResponse:
    headers = {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()} if key else {}
    async with aiohttp.ClientSession() as http:
        async with http.post(emu.http_url("/jwt"), headers=headers) as resp:
            await resp.read()
            return resp


async def token_for(emu, key: str = KEY) -> str:
    resp = await post_jwt(emu, key)
    assert resp.status == 200
    return json.loads(resp._body)["token"]


class Refused(Exception):
    """The handshake was refused; ``args[0]``: the ``connect_error`` payloads."""


class Client:
    """A python-socketio client pointed at the emulator by URL, recording what it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.res: list = []
        self.data: list = []
        self.errs: list = []
        self.refused: list = []
        self.gone = asyncio.Event()
        self.sio.on("res", lambda data: self.res.append(data))
        self.sio.on("data", lambda data: self.data.append(data))
        self.sio.on("err", lambda data: self.errs.append(data))
        self.sio.on("connect_error", lambda data=None: self.refused.append(data))
        self.sio.on("disconnect", self.gone.set)

    async def connect(self, emu, token: str, transports=None) -> "Client":
        """Connect and wait for the namespace's answer: ``connect``, or a refusal (``Refused``)."""
        accepted = asyncio.Event()
        self.sio.on("connect", accepted.set)
        try:
            await self.sio.connect(emu.http_url("") + f"?token={token}", transports=transports)
        except socketio.exceptions.ConnectionError:
            raise Refused(self.refused) from None
        for _ in range(250):
            if accepted.is_set() or self.refused:
                break
            await asyncio.sleep(0.02)
        if not accepted.is_set():
            await self.sio.disconnect()
            raise Refused(self.refused)
        return self

    async def until(self, n: int, timeout: float = 5.0) -> list:
        for _ in range(int(timeout / 0.02)):
            if len(self.res) >= n:
                return self.res
            await asyncio.sleep(0.02)
        raise AssertionError(f"only {len(self.res)} res events of {n}")


async def test_jwt_is_hs256_with_issue_and_expiry_and_cors():
    async with emulator(settings=MarketProphitSettings(token_lifetime_s=3600)) as emu:
        resp = await post_jwt(emu)
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("application/json")
        assert resp.headers["Access-Control-Allow-Origin"] == "*" and "igloo" in resp.cookies
        token = json.loads(resp._body)["token"]
        assert jwt.get_unverified_header(token) == {"typ": "JWT", "alg": "HS256"}
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["exp"] - claims["iat"] == 3600 and "/real-time/crowd-sentiment" in claims["endpoint_paths"]


@pytest.mark.parametrize("key", [None, "sk_live_short", "pk_live_" + "a" * 24])
async def test_jwt_refuses_missing_or_malformed_keys_with_401(key):
    async with emulator() as emu:
        resp = await post_jwt(emu, key)
        assert resp.status == 401
        assert json.loads(resp._body)["error"]["type"] == "invalid_request_error"


async def test_configured_key_is_enforced_exactly_and_never_shown():
    settings = MarketProphitSettings(secret_key=Secret(KEY))
    async with emulator(settings=settings) as emu:
        assert (await post_jwt(emu, "sk_live_" + "b" * 24)).status == 401
        assert (await post_jwt(emu, KEY)).status == 200
    assert KEY not in repr(settings)


async def test_python_socketio_client_connects_subscribes_with_ack_and_receives_res():
    async with emulator(rate=100) as emu:
        client = await Client().connect(emu, await token_for(emu))
        assert client.sio.transport() == "websocket"
        assert await client.sio.call("subscribe", CROWD, timeout=3) is None
        assert await client.sio.call("subscribe", USERS, timeout=3) is None
        res = await client.until(20)
        await client.sio.disconnect()
    by_ticker = {}
    for body in res:
        assert isinstance(body, list) and len(body) == 1
        rec = body[0]
        by_ticker.setdefault(rec["ticker"], []).append(rec)
        assert all(isinstance(v, str) for v in rec.values())
    crowd, users = by_ticker["AAPL"], by_ticker["TSLA"]
    assert set(crowd[0]) == {"ts", "ticker", "average_sentiment"}
    assert set(users[0]) == {"ts", "ticker", "user_id", "sentiment", "user_score"}
    assert all(-1 <= float(r["average_sentiment"]) <= 1.02 for r in crowd)
    assert [r["ts"] for r in crowd] == sorted({r["ts"] for r in crowd})  # strictly increasing per stream
    assert crowd[0]["ts"].endswith(":00.000Z")  # minute cadence


async def test_unsubscribe_stops_that_stream_and_bad_requests_get_ack_errors_and_err_events():
    restricted = MarketProphitSettings(streaming_paths=("/real-time/crowd-sentiment",))
    async with emulator(rate=100, settings=restricted) as emu:
        client = await Client().connect(emu, await token_for(emu))
        call = client.sio.call
        assert await call("subscribe", CROWD, timeout=3) is None
        assert (await call("subscribe", USERS, timeout=3)).startswith("Restricted endpoint")
        assert (await call("subscribe", {**CROWD, "path": "/real-time/nope"}, timeout=3)).startswith("Unknown endpoint")
        assert (await call("subscribe", {**CROWD, "method": "post"}, timeout=3)).startswith("Bad request: method")
        assert (await call("subscribe", {**CROWD, "params": {}}, timeout=3)).startswith("Bad request: params.ticker")
        assert (await call("subscribe", "garbage", timeout=3)).startswith("Bad request: options")
        assert (await call("frobnicate", {}, timeout=3)) == "Unknown event: frobnicate"
        assert (await call("unsubscribe", {**CROWD, "params": {"ticker": "APPL"}}, timeout=3)) == \
            "Not subscribed: /real-time/crowd-sentiment APPL"
        await client.until(5)
        assert await call("unsubscribe", {**CROWD, "method": "GET"}, timeout=3) is None
        await asyncio.sleep(0.1)
        count = len(client.res)
        await asyncio.sleep(0.3)
        assert len(client.res) == count
        assert len(client.errs) == 7 and all("message" in e and "request" in e for e in client.errs)
        await client.sio.disconnect()


async def refused_with(emu, token: str) -> dict:
    client = Client()
    with pytest.raises(Refused) as refusal:
        await client.connect(emu, token)
    return refusal.value.args[0][0]


async def test_handshake_refuses_missing_forged_and_expired_tokens():
    async with emulator(settings=MarketProphitSettings(token_lifetime_s=0.3)) as emu:
        assert (await refused_with(emu, ""))["code"] == "credentials_required"
        assert (await refused_with(emu, "not.a.jwt"))["message"] == "invalid signature"
        forged = jwt.encode({"jti": "x"}, "another signing key, long enough for HS256", algorithm="HS256")
        assert (await refused_with(emu, forged))["message"] == "invalid signature"
        token = await token_for(emu)
        await asyncio.sleep(0.4)
        assert await refused_with(emu, token) == {"message": "jwt expired", "code": "invalid_token",
                                                  "type": "UnauthorizedError"}


async def test_http_401_refusal_form_carries_the_same_error():
    async with emulator(settings=MarketProphitSettings(refuse_with_http=True)) as emu:
        assert (await refused_with(emu, "not.a.jwt"))["message"] == "invalid signature"
        client = await Client().connect(emu, await token_for(emu))
        await client.sio.disconnect()


async def test_refusal_on_the_wire_is_the_socketio_error_packet():
    async with emulator() as emu:
        async with websockets.connect(emu.ws_url("/socket.io/?EIO=3&transport=websocket&token=bad")) as ws:
            assert (await asyncio.wait_for(ws.recv(), 5)).startswith("0{")
            error = await asyncio.wait_for(ws.recv(), 5)
            assert error.startswith("44{") and json.loads(error[2:]) == \
                {"message": "invalid signature", "code": "invalid_token", "type": "UnauthorizedError"}
            assert (await asyncio.wait_for(ws.recv(), 5)) == "1"  # then Engine.IO close


async def test_token_expiry_fault_ends_the_session_and_a_new_token_works(tmp_path):
    path = tmp_path / "j.jsonl"
    async with emulator("token_expiry=0.6", journal=str(path)) as emu:
        token = await token_for(emu)
        client = await Client().connect(emu, token)
        await client.sio.call("subscribe", CROWD, timeout=3)
        await asyncio.wait_for(client.gone.wait(), 5)
        assert (await refused_with(emu, token))["message"] == "jwt expired"
        again = await Client().connect(emu, await token_for(emu))
        await again.sio.disconnect()
        await asyncio.sleep(0.1)
    journal = read_journal(str(path))
    assert [e["fault"] for e in journal if e["event"] == "fault"] == ["token_expiry"]
    assert [e["reason"] for e in journal if e["event"] == "disconnect"] == ["token expired", "client closed"]


async def test_end_sessions_at_expiry_off_keeps_an_open_socket():
    async with emulator(settings=MarketProphitSettings(token_lifetime_s=0.3)) as emu:
        client = await Client().connect(emu, await token_for(emu))
        await client.sio.call("subscribe", CROWD, timeout=3)
        await asyncio.sleep(0.6)
        n = len(client.res)
        await client.until(n + 3)
        assert not client.gone.is_set()
        await client.sio.disconnect()


async def test_generation_b_streams_every_ticker_in_data_events_and_refuses_by_ack_only():
    async with emulator(rate=100) as emu:
        client = await Client().connect(emu, await token_for(emu))
        call = client.sio.call
        assert await call("subscribe", {"path": "crowd-sentiment-chart-data", "params": {}}, timeout=3) is None
        assert await call("subscribe", {"path": "user-sentiment", "params": {"ticker": "jaba"}}, timeout=3) is None
        assert (await call("subscribe", {"path": "user-sentiment", "params": {"ticker": 7}}, timeout=3)).startswith("Bad request")
        for _ in range(100):
            if len(client.data) >= 10:
                break
            await asyncio.sleep(0.02)
        await client.sio.disconnect()
    assert client.res == [] and client.errs == []
    charts = [d for d in client.data if d["path"] == "crowd-sentiment-chart-data"]
    users = [d for d in client.data if d["path"] == "user-sentiment"]
    assert charts and users and set(charts[0]) == {"path", "params", "timestamp", "results"}
    assert [r["ticker"] for r in charts[0]["results"]] == list(emu.default_symbols)
    assert len({r["ts"] for r in charts[0]["results"]}) == 1 and charts[0]["results"][0]["ts"].endswith(":00.000Z")
    assert set(charts[0]["results"][0]) == {"ts", "ticker", "crowd_sentiment", "crowd_sentiment_moving_average",
                                            "crowd_sentiment_z_score", "crowd_sentiment_z_score_moving_average", "volume", "buzz"}
    assert {r["ticker"] for d in users for r in d["results"]} == {"JABA"} and users[0]["params"] == {"ticker": "jaba"}


async def test_wrapper_shape_and_long_polling_transport():
    async with emulator(settings=MarketProphitSettings(res_shape="wrapper", ts_skew_s=14400)) as emu:
        client = await Client().connect(emu, await token_for(emu), transports=["polling"])
        assert client.sio.transport() == "polling"
        await client.sio.call("subscribe", CROWD, timeout=3)
        body = (await client.until(1))[0]
        await client.sio.disconnect()
    assert {k: body[k] for k in ("path", "method", "params")} == CROWD
    assert body["timestamp"].endswith("Z") and body["results"][0]["ts"] > body["timestamp"]


def res_keys(res: list) -> list[tuple[str, str]]:
    return [(b[0]["ticker"], b[0]["ts"]) for b in res if isinstance(b, list)]


def journal_keys(journal: list[dict], event: str = "sent", fault: str | None = None) -> list[tuple[str, str]]:
    rows = [e for e in journal if e["event"] == event and (fault is None or e.get("fault") == fault)]
    return [(i["ticker"], i["ts"]) for e in rows for i in (e["ids"] if isinstance(e["ids"], list) else [e["ids"]])]


async def faulted_run(tmp_path, faults: str, n: int = 150):
    path = tmp_path / "j.jsonl"
    async with emulator(faults, rate=400, journal=str(path), seed=9) as emu:
        client = await Client().connect(emu, await token_for(emu))
        await client.sio.call("subscribe", CROWD, timeout=3)
        await client.sio.call("subscribe", SIGNAL, timeout=3)
        await client.until(n)
        await client.sio.disconnect()
        await asyncio.sleep(0.1)
    return client.res, read_journal(str(path))


def per_stream(keys):
    streams: dict[str, list[str]] = {}
    for ticker, ts in keys:
        streams.setdefault(ticker, []).append(ts)
    return streams


async def test_drop_leaves_a_missing_ts_matching_the_journal(tmp_path):
    res, journal = await faulted_run(tmp_path, "drop=0.1")
    received, dropped = res_keys(res), journal_keys(journal, "fault", "drop")
    assert received == journal_keys(journal)[:len(received)]
    cadence = {"AAPL": 60, "TSLA": 1}
    missing = []
    from datetime import datetime
    for ticker, stamps in per_stream(received).items():
        secs = [datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp() for s in stamps]
        missing += [(ticker, a) for a, b in zip(secs, secs[1:]) for _ in range(int(b - a) // cadence[ticker] - 1)]
    stamps = per_stream(received)
    within = [d for d in dropped if min(stamps[d[0]]) < d[1] < max(stamps[d[0]])]  # a first record has no predecessor
    assert within and len(missing) == len(within)


async def test_reorder_and_duplicate_show_per_stream_and_match_the_journal(tmp_path):
    res, journal = await faulted_run(tmp_path, "reorder=0.05,duplicate=0.05")
    received = res_keys(res)
    regressions, repeats = [], []
    for ticker, stamps in per_stream(received).items():
        for a, b in zip(stamps, stamps[1:]):
            (regressions if b < a else repeats if b == a else []).append((ticker, b))
    faults = [e for e in journal if e["event"] == "fault"]
    swapped = [(f["ids"][1]["ticker"], f["ids"][0]["ts"]) for f in faults if f["fault"] == "reorder"]
    assert regressions and sorted(regressions) == sorted(s for s in swapped if s in set(received))
    assert repeats and sorted(repeats) == sorted(d for d in journal_keys(journal, "fault", "duplicate")
                                                 if received.count(d) == 2)
    assert all(f["ids"][0]["ticker"] == f["ids"][1]["ticker"] for f in faults if f["fault"] == "reorder")


async def test_malformed_frames_are_garbage_res_payloads_counted_in_the_journal(tmp_path):
    res, journal = await faulted_run(tmp_path, "malformed=0.1")
    seen = ["garbage" if isinstance(b, str) else "res" for b in res]
    expected = ["res" if e["event"] == "sent" else "garbage" for e in journal if e["event"] in ("sent", "fault")]
    assert "garbage" in seen and seen == expected[:len(seen)]


async def test_user_sentiment_is_never_faulted_no_consumer_could_tell(tmp_path):
    path = tmp_path / "j.jsonl"
    async with emulator("drop=0.5,reorder=0.5,duplicate=0.5", rate=200, journal=str(path)) as emu:
        client = await Client().connect(emu, await token_for(emu))
        await client.sio.call("subscribe", USERS, timeout=3)
        res = await client.until(30)
        await client.sio.disconnect()
        await asyncio.sleep(0.1)
    journal = read_journal(str(path))
    assert not [e for e in journal if e["event"] == "fault"]
    assert res_keys(res) == journal_keys(journal)[:len(res)]


async def raw_eio3(emu, token: str):
    """A websocket speaking Engine.IO 3 by hand: open packet, then the socket.io CONNECT."""
    ws = await websockets.connect(emu.ws_url(f"/socket.io/?EIO=3&transport=websocket&token={token}"), close_timeout=0.5)
    opened = await asyncio.wait_for(ws.recv(), 5)
    assert opened.startswith("0{") and "pingInterval" in json.loads(opened[1:])
    assert await asyncio.wait_for(ws.recv(), 5) == "40"
    return ws


@pytest.mark.parametrize("code", [4000, 0])
async def test_disconnect_fault_close_code_on_the_wire(tmp_path, code):
    path = tmp_path / "j.jsonl"
    async with emulator(f"disconnect_every=0.4,close_code={code}", journal=str(path)) as emu:
        ws = await raw_eio3(emu, await token_for(emu))
        await ws.send("420" + json.dumps(["subscribe", CROWD]))
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        assert ws.close_code == (code or 1006)
        await asyncio.sleep(0.1)
    disconnects = [e for e in read_journal(str(path)) if e["event"] == "disconnect"]
    assert disconnects[0]["reason"] == "fault" and disconnects[0]["code"] == (code or 1006)


async def test_eio3_wire_framing_ack_and_res_and_garbage_input_survives():
    async with emulator(max_frame_bytes=2000) as emu:
        token = await token_for(emu)
        ws = await raw_eio3(emu, token)
        opened = json.loads((await emu_open_packet(emu, token))[1:])
        assert (opened["pingInterval"], opened["pingTimeout"], opened["upgrades"]) == (25000, 60000, [])  # 1.x defaults
        await ws.send("2")
        assert await asyncio.wait_for(ws.recv(), 5) == "3"          # Engine.IO ping/pong
        for junk in ("42not json", "4", "49[]", '42{"not":"a list"}'):
            await ws.send(junk)
            reply = await asyncio.wait_for(ws.recv(), 5)
            assert reply.startswith('42["err",{"message":"Bad socket.io packet (')
        await ws.send("420" + json.dumps(["subscribe", CROWD]))
        assert await asyncio.wait_for(ws.recv(), 5) == "430[null]"
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert frame.startswith('42["res",[{"ts":')
        await ws.send("42" + json.dumps(["x", "y" * 5000]))        # over max_frame_bytes: the socket is closed
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 5)
        client = await Client().connect(emu, token)              # the server is still fine
        assert await client.sio.call("subscribe", CROWD, timeout=3) is None
        await client.sio.disconnect()


async def test_engineio_keepalive_keeps_a_pinging_client_and_drops_a_silent_one():
    async with emulator(settings=MarketProphitSettings(ping_interval_s=0.2, ping_timeout_s=0.5)) as emu:
        token = await token_for(emu)
        client = await Client().connect(emu, token)
        silent = await raw_eio3(emu, token)
        assert json.loads((await emu_open_packet(emu, token))[1:])["pingInterval"] == 200
        with pytest.raises(websockets.ConnectionClosed):
            while True:
                await asyncio.wait_for(silent.recv(), 3)
        await asyncio.sleep(0.6)
        assert not client.gone.is_set() and await client.sio.call("subscribe", CROWD, timeout=3) is None
        await client.sio.disconnect()


async def emu_open_packet(emu, token: str) -> str:
    async with websockets.connect(emu.ws_url(f"/socket.io/?EIO=3&transport=websocket&token={token}")) as ws:
        return await asyncio.wait_for(ws.recv(), 5)


async def test_stall_is_a_pause_in_res_and_journaled(tmp_path):
    path = tmp_path / "j.jsonl"
    async with emulator("stall_every=0.3,stall_for=0.8", rate=100, journal=str(path)) as emu:
        client = await Client().connect(emu, await token_for(emu))
        loop, arrivals = asyncio.get_running_loop(), []
        client.sio.on("res", lambda data: arrivals.append(loop.time()))
        await client.sio.call("subscribe", CROWD, timeout=3)
        for _ in range(150):
            if len(arrivals) > 100:
                break
            await asyncio.sleep(0.02)
        await client.sio.disconnect()
    assert max(b - a for a, b in zip(arrivals, arrivals[1:])) >= 0.6
    assert any(e.get("fault") == "stall" for e in read_journal(str(path)))


async def test_auth_fail_refuses_the_first_attempt_and_slow_delays_acks():
    async with emulator("auth_fail=1,slow=0.3") as emu:
        assert (await post_jwt(emu)).status == 401
        client = await Client().connect(emu, await token_for(emu))
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert await client.sio.call("subscribe", CROWD, timeout=3) is None
        assert loop.time() - started >= 0.3
        await client.sio.disconnect()


async def test_same_seed_same_values():
    async def values(seed):
        async with emulator(rate=200, seed=seed) as emu:
            client = await Client().connect(emu, await token_for(emu))
            await client.sio.call("subscribe", CROWD, timeout=3)
            res = await client.until(5)
            await client.sio.disconnect()
        return [b[0]["average_sentiment"] for b in res[:5]]
    assert await values(2) == await values(2) != await values(3)


async def test_cli_serves_rest_and_socketio_on_one_port_and_enforces_the_configured_key(tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")
    cmd = tickpipe_command("emulate", "marketprophit", "--port", "0", "--rate", "50", "--ops-port", "0")
    env = {"TICKPIPE_EMULATOR_MARKETPROPHIT_SECRET_KEY_FILE": str(tmp_path / "key")}
    with Child(cmd, "marketprophit emulator", env=env) as child:
        class Ready:
            http_url = staticmethod(lambda p: f"http://127.0.0.1:{child.ready['port']}{p}")
        assert (await post_jwt(Ready, "sk_live_" + "n" * 24)).status == 401
        client = await Client().connect(Ready, await token_for(Ready))
        assert await client.sio.call("subscribe", CROWD, timeout=3) is None
        await client.until(2)
        await client.sio.disconnect()
