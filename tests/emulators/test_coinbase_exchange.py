"""Coinbase Exchange emulator: handshake, channels, auth, error replies, REST resync, CLI."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal

import aiohttp
import pytest
import websockets

from tests.emulators.coinbase_exchange_support import (
    KEY, PASSPHRASE, SECRET, connect, credentials, emulator, of_type, settings, signed)
from tickpipe.children import Child, tickpipe_command
from tickpipe.emulators.coinbase_exchange_protocol import AUTH_REQUIRED_REASON, sign

SUB = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat", "matches", "level2_batch", "ticker"]}


def test_signature_matches_the_reference_test_vector():
    secret = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw=="
    assert sign(secret, "1700000000.123456") == "4ce8mVb02ZsQCji4RcYyxRt7rHid1vsadz1jaHBuDeA="


async def test_subscribe_gets_ack_then_initial_data_then_stream():
    async with emulator() as emu, connect(emu) as c:
        await c.send(SUB)
        first = await c.recv()
        assert first["type"] == "subscriptions"
        assert [ch["name"] for ch in first["channels"]] == ["heartbeat", "matches", "level2_50", "ticker"]
        assert all(ch["product_ids"] == ["BTC-USD"] and ch["account_ids"] is None for ch in first["channels"])
        msgs = await c.until(lambda m: m["type"] == "heartbeat", timeout=3)
        snap = of_type(msgs, "snapshot")[0]
        assert list(snap)[:4] == ["type", "product_id", "asks", "bids"]
        bids = [Decimal(p) for p, _ in snap["bids"]]
        asks = [Decimal(p) for p, _ in snap["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
        assert all(str(p).count(".") == 1 and len(str(p).split(".")[1]) == 2 for p, _ in snap["bids"])
        last = of_type(msgs, "last_match")[0]
        assert isinstance(last["trade_id"], int) and isinstance(last["sequence"], int)
        assert of_type(msgs, "ticker")[0]["trade_id"] == last["trade_id"]      # the initial ticker
        beat = msgs[-1]
        assert beat["sequence"] >= last["sequence"] and beat["last_trade_id"] >= last["trade_id"]
        stream = msgs + await c.for_seconds(0.6)
        matches, tickers = of_type(stream, "match"), of_type(stream, "ticker")
        assert matches and of_type(stream, "l2update")
        ids = [m["trade_id"] for m in matches]
        assert ids == list(range(last["trade_id"] + 1, last["trade_id"] + 1 + len(ids)))
        by_trade = {t["trade_id"]: t for t in tickers[1:]}
        # a ticker and the match of the same trade share one sequence (the last match's ticker may be in flight)
        for m in matches[:-1]:
            t = by_trade[m["trade_id"]]
            assert (t["sequence"], t["price"], t["last_size"]) == (m["sequence"], m["price"], m["size"])
            assert t["side"] != m["side"]                                      # taker vs maker side


async def test_error_replies_keep_the_connection_open():
    async with emulator() as emu, connect(emu) as c:
        await c.send({"type": "subscribe", "channels": []})
        assert await c.recv() == {"type": "error", "message": "Failed to subscribe", "reason": "No channels provided"}
        await c.send("this is not json {")
        assert (await c.recv())["reason"] == "invalid (un)subscribe msg"
        await c.send(b"\x00\x01binary")
        assert (await c.recv())["reason"] == "invalid (un)subscribe msg"
        await c.send({"type": "hello"})
        assert (await c.recv())["reason"] == "invalid (un)subscribe msg"
        await c.send({"type": "subscribe", "product_ids": ["BTC-USD", "NOPE-USD"], "channels": ["heartbeat", "ticket", "ticker"]})
        errors = [await c.recv(), await c.recv()]
        assert [e["reason"] for e in errors] == ["NOPE-USD is not a valid product", "ticket is not a valid channel"]
        ack = await c.recv()
        assert [(ch["name"], ch["product_ids"]) for ch in ack["channels"]] == [("heartbeat", ["BTC-USD"]), ("ticker", ["BTC-USD"])]
        await c.send({"type": "unsubscribe", "channels": []})
        reply = await c.until(lambda m: m["type"] == "error")
        assert reply[-1] == {"type": "error", "message": "Failed to unsubscribe", "reason": "No channels provided"}


async def test_auth_only_channels_refused_without_signature():
    async with emulator() as emu, connect(emu) as c:
        await c.send({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full", "level2", "heartbeat"]})
        err = await c.recv()
        assert err == {"type": "error", "message": "Failed to subscribe", "reason": AUTH_REQUIRED_REASON}
        ack = await c.recv()
        assert [ch["name"] for ch in ack["channels"]] == ["heartbeat"]
        await c.send({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2"]})
        assert (await c.recv())["reason"] == AUTH_REQUIRED_REASON
        assert [ch["name"] for ch in (await c.recv())["channels"]] == ["heartbeat"]


async def test_any_well_formed_signature_accepted_without_configured_credentials():
    async with emulator() as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["full"]},
                            key="whatever", secret="c2VjcmV0", passphrase="pp"))
        ack = await c.recv()
        assert ack["channels"] == [{"name": "full", "product_ids": ["ETH-USD"], "account_ids": None}]
        await c.send({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["level2"],
                      "key": "k", "passphrase": "p", "timestamp": "1", "signature": "not base64!"})
        assert (await c.recv())["reason"] == "invalid signature"


@pytest.mark.parametrize("change, message, reason", [
    ({"secret": "d3Jvbmc="}, "Sorry, you could not be authenticated: Bad Request", "invalid signature"),
    ({"key": "other-key"}, "Sorry, you could not be authenticated: Unauthorized", "invalid API key"),
    ({"passphrase": "guess"}, "Sorry, you could not be authenticated: Unauthorized", "invalid passphrase"),
    ({"timestamp": "1000000000.0"}, "Sorry, you could not be authenticated: Bad Request", "request timestamp expired"),
])
async def test_configured_credentials_are_enforced(change, message, reason):
    async with emulator(creds=credentials()) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full", "heartbeat"]}, **change))
        assert await c.recv() == {"type": "error", "message": message, "reason": reason}
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full"]}))
        assert [ch["name"] for ch in (await c.recv())["channels"]] == ["full"]


async def test_numeric_timestamp_accepted_unless_strict():
    ts = __import__("time").time()
    msg = {"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full"], "key": KEY, "passphrase": PASSPHRASE,
           "timestamp": ts, "signature": sign(SECRET, repr(ts))}
    async with emulator(creds=credentials()) as emu, connect(emu) as c:
        await c.send(msg)
        assert (await c.recv())["type"] == "subscriptions"
    async with emulator(creds=credentials(timestamp_string_only=True)) as emu, connect(emu) as c:
        await c.send(msg)
        assert (await c.recv())["reason"] == "invalid timestamp"


async def test_bad_signature_downgrade_mode_treats_request_as_unsigned():
    async with emulator(creds=credentials(bad_auth="downgrade")) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full", "heartbeat"]},
                            secret="d3Jvbmc="))
        assert (await c.recv())["reason"] == AUTH_REQUIRED_REASON
        assert [ch["name"] for ch in (await c.recv())["channels"]] == ["heartbeat"]


async def test_full_channel_sequence_is_contiguous_per_product_and_matches_channel_is_gappy():
    async with emulator(rate=400) as emu, connect(emu) as full, connect(emu) as trades:
        await full.send(signed({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["full"]}))
        await trades.send({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["matches"]})
        got_full, got_trades = await asyncio.gather(full.for_seconds(1.0), trades.for_seconds(1.0))
        events = of_type(got_full, "received", "open", "done", "match", "change")
        assert {"received", "open", "done", "match"} <= {e["type"] for e in events}
        for pid in ("BTC-USD", "ETH-USD"):
            seqs = [e["sequence"] for e in events if e["product_id"] == pid]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
            matches = [m for m in of_type(got_trades, "match") if m["product_id"] == pid]
            seq_steps = {b["sequence"] - a["sequence"] for a, b in zip(matches, matches[1:])}
            assert max(seq_steps) > 1                            # other events in between: jumps by design
            assert [m["trade_id"] for m in matches] == list(range(matches[0]["trade_id"], matches[0]["trade_id"] + len(matches)))


def apply_l3(book: dict, msg: dict) -> None:
    """Level-3 book maintenance as coinbasepro-python does it: order_id -> (side, price, size)."""
    t = msg["type"]
    if t == "open":
        book[msg["order_id"]] = (msg["side"], msg["price"], Decimal(msg["remaining_size"]))
    elif t == "done":
        book.pop(msg["order_id"], None)
    elif t == "match" and msg["maker_order_id"] in book:
        side, price, size = book[msg["maker_order_id"]]
        book[msg["maker_order_id"]] = (side, price, size - Decimal(msg["size"]))
    elif t == "change" and msg["order_id"] in book:
        side, price, _ = book[msg["order_id"]]
        book[msg["order_id"]] = (side, price, Decimal(msg["new_size"]))


def aggregate(book: dict) -> dict:
    levels: dict = {}
    for side, price, size in book.values():
        if size > 0:
            levels[(side, Decimal(price))] = levels.get((side, Decimal(price)), Decimal(0)) + size
    return levels


async def test_rest_book_resync_is_consistent_with_the_stream():
    async with emulator(rate=300) as emu, connect(emu) as c, aiohttp.ClientSession() as http:
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full", "level2"]}))
        buffered = await c.for_seconds(0.3)
        async with http.get(emu.http_url("/products/BTC-USD/book"), params={"level": "3"}) as r:
            snap = await r.json()
        l3 = {oid: ("buy", p, Decimal(s)) for p, s, oid in snap["bids"]}
        l3 |= {oid: ("sell", p, Decimal(s)) for p, s, oid in snap["asks"]}
        l2_snap = of_type(buffered, "snapshot")[0]
        l2 = {("buy", Decimal(p)): Decimal(s) for p, s in l2_snap["bids"]} | {("sell", Decimal(p)): Decimal(s) for p, s in l2_snap["asks"]}
        async with http.get(emu.http_url("/products/BTC-USD/book"), params={"level": "2"}) as r:
            later = await r.json()
        target = later["sequence"]
        live = buffered + await c.until(lambda m: m.get("sequence", 0) > target)   # a level-2 snapshot at `target`
        seq = last_seen = snap["sequence"]
        for m in live:
            if m["type"] == "l2update" and last_seen <= target:
                for side, price, size in m["changes"]:
                    l2[(side, Decimal(price))] = Decimal(size)
            elif "sequence" in m and m["type"] != "snapshot":
                last_seen = m["sequence"]
                if seq < m["sequence"] <= target:
                    assert m["sequence"] == seq + 1
                    apply_l3(l3, m)
                    seq = m["sequence"]
        assert seq == target
        expected = {("buy", Decimal(p)): Decimal(s) for p, s, n in later["bids"]} | {("sell", Decimal(p)): Decimal(s) for p, s, n in later["asks"]}
        assert aggregate(l3) == expected
        assert {k: v for k, v in l2.items() if v} == expected


async def test_rest_errors_and_time():
    async with emulator() as emu, aiohttp.ClientSession() as http:
        async with http.get(emu.http_url("/products/NOPE-USD/book")) as r:
            assert r.status == 404 and (await r.json()) == {"message": "NotFound"}
        async with http.get(emu.http_url("/products/BTC-USD/book"), params={"level": "9"}) as r:
            assert r.status == 400
        async with http.get(emu.http_url("/products/BTC-USD/book")) as r:
            one = await r.json()
        assert len(one["bids"]) == len(one["asks"]) == 1 and isinstance(one["sequence"], int)
        async with http.get(emu.http_url("/time")) as r:
            assert (await r.json())["iso"].endswith("Z")
        async with http.get(emu.http_url("/products/BTC-USD/trades"), params={"limit": "abc"}) as r:
            assert r.status == 400
    async with emulator(creds=settings(rest_per_s=0.01, rest_burst=2)) as emu, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(3):
            async with http.get(emu.http_url("/products/BTC-USD/book")) as r:
                statuses.append((r.status, (await r.json()).get("message")))
        assert statuses == [(200, None), (200, None), (429, "Public rate limit exceeded")]


async def test_rest_trades_backfill_a_dropped_match():
    async with emulator(rate=300, faults="drop=0.2") as emu, connect(emu) as c, aiohttp.ClientSession() as http:
        await c.send({"type": "subscribe", "product_ids": ["ETH-USD"], "channels": ["matches"]})
        ids = [m["trade_id"] for m in of_type(await c.for_seconds(0.8), "match")]
        missing = sorted(set(range(ids[0], ids[-1])) - set(ids))
        assert missing
        async with http.get(emu.http_url("/products/ETH-USD/trades"), params={"limit": "5", "after": str(missing[-1] + 1)}) as r:
            page = await r.json()
            assert r.headers["CB-AFTER"] == str(page[-1]["trade_id"])
        assert [t["trade_id"] for t in page] == list(range(missing[-1], missing[-1] - 5, -1))   # newest first
        assert set(page[0]) == {"time", "trade_id", "price", "size", "side"} and page[0]["side"] in ("buy", "sell")


async def test_unsubscribe_reports_what_remains():
    async with emulator() as emu, connect(emu) as c:
        await c.send({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["heartbeat", "ticker"]})
        await c.until(lambda m: m["type"] == "subscriptions")
        await c.send({"type": "unsubscribe", "product_ids": ["ETH-USD"], "channels": ["ticker"]})
        ack = await c.until(lambda m: m["type"] == "subscriptions")
        assert [(ch["name"], ch["product_ids"]) for ch in ack[-1]["channels"]] == [("heartbeat", ["BTC-USD", "ETH-USD"]), ("ticker", ["BTC-USD"])]
        await c.send({"type": "unsubscribe", "channels": ["heartbeat", {"name": "ticker", "product_ids": ["BTC-USD"]}]})
        ack = await c.until(lambda m: m["type"] == "subscriptions")
        assert ack[-1]["channels"] == []
        assert not of_type(await c.for_seconds(0.4), "ticker", "heartbeat")


async def test_status_level3_ticker_batch_and_big_frames():
    async with emulator(rate=300, creds=settings(status_min_bytes=1_200_000, ticker_batch_s=0.2)) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "channels": ["status", {"name": "level3", "product_ids": ["ETH-USD"]},
                                                              {"name": "ticker_batch", "product_ids": ["ETH-USD"]}]}))
        ack = await c.recv()
        assert [ch["name"] for ch in ack["channels"]] == ["status", "level3", "ticker_1000"]
        msgs = await c.for_seconds(1.0)
        status = of_type(msgs, "status")[0]
        assert len(json.dumps(status)) > 1 << 20 and status["products"][0]["id"] == "BTC-USD"
        schema = of_type(msgs, "level3")[0]["schema"]
        rows = [m for m in msgs if isinstance(m, list)]
        seqs = [int(r[schema[r[0]].index("sequence")]) for r in rows]
        assert rows and all(isinstance(v, str) for r in rows for v in r)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        batched = of_type(msgs, "ticker")
        assert 2 <= len(batched) <= 8                          # at most one per interval, not one per trade


async def test_permessage_deflate_is_negotiated_when_offered():
    async with emulator() as emu, connect(emu, compression="deflate") as c:
        assert "permessage-deflate" in c.ws.response.headers.get("Sec-WebSocket-Extensions", "")
        await c.send(SUB)
        assert (await c.recv())["type"] == "subscriptions"
    async with emulator() as emu, connect(emu, compression=None) as c:
        await c.send(SUB)
        assert (await c.recv())["type"] == "subscriptions"


async def test_protocol_limits_close_with_a_notice():
    async with emulator(creds=settings(subscribe_deadline_s=0.3)) as emu, connect(emu) as c:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await c.recv(timeout=3)
        assert closed.value.rcvd.code == 1000
    async with emulator() as emu, connect(emu) as c:
        await c.send(json.dumps({"type": "subscribe", "channels": ["heartbeat"], "pad": "x" * (1 << 20)}))
        notice = await c.recv()
        assert notice["type"] == "error" and notice["message"] == "Message too big"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await c.recv()
        assert closed.value.rcvd.code == 1009
    async with emulator(creds=settings(inbound_per_s=0.01, inbound_burst=2)) as emu, connect(emu) as c:
        for _ in range(3):
            await c.send(SUB)
        await c.until(lambda m: m.get("message") == "ErrSlowRead")
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await c.for_seconds(2)
        assert closed.value.rcvd.code == 1008
    async with emulator(creds=settings(connects_per_s=0.01, connect_burst=1)) as emu, connect(emu):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with connect(emu):
                pass
        assert refused.value.response.status_code == 429


def test_cli_emulator_serves_on_the_port_from_its_ready_line(tmp_path):
    (tmp_path / "secret").write_text(SECRET)
    env = {"TICKPIPE_EMULATOR_COINBASE_EXCHANGE_API_KEY": KEY, "TICKPIPE_EMULATOR_COINBASE_EXCHANGE_PASSPHRASE": PASSPHRASE,
           "TICKPIPE_EMULATOR_COINBASE_EXCHANGE_API_SECRET_FILE": str(tmp_path / "secret")}
    child = Child(tickpipe_command("emulate", "coinbase-exchange", "--port", "0", "--seed", "3", "--ops-port", "0",
                                  "--symbols", "BTC-USD", "SKL-USD"), "coinbase-exchange emulator",
                  log_file=tmp_path / "emu.log", env=env)
    with child:
        port = child.ready["port"]

        async def talk():
            async with websockets.connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
                sub = {"type": "subscribe", "product_ids": ["SKL-USD"], "channels": ["heartbeat", "full"]}
                await ws.send(json.dumps(signed(sub, passphrase="wrong")))
                refused = json.loads(await asyncio.wait_for(ws.recv(), 5))
                await ws.send(json.dumps(signed(sub)))
                ack = json.loads(await asyncio.wait_for(ws.recv(), 5))
                return refused, ack

        refused, ack = asyncio.run(talk())
    assert refused["reason"] == "invalid passphrase"
    assert [(c["name"], c["product_ids"]) for c in ack["channels"]] == [("heartbeat", ["SKL-USD"]), ("full", ["SKL-USD"])]
    log = (tmp_path / "emu.log").read_text()
    assert "emulator listening" in log and SECRET not in log and PASSPHRASE not in log


async def test_sequence_is_engine_wide_so_connections_agree():
    async with emulator(rate=300) as emu, connect(emu) as a:
        await a.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full"]}))
        first = of_type(await a.for_seconds(0.3), "received", "open", "done", "match", "change")
        async with connect(emu) as b:
            await b.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["full"]}))
            got_a, got_b = await asyncio.gather(a.for_seconds(0.4), b.for_seconds(0.4))
    by_seq = {m["sequence"]: m for m in first + of_type(got_a, "received", "open", "done", "match", "change")}
    seen_b = of_type(got_b, "received", "open", "done", "match", "change")
    assert seen_b and seen_b[0]["sequence"] > first[0]["sequence"]          # B starts later in the same numbering
    assert all(by_seq[m["sequence"]] == m for m in seen_b if m["sequence"] in by_seq)
    assert sum(m["sequence"] in by_seq for m in seen_b) > 10


async def test_unconfirmed_behaviours_are_switches():
    cfg = settings(auth_carries_over=True, level2_batch_depth=3, level3_schema_per_subscribe=True,
                   unknown_type_every_s=0.2, ack_account_ids=False, snapshot_time=False)
    async with emulator(creds=cfg) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat", "level3"]}))
        await c.send({"type": "subscribe", "product_ids": ["BTC-USD"],
                      "channels": ["level2", "level2_batch", {"name": "level3", "product_ids": ["ETH-USD"]}]})
        msgs = await c.for_seconds(0.6)
        acks = of_type(msgs, "subscriptions")
        assert [ch["name"] for ch in acks[-1]["channels"]] == ["heartbeat", "level3", "level2", "level2_50"]
        assert all("account_ids" not in ch for ch in acks[-1]["channels"])    # the 2021 ack shape
        snaps = of_type(msgs, "snapshot")
        assert [len(s["bids"]) <= 3 for s in snaps] == [False, True] and all("time" not in s for s in snaps)
        assert len(of_type(msgs, "level3")) == 2 and of_type(msgs, "brand_new_type")
    async with emulator() as emu, connect(emu) as c:                       # the default: auth does not carry over
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["heartbeat"]}))
        await c.send({"type": "subscribe", "product_ids": ["BTC-USD"], "channels": ["level2"]})
        assert (await c.until(lambda m: m["type"] == "error"))[-1]["reason"] == AUTH_REQUIRED_REASON


async def test_same_seed_same_market_and_rate_zero_is_as_fast_as_possible():
    books = []
    for seed in (11, 11, 12):
        async with emulator(seed=seed) as emu, aiohttp.ClientSession() as http:
            async with http.get(emu.http_url("/products/BTC-USD/book"), params={"level": "3"}) as r:
                books.append({k: v for k, v in (await r.json()).items() if k != "time"})
    assert books[0] == books[1] and books[0] != books[2]
    async with emulator(rate=0) as emu, connect(emu) as c:
        await c.send(signed({"type": "subscribe", "product_ids": ["BTC-USD", "ETH-USD"], "channels": ["full"]}))
        got = []
        async for frame in c.ws:        # plain iteration: no timer per message at this rate
            got.append(json.loads(frame))
            if len(got) == 20_000:
                break
    for pid in ("BTC-USD", "ETH-USD"):
        seqs = [m["sequence"] for m in got[1:] if m["product_id"] == pid]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))            # back-pressure, not ErrSlowConsume
