"""Alpaca emulator error paths: every error code where it applies, header auth, bad input."""

from __future__ import annotations

import asyncio
import base64

import pytest
import websockets

from tests.emulators.alpaca_support import Client, journal_lines, running
from tickpipe.config import Secret


def err(code: int, msg: str) -> dict:
    return {"T": "error", "code": code, "msg": msg}


async def test_bad_input_gets_400_and_the_server_carries_on():
    async with running() as emu:
        c = await Client.open(emu, "/v2/iex")
        assert (await c.recv())["msg"] == "connected"
        for bad in ("not json", "[1, 2]", '{"action": "dance"}', '{"no": "action"}', "\u0000{]"):
            await c.ws.send(bad)
            assert await c.recv() == err(400, "invalid syntax"), bad
        await c.ws.send(b"\xc1\xc1 binary garbage")
        assert await c.recv() == err(400, "invalid syntax")
        await c.send({"action": "subscribe", "trades": ["AAPL"]})
        assert await c.recv() == err(401, "not authenticated")
        await c.send({"action": "auth", "key": "k", "secret": "s"})
        assert await c.recv() == {"T": "success", "msg": "authenticated"}
        for bad in ({"trades": "AAPL"}, {"trades": [1]}, {"trades": ["aapl"]}, {"trades": ["BTC/USD"]},
                    {"wibble": ["AAPL"]}):
            await c.send({"action": "subscribe", **bad})
            assert await c.recv() == err(400, "invalid syntax"), bad
        await c.send({"action": "subscribe", "orderbooks": ["AAPL"]})
        assert await c.recv() == err(410, "invalid subscribe action for this feed")
        await c.send({"action": "auth", "key": "k", "secret": "s"})
        assert await c.recv() == err(403, "already authenticated")
        await c.ws.send('{"action": "subscribe", "bars": ["' + "A" * (1 << 20) + '"]}')  # over max_frame_bytes
        assert await c.recv() == err(400, "invalid syntax")
        ack = await c.subscribe(trades=["AAPL"], corrections=["AAPL"], news=None)
        assert ack["trades"] == ["AAPL"]
        await c.close()


async def test_configured_credentials_are_enforced_402_and_kept_open():
    async with running(key_id="PKGOOD", secret_key=Secret("right-secret")) as emu:
        c = await Client.open(emu, "/v2/iex", use_msgpack=True)
        assert (await c.recv())["msg"] == "connected"
        for key, secret in (("PKGOOD", "wrong"), ("PKBAD", "right-secret"), ("PKGOOD", ""), (None, None)):
            await c.send({"action": "auth", "key": key, "secret": secret})
            assert await c.recv() == err(402, "auth failed")
        await c.send({"action": "auth", "key": "PKGOOD", "secret": "right-secret"})
        assert await c.recv() == {"T": "success", "msg": "authenticated"}
        await c.close()


async def test_symbol_limit_405_keeps_the_previous_set():
    async with running(symbol_limit=3) as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AAPL", "AMD"], quotes=["AAPL"], bars=[f"B{i}" for i in range(10)])
        await c.send({"action": "subscribe", "quotes": ["MSFT", "TSLA"]})
        assert await c.control() == err(405, "symbol limit exceeded")
        await c.send({"action": "subscribe", "trades": ["*"]})
        assert await c.control() == err(405, "symbol limit exceeded")
        ack = await c.subscribe(quotes=["MSFT"])
        assert ack["trades"] == ["AAPL", "AMD"] and ack["quotes"] == ["AAPL", "MSFT"]
        await c.close()
        s = await Client.open(emu, "/v2/sip")  # SIP: no limit
        await s.login()
        assert (await s.subscribe(trades=["*"]))["trades"] == ["*"]
        await s.close()


async def test_second_connection_on_one_key_gets_406_until_the_first_closes():
    async with running() as emu:
        first = await Client.open(emu, "/v2/iex")
        await first.login("PKONE")
        second = await Client.open(emu, "/v2/iex")
        assert (await second.recv())["msg"] == "connected"
        await second.send({"action": "auth", "key": "PKONE", "secret": "x"})
        assert await second.recv() == err(406, "connection limit exceeded")
        other = await Client.open(emu, "/v2/sip")  # the limit is per endpoint
        await other.login("PKONE")
        await first.close()
        await asyncio.sleep(0.1)
        await second.send({"action": "auth", "key": "PKONE", "secret": "x"})  # retried in place, as Go does
        assert await second.recv() == {"T": "success", "msg": "authenticated"}
        await second.close()
        await other.close()


async def test_denied_feed_409_and_auth_timeout_404_then_close(tmp_path):
    async with running(denied_feeds=("sip",), auth_timeout_s=0.3, journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/sip")
        assert (await c.recv())["msg"] == "connected"
        await c.send({"action": "auth", "key": "k", "secret": "s"})
        assert await c.recv() == err(409, "insufficient subscription")
        assert await c.recv() == err(404, "auth timeout")
        with pytest.raises(websockets.ConnectionClosed):
            await c.recv()
        assert c.ws.close_code == 1008
        await asyncio.sleep(0.05)
        assert {"event": "disconnect", "conn": 1, "reason": "auth_timeout", "code": 1008}.items() <= \
            [e for e in journal_lines(emu) if e["event"] == "disconnect"][0].items()


@pytest.mark.parametrize("headers", [
    {"APCA-API-KEY-ID": "PKHDR", "APCA-API-SECRET-KEY": "hdr-secret"},
    {"Authorization": "Basic " + base64.b64encode(b"PKHDR:hdr-secret").decode()},
    {"Authorization": "Bearer tok-123456"},
])
async def test_upgrade_header_auth(headers):
    async with running(key_id="PKHDR", secret_key=Secret("hdr-secret"), access_token=Secret("tok-123456")) as emu:
        c = await Client.open(emu, "/v2/iex", headers=headers)
        assert await c.recv() == {"T": "success", "msg": "connected"}
        assert await c.recv() == {"T": "success", "msg": "authenticated"}
        assert (await c.subscribe(trades=["AAPL"]))["trades"] == ["AAPL"]
        await c.close()
        bad = await Client.open(emu, "/v2/iex", headers={"APCA-API-KEY-ID": "PKHDR", "APCA-API-SECRET-KEY": "no"})
        assert (await bad.recv())["msg"] == "connected"
        assert await bad.recv() == err(402, "auth failed")
        await bad.close()


async def test_close_on_auth_error_option_closes_after_402():
    async with running(key_id="PK", secret_key=Secret("sec-ret"), close_on_auth_error=True) as emu:
        c = await Client.open(emu, "/v2/iex")
        assert (await c.recv())["msg"] == "connected"
        await c.send({"action": "auth", "key": "PK", "secret": "nope"})
        assert await c.recv() == err(402, "auth failed")
        with pytest.raises(websockets.ConnectionClosed):
            await c.recv()


async def test_plain_http_get_is_refused_without_harm():
    import aiohttp
    async with running() as emu:
        async with aiohttp.ClientSession() as http:
            async with http.get(emu.http_url("/v2/iex")) as resp:
                assert resp.status >= 400
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        assert (await c.subscribe(quotes=["AMD"]))["quotes"] == ["AMD"]
        await c.close()
