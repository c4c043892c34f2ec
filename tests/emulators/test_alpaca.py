"""Alpaca emulator: v2 stock and crypto handshakes, data shapes, subscriptions, the CLI."""

from __future__ import annotations

import asyncio
import re
import time
from decimal import Decimal

import msgpack
import websockets

from tests.emulators.alpaca_support import Client, journal_lines, running, trades_of
from tickpipe.children import Child, tickpipe_command

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z$")
STOCK_ACK_KEYS = ["T", "trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds",
                  "imbalances", "corrections", "cancelErrors"]


async def test_json_handshake_subscription_set_and_trades():
    async with running() as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        ack = await c.subscribe(trades=["AAPL"], quotes=["AAPL", "MSFT"])
        assert list(ack) == STOCK_ACK_KEYS
        assert ack["trades"] == ["AAPL"] and ack["quotes"] == ["AAPL", "MSFT"] and ack["bars"] == []
        assert ack["corrections"] == ack["cancelErrors"] == ["AAPL"]
        ack = await c.subscribe(bars=["*"], trades=["MSFT"])  # additive
        assert ack["trades"] == ["AAPL", "MSFT"] and ack["bars"] == ["*"] and ack["quotes"] == ["AAPL", "MSFT"]
        msgs = await c.collect(40)
        trades = trades_of(msgs)
        for t in trades:
            assert list(t) == ["T", "S", "i", "x", "p", "s", "c", "z", "t"]
            assert RFC3339.match(t["t"]) and isinstance(t["p"], float) and isinstance(t["s"], int)
        for sym in ("AAPL", "MSFT"):
            ids = [t["i"] for t in trades if t["S"] == sym]
            assert ids == list(range(ids[0], ids[0] + len(ids))), "trade ids are contiguous per instrument"
        quotes = [m for m in msgs if m.get("T") == "q"]
        assert quotes and all(q["bp"] < q["ap"] for q in quotes)
        await c.close()


async def test_msgpack_mode_t_first_timestamp_ext_and_binary_frames():
    async with running() as emu:
        c = await Client.open(emu, "/v2/sip", use_msgpack=True)
        await c.login()
        await c.subscribe(trades=["TSLA"], quotes=["TSLA"])
        raw = await asyncio.wait_for(c.ws.recv(), 5)
        assert isinstance(raw, bytes)
        msgs = msgpack.unpackb(raw)
        assert msgs and all(next(iter(m)) == "T" for m in msgs)
        for m in (msgs + await c.collect(10)):
            assert isinstance(m["t"], msgpack.Timestamp)
            assert abs(m["t"].to_unix_nano() - time.time_ns()) < 60e9
        await c.close()


async def test_unsubscribe_answers_full_set_and_stops_that_data():
    async with running() as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AAPL", "AMD"])
        await c.send({"action": "unsubscribe", "trades": ["AAPL"]})
        ack = await c.control()
        assert ack["trades"] == ["AMD"] and ack["corrections"] == ["AMD"]
        assert {t["S"] for t in trades_of(await c.collect(15))} == {"AMD"}
        await c.close()


async def test_crypto_orderbook_snapshot_then_changes_and_crypto_shapes():
    async with running() as emu:
        c = await Client.open(emu, "/v1beta3/crypto/us", use_msgpack=True)
        await c.login()
        ack = await c.subscribe(trades=["BTC/USD"], quotes=["BTC/USD"], orderbooks=["BTC/USD"])
        assert list(ack) == ["T", "trades", "quotes", "orderbooks", "bars", "updatedBars", "dailyBars"]
        first = await c.recv()
        assert first["T"] == "o" and first["r"] is True and len(first["b"]) == len(first["a"]) == 10
        book = {"b": {lv["p"]: lv["s"] for lv in first["b"]}, "a": {lv["p"]: lv["s"] for lv in first["a"]}}
        msgs = await c.collect(30, kinds=("o",))
        for m in msgs:
            if m["T"] == "o":
                assert "r" not in m
                for side in ("b", "a"):
                    for lv in m[side]:
                        book[side].pop(lv["p"], None) if lv["s"] == 0 else book[side].__setitem__(lv["p"], lv["s"])
                assert max(book["b"]) < min(book["a"]), "the book never crosses"
            elif m["T"] == "t":
                assert set(m) == {"T", "S", "p", "s", "t", "i", "tks"} and isinstance(m["s"], float)
            elif m["T"] == "q":
                assert set(m) == {"T", "S", "bp", "bs", "ap", "as", "t"}
                assert (m["bp"], m["ap"]) == (max(book["b"]), min(book["a"]))
        await c.close()


async def test_bars_agree_with_the_trades_and_daily_bar_accumulates():
    async with running(rate=300, bar_interval_s=0.25) as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["SPY"], bars=["SPY"], dailyBars=["SPY"])
        msgs = await c.collect(4, kinds=("b",))
        trades = trades_of(msgs)
        bars = [m for m in msgs if m["T"] == "b"][1:]  # the first bar may hold trades from before we listened
        days = [m for m in msgs if m["T"] == "d"]
        for bar in bars:
            start = bar["t"]
            inside = [t for t in trades if _bar_start(t["t"]) == start]
            prices = [Decimal(str(t["p"])) for t in inside]
            assert bar["n"] == len(inside) and bar["v"] == sum(t["s"] for t in inside)
            assert (bar["o"], bar["c"]) == (inside[0]["p"], inside[-1]["p"])
            assert (Decimal(str(bar["h"])), Decimal(str(bar["l"]))) == (max(prices), min(prices))
        assert [d["n"] for d in days] == sorted(d["n"] for d in days) and days[-1]["t"].endswith("T00:00:00Z")
        await c.close()


