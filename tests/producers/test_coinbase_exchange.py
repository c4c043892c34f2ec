"""Coinbase Exchange producer adapter against the coinbase-exchange emulator and the real broker."""

from __future__ import annotations

import asyncio
import json

import orjson
import pytest
from aiohttp import web

from tests.emulators.coinbase_exchange_support import (
    KEY, PASSPHRASE, SECRET, credentials, emulator, identity, journal_stream)
from tests.producers.core_support import fast_settings, read_raw, running, wait_for
from tickpipe.config import ConfigError, Secret, load_section
from tickpipe.emulators.coinbase_exchange_protocol import sign
from tickpipe.emulators.journal import read_journal
from tickpipe.envelope import CT_JSON, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.base import FeedError, ResyncTarget
from tickpipe.producers.coinbase_exchange import (
    CoinbaseExchangeAdapter, CoinbaseExchangeSettings, fetch_book_snapshot, signature)
from tickpipe.producers.runner import Producer
from tickpipe.topics import TopicSpec, control_topic, create_missing, raw_topic

PROVIDER = "coinbase-exchange"
FULL_SEQ_TYPES = ("received", "open", "done", "match", "change")


async def declare(kafka) -> None:
    from tickpipe.admin import admin_client
    async with admin_client(kafka) as admin:
        await create_missing(admin, [TopicSpec(raw_topic(PROVIDER, kafka.topic_prefix), 1, 3600_000),
                                     TopicSpec(control_topic(PROVIDER, kafka.topic_prefix), 1, 3600_000)])


def producer(kafka, emu, keys: bool = False, loop=None, **settings) -> Producer:
    if keys:
        settings.update(api_key=Secret(KEY), api_secret=Secret(SECRET), passphrase=Secret(PASSPHRASE))
    cfg = CoinbaseExchangeSettings(url=emu.ws_url("/"), rest_url=emu.http_url(""), **settings)
    return Producer(CoinbaseExchangeAdapter(cfg, fast_settings(**(loop or {}))), kafka, conn_id="cbx-t")


def docs(records) -> list:
    return [json.loads(r.payload) for r in records if r.kind == KIND_FRAME]


def acks(frames) -> list[dict]:
    return [{c["name"]: c["product_ids"] for c in f["channels"]} for f in frames
            if isinstance(f, dict) and f.get("type") == "subscriptions"]


def until_end(count: int = 1):
    return lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= count


async def test_frames_verbatim_in_order_with_markers_and_heartbeats(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(rate=100, journal=str(tmp_path / "j")) as emu:
        p = producer(kafka_settings, emu)
        async with running(p):
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 60, what="60 frames sent")
            await asyncio.sleep(1.1)   # and a heartbeat per product
    records = await read_raw(kafka_settings, PROVIDER, until_end())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    frames = [r for r in records if r.kind == KIND_FRAME]
    assert {(r.provider, r.conn, r.content_type) for r in frames} == {(PROVIDER, "cbx-t", CT_JSON)}
    assert all(orjson.dumps(orjson.loads(r.payload)) == r.payload for r in frames)   # the emulator's exact bytes
    got = docs(records)
    sent = journal_stream(read_journal(str(tmp_path / "j")), 1)
    assert [identity(f) for f in got] == sent[:len(got)] and len(got) >= len(sent) - 3   # nothing lost or added
    assert acks(got)[0] == {"heartbeat": ["BTC-USD", "ETH-USD"], "level2_50": ["BTC-USD", "ETH-USD"],
                            "matches": ["BTC-USD", "ETH-USD"], "ticker": ["BTC-USD", "ETH-USD"]}
    assert {"heartbeat", "snapshot", "l2update", "last_match", "match", "ticker"} <= {f["type"] for f in got}
    for pid in ("BTC-USD", "ETH-USD"):                                               # in order
        ids = [f["trade_id"] for f in got if f["type"] == "match" and f["product_id"] == pid]
        assert ids == list(range(ids[0], ids[0] + len(ids)))


async def test_reconnect_after_injected_disconnect_resubscribes_everything(kafka_settings):
    await declare(kafka_settings)
    async with emulator(rate=50, faults="disconnect_every=0.5,close_code=4000") as emu:
        p = producer(kafka_settings, emu, channels=("level2_batch", "matches"), product_ids=("ETH-USD",))
        async with running(p):
            await wait_for(lambda: emu._connections >= 3, what="two reconnects")
            await wait_for(lambda: p.ready()[0], what="ready again")
    records = await read_raw(kafka_settings, PROVIDER, until_end(3))
    sessions: dict[str, list] = {}
    for r in records:
        if r.kind == KIND_FRAME:
            sessions.setdefault(r.session, []).append(json.loads(r.payload))
    assert len(sessions) >= 3
    for frames in list(sessions.values())[:2]:
        assert acks(frames)[0] == {"heartbeat": ["ETH-USD"], "level2_50": ["ETH-USD"], "matches": ["ETH-USD"]}
        assert [f["type"] for f in frames[1:3]] == ["snapshot", "last_match"]
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert any(e["reason"] == "closed" and e.get("close_code") == 4000 for e in ends)


