"""Alpaca emulator, legacy v1 stream (``/stream``): authenticate, listen/unlisten, frames, errors."""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets

from tests.emulators.alpaca_support import running

AUTHORIZED = {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}
UNAUTHORIZED = {"stream": "authorization", "data": {"action": "authenticate", "status": "unauthorized"}}


async def call(ws, msg) -> dict:
    await ws.send(json.dumps(msg))
    return await next_control(ws)


async def next_control(ws) -> dict:
    while True:
        doc = json.loads(await asyncio.wait_for(ws.recv(), 5))
        if doc["stream"] in ("authorization", "listening"):
            return doc


def auth(key="AKV1", secret="v1-secret") -> dict:
    return {"action": "authenticate", "data": {"key_id": key, "secret_key": secret}}


async def test_v1_session_listen_data_and_unlisten():
    async with running(rate=300, bar_interval_s=0.2) as emu:
        async with websockets.connect(emu.ws_url("/stream")) as ws:
            with pytest.raises(asyncio.TimeoutError):  # the server says nothing first
                await asyncio.wait_for(ws.recv(), 0.2)
            assert await call(ws, auth()) == AUTHORIZED
            ack = await call(ws, {"action": "listen", "data": {"streams": [
                "alpacadatav1/T.SPY", "Q.SPY", "AM.*", "T.*", "X.SPY", "T.spy"]}})
            assert ack == {"stream": "listening", "data": {"streams": ["T.SPY", "Q.SPY", "AM.*"]}}
            seen: dict[str, dict] = {}
            while len(seen) < 3:
                doc = json.loads(await asyncio.wait_for(ws.recv(), 5))
                seen.setdefault(doc["stream"].split(".")[0], doc)
            t, q, am = seen["T"]["data"], seen["Q"]["data"], seen["AM"]["data"]
            assert t["ev"] == "T" and t["T"] == "SPY" and isinstance(t["x"], int) and t["t"] > 10**18
            assert all(isinstance(c, int) for c in t["c"]) and isinstance(t["z"], int)
            assert q["ev"] == "Q" and q["p"] < q["P"]
            assert am["ev"] == "AM" and am["e"] - am["s"] == 200 and am["av"] >= am["v"]
            ack = await call(ws, {"action": "unlisten", "data": {"streams": ["T.SPY", "AM.*"]}})
            assert ack["data"]["streams"] == ["Q.SPY"]
            assert await call(ws, auth()) == {"stream": "listening",
                                              "data": {"error": "your connection is already authenticated"}}


async def test_v1_errors_and_second_connection():
    from tickpipe.config import Secret
    async with running(key_id="AKV1", secret_key=Secret("v1-secret"), symbol_limit=2) as emu:
        async with websockets.connect(emu.ws_url("/stream")) as ws:
            assert await call(ws, {"action": "listen", "data": {"streams": ["T.SPY"]}}) == \
                {"stream": "authorization", "data": {"action": "listen", "status": "unauthorized"}}
            assert await call(ws, auth(secret="wrong")) == UNAUTHORIZED
            assert await call(ws, {"action": "jump"}) == {"stream": "listening", "data": {"error": "invalid syntax"}}
            await ws.send("{{{")
            assert await next_control(ws) == {"stream": "listening", "data": {"error": "invalid syntax"}}
            assert await call(ws, auth()) == AUTHORIZED
            ack = await call(ws, {"action": "listen", "data": {"streams": ["T.A", "Q.B", "T.C", "AM.C"]}})
            assert ack["data"]["streams"] == ["T.A", "Q.B", "AM.C"], "T./Q. past the limit are left out"
            async with websockets.connect(emu.ws_url("/stream")) as second:
                assert await call(second, auth()) == {"stream": "listening", "data": {
                    "error": "your connection is rejected while another connection is open under the same account"}}
