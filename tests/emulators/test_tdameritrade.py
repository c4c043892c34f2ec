"""TD Ameritrade / Schwab streamer emulators: handshake, requests, data shapes and error replies.

Real aiohttp/websockets clients over 127.0.0.1 against the real emulator servers.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import websockets

from tickpipe.config import Secret
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.streamer_fields import FIELDS, field_ids
from tickpipe.emulators.tdameritrade import SchwabEmulator, StreamerEmulatorSettings, TDAmeritradeEmulator
from tickpipe.emulators.tdameritrade_records import minute_index
from tests.emulators.streamer_client import StreamerClient, data_records, discovery, fetch_token

FAST = StreamerEmulatorSettings(heartbeat_s=0.2, clock_speed=120)


def options(**kw) -> EmulatorOptions:
    return EmulatorOptions(rate=kw.pop("rate", 200), credentials=kw.pop("credentials", FAST), **kw)


async def test_tda_rest_then_login_with_credential_string():
    async with TDAmeritradeEmulator(options()) as emu:
        tok = await fetch_token(emu)
        assert tok.status == 200 and tok.body["token_type"] == "Bearer" and tok.body["expires_in"] == 1800
        status, principals = await discovery(emu, tok.body["access_token"])
        assert status == 200
        host = principals["streamerInfo"]["streamerSocketUrl"]
        assert host == f"127.0.0.1:{emu.port}"              # a bare host, as TDA hands it out
        assert len(principals["streamerSubscriptionKeys"]["keys"][0]["key"]) >= 64
        client = await StreamerClient.connect(emu, tok.body["access_token"])
        assert [type(e).__name__ for e in client.ws.protocol.extensions] == ["PerMessageDeflate"]
        resp = await client.login()
        assert resp["content"]["code"] == 0
        assert (resp["service"], resp["command"], resp["requestid"]) == ("ADMIN", "LOGIN", "0")
        assert "SchwabClientCorrelId" not in resp and isinstance(resp["timestamp"], int)
        beat = next(f for f in await client.collect(1.0, lambda fs: any("notify" in f for f in fs)) if "notify" in f)
        assert beat["notify"][0]["heartbeat"].isdigit()     # epoch ms as a string
        await client.close()


async def test_tda_quote_full_image_then_sparse_deltas_with_tda_numbering():
    async with TDAmeritradeEmulator(options()) as emu:
        client = await StreamerClient.connect(emu)
        assert (await client.login())["content"]["code"] == 0
        resp = await client.subscribe("QUOTE", "AAPL", "0,1,2,3,4,5,8,10,15,25,49,50")
        assert resp["content"] == {"code": 0, "msg": "SUBS command succeeded"}
        records = data_records(await client.collect(1.5, lambda fs: len(data_records(fs)) >= 6), "QUOTE")
        image, deltas = records[0], records[1:]
        assert image["key"] == "AAPL" and image["assetMainType"] == "EQUITY" and "cusip" in image
        assert {"1", "2", "3", "15", "25", "49", "50"} <= set(image)     # every requested field available
        assert set(image) - {"key", "delayed", "assetMainType", "assetSubType", "cusip", "_service"} <= \
            {"1", "2", "3", "4", "5", "8", "10", "15", "25", "49", "50"}
        assert image["1"] < image["2"]                                    # bid below ask
        assert deltas and all("25" not in d and "cusip" not in d for d in deltas)   # static fields only once
        assert isinstance(image["10"], int) and image["10"] < 86400       # TDA TRADE_TIME: seconds since midnight
        await client.close()


async def test_schwab_subs_add_unsubs_view_semantics():
    async with SchwabEmulator(options()) as emu:
        client = await StreamerClient.connect(emu)
        assert (await client.login())["content"]["msg"].startswith("server=")
        assert (await client.subscribe("LEVELONE_EQUITIES", "AAPL,MSFT", "0,1,2,3"))["content"]["code"] == 0
        assert (await client.subscribe("LEVELONE_EQUITIES", "SPY", "0,1,2,3", command="ADD"))["content"]["code"] == 0
        recs = data_records(await client.collect(2, lambda fs: {r["key"] for r in data_records(fs)} >= {"AAPL", "MSFT", "SPY"}))
        assert {r["key"] for r in recs} == {"AAPL", "MSFT", "SPY"}
        assert all(set(r) - {"key", "_service", "delayed", "assetMainType", "assetSubType", "cusip"} <= {"1", "2", "3"} for r in recs)
        add = next(f for f in client.frames if "data" in f and f["data"][0]["content"][0]["key"] == "SPY")
        assert add["data"][0]["command"] == "ADD"
        resp = await client.response(await client.request("LEVELONE_EQUITIES", "UNSUBS", {"keys": "AAPL,MSFT"}))
        assert resp["content"]["code"] == 0
        resp = await client.response(await client.request("LEVELONE_EQUITIES", "VIEW", {"fields": "0,33"}))
        assert resp["content"] == {"code": 0, "msg": "VIEW command succeeded"}
        await asyncio.sleep(0.2)
        later = data_records(await client.collect(1.0))
        assert later and {r["key"] for r in later} == {"SPY"}
        assert all(set(r) - {"key", "_service", "delayed", "assetMainType", "assetSubType", "cusip"} <= {"33"} for r in later[1:])
        # SUBS replaces the whole set
        await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1")
        await asyncio.sleep(0.2)
        assert {r["key"] for r in data_records(await client.collect(0.8))} == {"AAPL"}
        await client.close()


@pytest.mark.parametrize("chart_time_ms,base_min,expected", [
    (1715903940000, 420, 779),    # the Schwab capture: 23:59 UTC = 19:59 EDT
    (1590597540000, 420, 339),    # the TDA capture: 16:39 UTC = 12:39 EDT
    (1795332720000, 420, 1172),   # 02:32 EST, before the pre-market: counts from the day before's 07:00
    (1795332720000, 120, 32),     # another base (the 07:00 is inferred)
])
def test_chart_sequence_is_a_minute_index_from_the_base(chart_time_ms, base_min, expected):
    assert minute_index(chart_time_ms, base_min) == expected


@pytest.mark.parametrize("cls,seq_field,open_field", [(SchwabEmulator, "1", "2"), (TDAmeritradeEmulator, "6", "1")])
async def test_chart_equity_numbering_and_bars_agree_with_timesales(cls, seq_field, open_field):
    async with cls(options()) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        if cls is TDAmeritradeEmulator:
            await client.subscribe("TIMESALE_EQUITY", "MSFT", "0,1,2,3,4")
        await client.subscribe("CHART_EQUITY", "MSFT", "0,1,2,3,4,5,6,7,8")
        frames = await client.collect(4, lambda fs: len(data_records(fs, "CHART_EQUITY")) >= 3)
        bars = data_records(frames, "CHART_EQUITY")
        assert [b["seq"] for b in bars] == list(range(len(bars))) and len(bars) >= 2
        names = FIELDS[emu.flavour]["CHART_EQUITY"]
        assert names[int(seq_field)] == "SEQUENCE" and names[int(open_field)] == "OPEN_PRICE"
        for bar in bars:
            assert bar["7"] % 60_000 == 0 and bar["8"] == bar["7"] // 86_400_000
            assert isinstance(bar[seq_field], int) and 0 <= bar[seq_field] < 24 * 60
            ids = {name: str(num) for name, num in field_ids(emu.flavour, "CHART_EQUITY").items()}
            assert bar[ids["LOW_PRICE"]] <= min(bar[open_field], bar[ids["CLOSE_PRICE"]]) <= bar[ids["HIGH_PRICE"]]
        if cls is TDAmeritradeEmulator:
            trades = data_records(frames, "TIMESALE_EQUITY")
            ids = [t["4"] for t in trades]
            assert ids == list(range(ids[0], ids[0] + len(ids)))          # contiguous trade ids
            for bar in bars[1:]:                                          # the first bar may predate the subscription
                inside = [t for t in trades if bar["7"] <= t["1"] < bar["7"] + 60_000]
                assert inside and bar["1"] == inside[0]["2"] and bar["4"] == inside[-1]["2"]
                assert bar["2"] == max(t["2"] for t in inside) and bar["3"] == min(t["2"] for t in inside)
                assert bar["5"] == sum(t["3"] for t in inside)
        await client.close()


async def test_books_futures_forex_and_screener_records():
    async with SchwabEmulator(options()) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        await client.subscribe("NASDAQ_BOOK", "MSFT", "0,1,2,3")
        await client.subscribe("LEVELONE_FUTURES", "/ES", "0,1,2,3,6,7,10")
        await client.subscribe("LEVELONE_FOREX", "EUR/USD", "0,1,2,3")
        await client.subscribe("SCREENER_EQUITY", "NYSE_VOLUME_5", "0,1,2,3,4")
        await client.collect(2, lambda fs: len({r["_service"] for r in data_records(client.frames)}) == 4)
        frames = client.frames
        book = data_records(frames, "NASDAQ_BOOK")[-1]
        bids, asks = book["2"], book["3"]
        assert bids[0]["0"] > bids[1]["0"] and asks[0]["0"] < asks[1]["0"] and bids[0]["0"] < asks[0]["0"]
        assert all(lvl["1"] == sum(e["1"] for e in lvl["3"]) and lvl["2"] == len(lvl["3"]) for lvl in bids + asks)
        fut = data_records(frames, "LEVELONE_FUTURES")[0]
        assert fut["assetMainType"] == "FUTURE" and (fut["1"] * 4) == int(fut["1"] * 4)   # 0.25 tick
        assert field_ids("schwab", "LEVELONE_FUTURES")["BID_ID"] == 6 != field_ids("tdameritrade", "LEVELONE_FUTURES")["BID_ID"]
        fx = data_records(frames, "LEVELONE_FOREX")[0]
        assert 0.5 < fx["1"] < 2 and fx["1"] < fx["2"]
        screener = data_records(frames, "SCREENER_EQUITY")[0]
        assert screener["2"] == "VOLUME" and screener["3"] == 5 and isinstance(screener["4"], list)
        await client.close()


async def test_error_replies_and_server_survives():
    async with SchwabEmulator(options(credentials=StreamerEmulatorSettings(symbol_limit=3))) as emu:
        client = await StreamerClient.connect(emu)
        resp = await client.subscribe("LEVELONE_EQUITIES", "AAPL")        # before LOGIN
        assert resp["content"]["code"] == 20
        await client.login()
        await client.ws.send("not json at all")
        assert (await client.response())["content"]["code"] == 21
        await client.ws.send(b"\x00\x01binary")
        assert (await client.response())["content"]["code"] == 21
        await client.ws.send(json.dumps({"requests": [{"service": "X", "parameters": {}}]}))
        assert (await client.response())["content"]["code"] == 21
        await client.ws.send("{" + " " * (emu.options.max_frame_bytes + 10) + "}")
        resp = await client.response()
        assert resp["content"]["code"] == 21 and "exceeds" in resp["content"]["msg"]
        assert (await client.subscribe("TIMESALE_EQUITY", "AAPL"))["content"]["code"] == 11   # not on Schwab
        assert (await client.response(await client.request("LEVELONE_EQUITIES", "FROB", {"keys": "A"})))["content"]["code"] == 21
        assert (await client.subscribe("LEVELONE_EQUITIES", "A,B,C,D"))["content"]["code"] == 19
        assert (await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,x"))["content"]["code"] == 21
        resp = await client.subscribe("LEVELONE_EQUITIES", "AAPL", "0,1,2")
        assert resp["content"]["code"] == 0 and resp["SchwabClientCorrelId"] == client.identity()["SchwabClientCorrelId"]
        assert data_records(await client.collect(1, lambda fs: data_records(fs)))
        rid = await client.request("ADMIN", "LOGOUT")
        assert (await client.response(rid))["content"] == {"code": 0, "msg": "SUCCESS"}
        with pytest.raises(websockets.ConnectionClosed):
            await client.recv(2)


async def test_tda_qos_and_chart_history_snapshot():
    async with TDAmeritradeEmulator(options()) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        resp = await client.response(await client.request("ADMIN", "QOS", {"qoslevel": "0"}))
        assert resp["content"]["code"] == 0 and resp["command"] == "QOS"
        assert (await client.response(await client.request("ADMIN", "QOS", {"qoslevel": "9"})))["content"]["code"] == 21
        rid = await client.request("CHART_HISTORY_FUTURES", "GET", {"symbol": "/ES", "frequency": "m1", "period": "d1"})
        assert (await client.response(rid))["content"]["code"] == 0
        snap = next(f for f in await client.collect(2, lambda fs: any("snapshot" in f for f in fs)) if "snapshot" in f)
        assert snap["snapshot"][0]["content"][0]["key"] == "/ES"
        await client.close()


async def test_tda_login_validation_errors():
    async with TDAmeritradeEmulator(options()) as emu:
        for override in ({"acl": None}, {"token": "other-token"}, {"timestamp": "yesterday"}):
            client = await StreamerClient.connect(emu)
            req = client.login_request()
            if override.get("acl", 1) is None:
                req["credential"] = req["credential"].rsplit("&acl=", 1)[0]
            elif "token" in override:
                req["token"] = "other-token"
            else:
                req = client.login_request(timestamp="yesterday")
            resp = await client.response(await client.request("ADMIN", "LOGIN", req))
            assert resp["content"]["code"] == 3 and resp["content"]["msg"].startswith("Login Denied")
            with pytest.raises(websockets.ConnectionClosed):
                await client.recv(2)


async def test_configured_credentials_are_enforced():
    creds = StreamerEmulatorSettings(client_id=Secret("my-app"), client_secret=Secret("s3cret"),
                                     refresh_token=Secret("refresh-ok"), heartbeat_s=0.2)
    async with SchwabEmulator(options(credentials=creds)) as emu:
        assert (await fetch_token(emu, "my-app", "wrong", "refresh-ok")).status == 401
        assert (await fetch_token(emu, "my-app", "s3cret", "refresh-bad")).status == 400
        good = await fetch_token(emu, "my-app", "s3cret", "refresh-ok")
        assert good.status == 200
        assert (await discovery(emu, "made-up-token"))[0] == 401
        client = await StreamerClient.connect(emu, good.body["access_token"])
        bad = await client.login(token="made-up-token")
        assert bad["content"] == {"code": 3, "msg": "Login Denied.: token is invalid or has expired."}
        client2 = await StreamerClient.connect(emu, good.body["access_token"])
        assert (await client2.login())["content"]["code"] == 0
        await client2.close()


@pytest.mark.parametrize("mode", ["close_old", "reject_new"])
async def test_second_connection_gets_code_12(mode):
    settings = StreamerEmulatorSettings(heartbeat_s=0.2, second_connection=mode)
    async with TDAmeritradeEmulator(options(credentials=settings)) as emu:
        first = await StreamerClient.connect(emu)
        assert (await first.login())["content"]["code"] == 0
        second = await StreamerClient.connect(emu)
        resp = await second.login()
        if mode == "reject_new":
            assert resp["content"]["code"] == 12
            with pytest.raises(websockets.ConnectionClosed):
                await second.recv(2)
        else:
            assert resp["content"]["code"] == 0
            frames = await first.collect(2)
            notices = [n for f in frames for n in f.get("notify", []) if "content" in n]
            assert notices and notices[-1]["content"]["code"] == 12
            assert first.ws.close_code is not None
            await second.close()


async def test_empty_subscription_stops_with_code_30():
    settings = StreamerEmulatorSettings(heartbeat_s=0.1, empty_stop_s=0.4)
    async with SchwabEmulator(options(credentials=settings)) as emu:
        client = await StreamerClient.connect(emu)
        await client.login()
        started = time.monotonic()
        frames = await client.collect(3)
        notices = [n for f in frames for n in f.get("notify", []) if "content" in n]
        assert notices[-1]["content"]["code"] == 30 and "empty subscription" in notices[-1]["content"]["msg"]
        assert client.ws.close_code is not None and time.monotonic() - started < 3


async def test_streamer_url_names_the_host_the_client_used():
    import aiohttp

    for cls, path in ((TDAmeritradeEmulator, "/v1/userprincipals"), (SchwabEmulator, "/trader/v1/userPreference")):
        async with cls(options()) as emu:
            token = (await fetch_token(emu)).body["access_token"]
            async with aiohttp.ClientSession() as http:
                async with http.get(emu.http_url(path), headers={"Authorization": f"Bearer {token}",
                                                                 "Host": "emulator-feed:8080"}) as resp:
                    body = await resp.json()
            url = body["streamerInfo"]["streamerSocketUrl"] if cls is TDAmeritradeEmulator else \
                body["streamerInfo"][0]["streamerSocketUrl"]
            assert url == ("emulator-feed:8080" if cls is TDAmeritradeEmulator else "ws://emulator-feed:8080/ws")
