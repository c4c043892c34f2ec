"""Coinbase Advanced Trade emulator: handshake, channels, JWT auth and error replies over real websockets."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
import websockets

from tests.emulators.coinbase_helpers import (KEY_NAME, connect, ec_key, ed_key, emulator, is_error, make_jwt,
                                              public_pem, recv, recv_until, sub)


def channel(name):
    return lambda f: isinstance(f, dict) and f.get("channel") == name


async def test_handshake_ack_lists_whole_set_and_drops_unknown_products():
    async with emulator() as emu, connect(emu) as ws:
        await ws.send(sub("heartbeats", []))
        ack = await recv(ws)
        assert ack["channel"] == "subscriptions" and ack["sequence_num"] == 0 and ack["client_id"] == ""
        assert ack["events"] == [{"subscriptions": {"heartbeats": ["heartbeats"]}}]
        await ws.send(sub("ticker", ["BTC-USD", "NOPE-USD", "ETH-USD"]))
        ack = await recv(ws)
        assert ack["events"][0]["subscriptions"] == {"heartbeats": ["heartbeats"], "ticker": ["BTC-USD", "ETH-USD"]}
        snap = await recv(ws)
        assert snap["channel"] == "ticker" and snap["events"][0]["type"] == "snapshot"
        assert {t["product_id"] for t in snap["events"][0]["tickers"]} == {"BTC-USD", "ETH-USD"}
        await ws.send(sub("level2", ["NOPE-USD"]))   # nothing known: no level2 in the set, no error
        frames = await recv_until(ws, channel("subscriptions"))
        assert "level2" not in frames[-1]["events"][0]["subscriptions"]
        frames += await recv_until(ws, channel("heartbeats"))
        seqs = [f["sequence_num"] for f in [ack, snap] + frames]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))   # one counter across channels
        assert isinstance(frames[-1]["events"][0]["heartbeat_counter"], int)


async def test_level2_snapshot_then_absolute_updates_keep_book_uncrossed():
    async with emulator(rate=100) as emu, connect(emu) as ws:
        await ws.send(sub("level2", ["BTC-USD"]))
        frames = await recv_until(ws, channel("l2_data"))
        snap = frames[-1]["events"][0]
        assert snap["type"] == "snapshot" and snap["product_id"] == "BTC-USD"
        assert {u["side"] for u in snap["updates"]} == {"bid", "offer"}
        book = {(u["side"], Decimal(u["price_level"])): Decimal(u["new_quantity"]) for u in snap["updates"]}
        updates = 0
        while updates < 30:
            frame = await recv(ws)
            assert frame["channel"] == "l2_data"
            event = frame["events"][0]
            assert event["type"] == "update"
            for u in event["updates"]:
                assert u["side"] in ("bid", "offer")
                key = (u["side"], Decimal(u["price_level"]))
                if Decimal(u["new_quantity"]) == 0:
                    book.pop(key, None)
                else:
                    book[key] = Decimal(u["new_quantity"])
                assert Decimal(u["price_level"]) % Decimal("0.01") == 0
            bids = [p for s, p in book if s == "bid"]
            offers = [p for s, p in book if s == "offer"]
            assert max(bids) < min(offers)
            updates += 1


async def test_market_trades_ids_increase_and_ticker_and_candles_agree():
    async with emulator(rate=100) as emu, connect(emu) as ws:
        for ch in ("market_trades", "ticker", "candles"):
            await ws.send(sub(ch, ["ETH-USD"]))
        frames = await recv_until(ws, lambda f: f["channel"] == "candles" and f["events"][0]["type"] == "update",
                                  timeout=4)
        snapshot = next(f for f in frames if f["channel"] == "market_trades")["events"][0]
        assert snapshot["type"] == "snapshot" and len(snapshot["trades"]) >= 5
        last_id, last_price, newest_first_seen = int(snapshot["trades"][0]["trade_id"]), None, False
        for f in frames:
            event = f["events"][0]
            if f["channel"] == "market_trades" and event["type"] == "update":
                ids = [int(t["trade_id"]) for t in event["trades"]]
                assert sorted(ids) == list(range(last_id + 1, last_id + 1 + len(ids)))
                newest_first_seen |= len(ids) > 1 and ids[0] > ids[-1]
                assert all(t["side"] in ("BUY", "SELL") and t["product_id"] == "ETH-USD" for t in event["trades"])
                last_id = max(ids)
                last_price = next(t["price"] for t in event["trades"] if int(t["trade_id"]) == last_id)
            elif f["channel"] == "ticker" and event["type"] == "update":
                ticker = event["tickers"][0]
                assert ticker["price"] == last_price
                assert Decimal(ticker["best_bid"]) < Decimal(ticker["price"]) < Decimal(ticker["best_ask"])
        assert newest_first_seen
        candle = frames[-1]["events"][0]["candles"][0]
        assert candle["close"] == last_price and int(candle["start"]) % 300 == 0
        assert Decimal(candle["low"]) <= Decimal(last_price) <= Decimal(candle["high"])


async def test_ticker_batch_status_and_trade_order_setting():
    async with emulator(rate=100, ticker_batch_s=0.3, status_every_s=0.3, trades_newest_first=False,
                        send_client_id=False) as emu, connect(emu) as ws:
        for ch in ("ticker_batch", "status", "market_trades"):
            await ws.send(sub(ch, ["SOL-USD"]))
        frames = await recv_until(ws, lambda f: f["channel"] == "ticker_batch" and f["events"][0]["type"] == "update")
        batch = frames[-1]["events"][0]["tickers"][0]
        assert batch["product_id"] == "SOL-USD" and "best_bid" not in batch and "best_ask_quantity" not in batch
        assert all("client_id" not in f for f in frames)
        status = next(f for f in frames if f["channel"] == "status")["events"][0]["products"][0]
        assert status["id"] == "SOL-USD" and status["quote_increment"] == "0.01" and status["status"] == "online"
        for f in frames:
            if f["channel"] == "market_trades" and f["events"][0]["type"] == "update":
                ids = [int(t["trade_id"]) for t in f["events"][0]["trades"]]
                assert ids == sorted(ids)


async def test_unsubscribe_acks_remaining_set():
    async with emulator(rate=5) as emu, connect(emu) as ws:
        await ws.send(sub("ticker", ["BTC-USD", "ETH-USD"]))
        await ws.send(sub("heartbeats"))
        await ws.send(sub("ticker", ["ETH-USD"], kind="unsubscribe"))
        acks = []
        while len(acks) < 3:
            f = await recv(ws)
            if f["channel"] == "subscriptions":
                acks.append(f["events"][0]["subscriptions"])
        assert acks[-1] == {"ticker": ["BTC-USD"], "heartbeats": ["heartbeats"]}
        await ws.send(sub("ticker", kind="unsubscribe"))
        await ws.send(sub("heartbeats", [], kind="unsubscribe"))
        frames = await recv_until(ws, lambda f: f["channel"] == "subscriptions" and f["events"][0]["subscriptions"] == {})
        assert frames[-1]["events"] == [{"subscriptions": {}}]


async def test_jwt_es256_and_eddsa_verified_against_configured_keys():
    es, ed, stranger = ec_key(), ed_key(), ec_key()
    async with emulator(public_keys=public_pem(es, ed), key_name=KEY_NAME, rate=5) as emu, connect(emu) as ws:
        for key in (es, ed):
            await ws.send(sub("user", [], make_jwt(key)))
            frames = await recv_until(ws, channel("user"))
            event = frames[-1]["events"][0]
            assert event["type"] == "snapshot" and event["orders"] and "positions" in event
        await ws.send(sub("ticker", ["BTC-USD"], make_jwt(es)))     # public channel with a JWT: verified too
        await recv_until(ws, channel("ticker"))
        bad = [make_jwt(stranger), make_jwt(es, kid="organizations/other/apiKeys/x"), make_jwt(es, iss="coinbase-cloud"),
               make_jwt(es, nbf=time.time() - 300), make_jwt(ed, nbf=time.time() + 60), make_jwt(es, lifetime=600),
               make_jwt(es, sub="someone-else"), "not.a.jwt", None]
        for token in bad:
            await ws.send(sub("user", ["BTC-USD"], token))
            assert (await recv_until(ws, lambda f: is_error(f)))[-1] == {"type": "error", "message": "authentication failure"}
        await ws.send(sub("level2", ["BTC-USD"], make_jwt(stranger)))   # bad JWT on a public channel
        assert (await recv_until(ws, is_error))[-1]["message"] == "authentication failure"


async def test_without_configured_keys_any_well_formed_jwt_passes():
    async with emulator(rate=5) as emu, connect(emu) as ws:
        await ws.send(sub("user", [], make_jwt(ed_key(), kid="any-key")))
        await recv_until(ws, channel("user"))
        import jwt as pyjwt
        hs = pyjwt.encode({"sub": "k", "iss": "cdp", "nbf": int(time.time()), "exp": int(time.time()) + 60},
                          "x" * 32, algorithm="HS256", headers={"kid": "k"})
        for token in (hs, make_jwt(ec_key(), nbf=time.time() - 600), "a.b.c"):
            await ws.send(sub("user", [], token))
            assert (await recv_until(ws, is_error))[-1]["message"] == "authentication failure"


async def test_bad_input_gets_error_frames_and_connection_survives():
    async with emulator(rate=5) as emu, connect(emu) as ws:
        cases = [(sub("heartbeat"), "authentication failure"),       # cryptofeed's typo
                 ('{"type":"subscribe","channels":["ticker"],"product_ids":["BTC-USD"]}', "authentication failure"),
                 ("{not json", "failure to parse message"),
                 ('{"type":"hello"}', "unknown message type"),
                 ("[1,2]", "unknown message type"),
                 (sub("ticker", "BTC-USD"), "product_ids must be an array of strings"),
                 (b"\x00\x01binary", "failure to parse message")]
        for frame, message in cases:
            await ws.send(frame)
            assert await recv(ws) == {"type": "error", "message": message}
        await ws.send(sub("ticker", ["BTC-USD"]))
        assert (await recv(ws))["channel"] == "subscriptions"


async def test_oversized_message_gets_error_and_close_1009():
    async with emulator(rate=5) as emu, connect(emu) as ws:
        await ws.send(sub("ticker", ["BTC-USD" * 200_000]))
        assert await recv(ws) == {"type": "error", "message": "message too large"}
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1009


async def test_user_endpoint_serves_only_user_channels():
    async with emulator(rate=5) as emu, connect(emu, "/user") as ws:
        await ws.send(sub("ticker", ["BTC-USD"]))
        assert await recv(ws) == {"type": "error", "message": "authentication failure"}
        await ws.send(sub("user", []))   # no JWT on a private channel
        assert await recv(ws) == {"type": "error", "message": "authentication failure"}
        await ws.send(sub("futures_balance_summary", [], make_jwt(ec_key())))
        frames = await recv_until(ws, channel("futures_balance_summary"))
        assert "fcm_balance_summary" in frames[-1]["events"][0]


async def test_no_subscribe_within_deadline_closes(tmp_path):
    async with emulator(subscribe_deadline_s=0.3, journal=tmp_path / "j.jsonl") as emu, connect(emu) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await recv(ws, timeout=3)
    from tickpipe.emulators.journal import read_journal
    ends = [e for e in read_journal(str(tmp_path / "j.jsonl")) if e["event"] == "disconnect"]
    assert ends and ends[0]["reason"] == "no_subscribe"


async def test_idle_connection_without_heartbeats_closes_and_rate_limit():
    async with emulator(idle_close_s=0.4, status_every_s=60, messages_per_s=2) as emu:
        async with connect(emu) as ws:
            await ws.send(sub("status", ["BTC-USD"]))
            await recv_until(ws, channel("status"))
            with pytest.raises(websockets.ConnectionClosed):
                await recv(ws, timeout=3)
        async with connect(emu) as ws:
            for _ in range(3):
                await ws.send(sub("heartbeats"))
            frames = await recv_until(ws, is_error)
            assert frames[-1]["message"] == "rate limit exceeded"
            await asyncio.sleep(1.1)   # the window moves on: heartbeats keep the socket open past idle_close_s
            await recv_until(ws, channel("heartbeats"))


async def test_connection_rate_limit_answers_429():
    async with emulator(connections_per_s=2) as emu:
        async with connect(emu), connect(emu):
            with pytest.raises(websockets.InvalidStatus) as info:
                async with connect(emu):
                    pass
            assert info.value.response.status_code == 429