async def test_wrong_secret_gives_clear_error_and_slow_retries(kafka_settings):
    await declare(kafka_settings)
    async with emulator(creds=credentials()) as emu:
        wrong = "d3Jvbmctc2VjcmV0LXZhbHVl"
        p = producer(kafka_settings, emu, loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0},
                     api_key=Secret(KEY), api_secret=Secret(wrong), passphrase=Secret(PASSPHRASE), channels=("full",))
        async with running(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the auth failure")
            await asyncio.sleep(0.8)
            assert p.loop.attempts == 1 and p.ready() == (False, "not connected")
    records = await read_raw(kafka_settings, PROVIDER, until_end())
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "auth_failed"
    assert "Sorry, you could not be authenticated: Bad Request: invalid signature" in end["error"]
    assert wrong not in end["error"] and KEY not in end["error"] and PASSPHRASE not in end["error"]


async def test_signed_full_channel_with_keys_from_secret_files(kafka_settings, tmp_path):
    await declare(kafka_settings)
    for name, value in (("key", KEY), ("secret", SECRET), ("pass", PASSPHRASE)):
        (tmp_path / name).write_text(value + "\n")
    env = {"TICKPIPE_COINBASE_EXCHANGE_API_KEY_FILE": str(tmp_path / "key"),
           "TICKPIPE_COINBASE_EXCHANGE_API_SECRET_FILE": str(tmp_path / "secret"),
           "TICKPIPE_COINBASE_EXCHANGE_PASSPHRASE_FILE": str(tmp_path / "pass"),
           "TICKPIPE_COINBASE_EXCHANGE_CHANNELS": "full,level2", "TICKPIPE_COINBASE_EXCHANGE_PRODUCT_IDS": "BTC-USD"}
    async with emulator(rate=100, creds=credentials()) as emu:
        cfg = load_section(CoinbaseExchangeSettings, "coinbase_exchange", env={**env, "TICKPIPE_COINBASE_EXCHANGE_URL": emu.ws_url("/")})
        assert KEY not in repr(cfg) and SECRET not in repr(cfg)
        p = Producer(CoinbaseExchangeAdapter(cfg, fast_settings()), kafka_settings, conn_id="cbx-t")
        async with running(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            await asyncio.sleep(0.5)
    got = docs(await read_raw(kafka_settings, PROVIDER, until_end()))
    assert acks(got)[0] == {"heartbeat": ["BTC-USD"], "full": ["BTC-USD"], "level2": ["BTC-USD"]}
    seqs = [f["sequence"] for f in got if f["type"] in FULL_SEQ_TYPES]
    assert len(seqs) > 10 and seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_resync_resubscribes_the_product_for_a_new_snapshot(kafka_settings):
    await declare(kafka_settings)
    async with emulator(rate=50) as emu:
        p = producer(kafka_settings, emu, channels=("level2_batch", "ticker"))
        async with running(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            assert p.loop.request_resync(ResyncTarget(instrument="ETH-USD", channel="level2_50", reason="gap"))
            assert not await p.adapter.resync(p.loop.session, ResyncTarget(instrument="NOPE-USD"))
            await asyncio.sleep(0.5)
    got = docs(await read_raw(kafka_settings, PROVIDER, until_end()))
    levels = [a.get("level2_50") for a in acks(got)]
    assert levels == [["BTC-USD", "ETH-USD"], ["BTC-USD"], ["BTC-USD", "ETH-USD"]]
    assert [f["product_id"] for f in got if f["type"] == "snapshot"] == ["BTC-USD", "ETH-USD", "ETH-USD"]


async def test_error_notice_while_streaming_ends_the_session(kafka_settings):
    await declare(kafka_settings)
    async with emulator(rate=20, faults="slow_client=0.5") as emu:
        p = producer(kafka_settings, emu, channels=("ticker",))
        async with running(p):
            await wait_for(lambda: p.loop.attempts >= 2, what="a reconnect after the error")
    records = await read_raw(kafka_settings, PROVIDER, until_end())
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "error" and "coinbase-exchange error: ErrSlowConsume" in end["error"]


async def test_fetch_book_snapshot_from_the_emulator_rest():
    async with emulator(rate=50) as emu:
        book = await fetch_book_snapshot(emu.http_url(""), "BTC-USD", 3)
        assert isinstance(book["sequence"], int) and len(book["bids"][0]) == 3 and book["bids"][0][0] < book["asks"][0][0]
        assert len((await fetch_book_snapshot(emu.http_url("/"), "ETH-USD", 1))["asks"]) == 1
        with pytest.raises(FeedError, match="HTTP 404"):
            await fetch_book_snapshot(emu.http_url(""), "NOPE-USD", 2)
    with pytest.raises(ValueError):
        await fetch_book_snapshot("http://127.0.0.1:1", "BTC-USD", 4)
    app = web.Application()      # a server answering 200 with something that is not a book

    async def not_a_book(request):
        return web.json_response({"message": "hello"})

    app.router.add_get("/products/{pid}/book", not_a_book)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        with pytest.raises(FeedError, match="unexpected body"):
            await fetch_book_snapshot(f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}", "BTC-USD", 2)
    finally:
        await runner.cleanup()


def test_settings_validation_and_signature():
    assert signature("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
                     "1700000000.123456") == "4ce8mVb02ZsQCji4RcYyxRt7rHid1vsadz1jaHBuDeA="
    assert signature(SECRET, "1.5") == sign(SECRET, "1.5")
    with pytest.raises(ConfigError, match="unknown channel"):
        CoinbaseExchangeSettings(channels=("candles",))
    with pytest.raises(ConfigError, match="all three or none"):
        CoinbaseExchangeSettings(api_key=Secret("k-123"))
    with pytest.raises(ConfigError, match="full need Exchange API keys"):
        CoinbaseExchangeSettings(channels=("full",))
    bad = "not base64 at all!!"
    with pytest.raises(ConfigError, match="API_SECRET") as info:
        CoinbaseExchangeSettings(api_key=Secret("k-123"), api_secret=Secret(bad), passphrase=Secret("p-123"))
    assert bad not in str(info.value)
    assert CoinbaseExchangeSettings().channel_list() == ["heartbeat", "level2_batch", "matches", "ticker"]


async def test_produce_command_keeps_secrets_out_of_logs(kafka_settings, tmp_path):
    import signal

    from tickpipe.children import Child, tickpipe_command

    await declare(kafka_settings)
    (tmp_path / "secret").write_text(SECRET)
    log = tmp_path / "producer.log"
    async with emulator(rate=50, creds=credentials()) as emu:
        env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
               "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_LOG_LEVEL": "DEBUG",
               "TICKPIPE_COINBASE_EXCHANGE_URL": emu.ws_url("/"), "TICKPIPE_COINBASE_EXCHANGE_API_KEY": KEY,
               "TICKPIPE_COINBASE_EXCHANGE_API_SECRET_FILE": str(tmp_path / "secret"),
               "TICKPIPE_COINBASE_EXCHANGE_PASSPHRASE": PASSPHRASE, "TICKPIPE_COINBASE_EXCHANGE_CHANNELS": "level2"}
        child = Child(tickpipe_command("produce", PROVIDER, "--ops-port", "0"), "producer", log_file=log, env=env)
        await asyncio.to_thread(child.start)
        try:
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 20, what="frames flowing")
            child.signal(signal.SIGTERM)
            assert await asyncio.to_thread(child.process.wait, 30) == 0
        finally:
            child.stop()
    got = docs(await read_raw(kafka_settings, PROVIDER, until_end()))
    assert acks(got)[0] == {"heartbeat": ["BTC-USD", "ETH-USD"], "level2": ["BTC-USD", "ETH-USD"]}
    text = log.read_text()
    assert PROVIDER in text and KEY not in text and SECRET not in text and PASSPHRASE not in text


async def test_resync_of_a_level2_book_resubscribes_only_the_book_channel_it_came_on():
    """The normalizer labels level2_batch books "level2": the resync must not resubscribe ticker and
    matches too (their initial messages would repeat values already seen)."""
    from tickpipe.producers.base import ResyncTarget
    from tickpipe.producers.coinbase_exchange import CoinbaseExchangeAdapter, CoinbaseExchangeSettings

    sent = []

    class Recording:
        async def send(self, text):
            sent.append(json.loads(text))

    adapter = CoinbaseExchangeAdapter(CoinbaseExchangeSettings())
    assert await adapter.resync(Recording(), ResyncTarget(instrument="BTC-USD", channel="level2"))
    assert [(m["type"], m["channels"], m["product_ids"]) for m in sent] == [
        ("unsubscribe", ["level2_batch"], ["BTC-USD"]), ("subscribe", ["level2_batch"], ["BTC-USD"])]