def _bar_start(ts: str, bar_ns: int = 250_000_000) -> str:
    from datetime import datetime
    from tickpipe.emulators.alpaca_wire import rfc3339
    whole, _, frac = ts.rstrip("Z").partition(".")
    ns = int(datetime.fromisoformat(whole + "+00:00").timestamp()) * 10**9 + int((frac or "0").ljust(9, "0"))
    return rfc3339(ns - ns % bar_ns)


async def test_test_feed_serves_fakepaca_only_and_delayed_sip_lags():
    async with running() as emu:
        c = await Client.open(emu, "/v2/test")
        await c.login()
        await c.subscribe(trades=["FAKEPACA", "AAPL"], quotes=["FAKEPACA"])
        assert {m["S"] for m in await c.collect(10)} == {"FAKEPACA"}
        await c.close()
        d = await Client.open(emu, "/v2/delayed_sip", use_msgpack=True)
        await d.login()
        await d.subscribe(trades=["AAPL"])
        lag_s = (time.time_ns() - trades_of(await d.collect(1))[0]["t"].to_unix_nano()) / 1e9
        assert 890 < lag_s < 910
        await d.close()


async def test_any_wellformed_symbol_gets_data_and_rate_zero_streams_fast():
    async with running(rate=0) as emu:
        c = await Client.open(emu, "/v2/sip", use_msgpack=True)
        await c.login()
        await c.subscribe(trades=["ZVZZT"])
        trades = trades_of(await c.collect(2000))
        assert {t["S"] for t in trades} == {"ZVZZT"} and len({t["i"] for t in trades}) == len(trades)
        await c.close()


async def test_fragmented_subscribe_is_reassembled():
    async with running() as emu:
        c = await Client.open(emu, "/v2/iex", use_msgpack=True)
        await c.login()
        body = msgpack.packb({"action": "subscribe", "trades": ["AAPL"], "bars": [f"S{i:04d}" for i in range(3000)]})
        await c.ws.send([body[i:i + 4096] for i in range(0, len(body), 4096)])  # continuation frames
        ack = await c.control()
        assert ack["T"] == "subscription" and len(ack["bars"]) == 3000 and ack["trades"] == ["AAPL"]
        await c.close()


async def test_same_seed_same_data():
    async def first_trades(seed: int) -> list[tuple]:
        async with running(seed=seed) as emu:
            c = await Client.open(emu, "/v2/iex")
            await c.login()
            await c.subscribe(trades=["AAPL"])
            trades = trades_of(await c.collect(15))
            await c.close()
            return [(t["i"], t["p"], t["s"]) for t in trades]

    assert await first_trades(7) == await first_trades(7)
    assert await first_trades(7) != await first_trades(8)


async def test_reconnect_continues_trade_ids_for_the_account(tmp_path):
    async with running(journal=tmp_path / "j.jsonl") as emu:
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AMD"])
        await c.collect(5)
        await c.close()
        await asyncio.sleep(0.1)
        sent = [e["ids"]["trade_id"] for e in journal_lines(emu) if e["event"] == "sent" and e["conn"] == 1]
        c = await Client.open(emu, "/v2/iex")
        await c.login()
        await c.subscribe(trades=["AMD"])
        assert trades_of(await c.collect(1))[0]["i"] == sent[-1] + 1
        await c.close()


def test_cli_emulator_subprocess_serves_alpaca(tmp_path):
    cmd = tickpipe_command("emulate", "alpaca", "--port", "0", "--rate", "100", "--ops-port", "0",
                           "--journal", str(tmp_path / "j.jsonl"))
    with Child(cmd, "alpaca emulator", log_file=tmp_path / "emu.log") as child:
        port = child.ready["port"]

        async def session() -> list:
            async with websockets.connect(f"ws://127.0.0.1:{port}/v2/iex") as ws:
                c = Client(ws, False)
                await c.login()
                await c.subscribe(trades=["NVDA"])
                return trades_of(await c.collect(3))

        assert [t["S"] for t in asyncio.run(session())] == ["NVDA"] * 3
    assert (tmp_path / "j.jsonl").read_text().count('"event":"sent"') >= 3


async def test_permessage_deflate_pings_and_unconfirmed_options():
    async with running(server_ping_s=0.1, quote_size_lots=True) as emu:
        c = await Client.open(emu, "/v2/iex")
        assert "permessage-deflate" in c.ws.response.headers["Sec-WebSocket-Extensions"]
        await asyncio.wait_for(await c.ws.ping(), 2)  # the server answers pings
        await c.login()
        await c.subscribe(quotes=["MSFT"])
        quotes = [m for m in await c.collect(10, kinds=("q",)) if m["T"] == "q"]
        assert all(1 <= q["bs"] <= 9 and 1 <= q["as"] <= 9 for q in quotes), "sizes in round lots"
        await asyncio.sleep(0.3)  # several server pings, answered by the client library
        assert c.ws.state.name == "OPEN"
        await c.close()


async def test_symbols_option_splits_stocks_and_crypto():
    async with running(symbols=("ZZZ", "ABC/USD")) as emu:
        stocks = await Client.open(emu, "/v2/sip")
        await stocks.login()
        await stocks.subscribe(trades=["*"])
        assert {t["S"] for t in trades_of(await stocks.collect(5))} == {"ZZZ"}
        await stocks.close()
        crypto = await Client.open(emu, "/v1beta3/crypto/eu-1")
        await crypto.login()
        await crypto.subscribe(trades=["*"])
        assert {t["S"] for t in trades_of(await crypto.collect(5))} == {"ABC/USD"}
        await crypto.close()
