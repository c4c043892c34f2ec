"""Alpaca producer adapter against the Alpaca emulator and the real broker."""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict

import msgpack
import pytest

from tests.emulators.alpaca_support import journal_lines, running
from tests.producers.core_support import fast_settings, read_raw, wait_for
from tests.producers.core_support import running as producing
from tickpipe.config import ConfigError, Secret, load_section
from tickpipe.envelope import CT_JSON, CT_MSGPACK, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.alpaca import AlpacaAdapter, AlpacaSettings
from tickpipe.producers.base import ResyncTarget
from tickpipe.producers.runner import Producer
from tickpipe.topics import TopicSpec, control_topic, create_missing, raw_topic


async def declare(kafka) -> None:
    from tickpipe.admin import admin_client
    async with admin_client(kafka) as admin:
        await create_missing(admin, [TopicSpec(raw_topic("alpaca", kafka.topic_prefix), 1, 3600_000),
                                     TopicSpec(control_topic("alpaca", kafka.topic_prefix), 1, 3600_000)])


def producer(kafka, emu, conn_id="alpaca-t", key="PKPROD", secret="prod-secret", loop=None, **settings) -> Producer:
    cfg = AlpacaSettings(key_id=Secret(key), secret_key=Secret(secret), url=emu.ws_url(""), **settings)
    return Producer(AlpacaAdapter(cfg, fast_settings(**(loop or {}))), kafka, conn_id=conn_id)


def messages(record) -> list[dict]:
    doc = msgpack.unpackb(record.payload) if record.content_type == CT_MSGPACK else json.loads(record.payload)
    return doc if isinstance(doc, list) else [doc]


def sent_trades(emu) -> list[tuple]:
    return [(e["ids"]["instrument"], e["ids"]["trade_id"]) for e in journal_lines(emu)
            if e["event"] == "sent" and e["ids"]["kind"] == "trade"]


@pytest.mark.parametrize("encoding", ["msgpack", "json"])
async def test_frames_recorded_in_order_with_markers_and_everything_subscribed(kafka_settings, tmp_path, encoding):
    await declare(kafka_settings)
    async with running(rate=200, journal=tmp_path / "j.jsonl") as emu:
        p = producer(kafka_settings, emu, encoding=encoding, bars=("*",))
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 60, what="60 messages sent")
        trades = sent_trades(emu)
    records = await read_raw(kafka_settings, "alpaca", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    frames = [r for r in records if r.kind == KIND_FRAME]
    assert {f.content_type for f in frames} == {CT_MSGPACK if encoding == "msgpack" else CT_JSON}
    first = [messages(f)[0] for f in frames[:3]]
    assert first[0] == {"T": "success", "msg": "connected"} and first[1] == {"T": "success", "msg": "authenticated"}
    assert (first[2]["trades"], first[2]["quotes"], first[2]["bars"]) == (["AAPL", "MSFT"], ["AAPL", "MSFT"], ["*"])
    got = [(m["S"], m["i"]) for f in frames for m in messages(f) if m.get("T") == "t"]
    assert len(got) >= 20 and got == trades[:len(got)], "every trade, in order"


async def test_reconnect_after_injected_disconnect_resubscribes_everything(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with running(rate=100, faults="disconnect_every=0.5,close_code=4000", journal=tmp_path / "j.jsonl") as emu:
        p = producer(kafka_settings, emu, encoding="json", bars=("SPY",), daily_bars=("SPY",))
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("connect", 0) >= 3, what="two reconnects")
            await wait_for(lambda: p.ready()[0], what="ready again")
    records = await read_raw(kafka_settings, "alpaca", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= 3)
    acks = defaultdict(list)
    for r in records:
        if r.kind == KIND_FRAME:
            acks[r.session] += [m for m in messages(r) if m.get("T") == "subscription"]
    subscribed = [a[0] for a in acks.values() if a]
    assert len(subscribed) >= 3
    for ack in subscribed:
        assert (ack["trades"], ack["quotes"], ack["bars"], ack["dailyBars"]) == (["AAPL", "MSFT"], ["AAPL", "MSFT"], ["SPY"], ["SPY"])
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert any(e["reason"] == "closed" and e.get("close_code") == 4000 for e in ends)
    assert len({r.session for r in records}) >= 3 and {r.conn for r in records} == {"alpaca-t"}


async def test_wrong_credentials_clear_error_and_slow_retries(kafka_settings):
    await declare(kafka_settings)
    async with running(key_id="PKGOOD", secret_key=Secret("good-secret")) as emu:
        p = producer(kafka_settings, emu, key="PKGOOD", secret="wrong-secret-value",
                     loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0})
        async with producing(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the auth failure")
            await asyncio.sleep(0.8)
            assert p.loop.attempts == 1 and p.ready() == (False, "not connected")
    records = await read_raw(kafka_settings, "alpaca", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "auth_failed" and "402" in end["error"] and "wrong-secret-value" not in end["error"]


async def test_legacy_v1_authenticate_and_listen(kafka_settings):
    await declare(kafka_settings)
    async with running(rate=100) as emu:
        p = producer(kafka_settings, emu, feed="v1", trades=("AAPL",), quotes=(), bars=("AAPL",))
        async with producing(p):
            await wait_for(lambda: p.ready()[0], what="v1 ready")
            await asyncio.sleep(0.3)
    records = await read_raw(kafka_settings, "alpaca", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    docs = [m for r in records if r.kind == KIND_FRAME for m in messages(r)]
    assert docs[0] == {"stream": "authorization", "data": {"action": "authenticate", "status": "authorized"}}
    assert docs[1] == {"stream": "listening", "data": {"streams": ["T.AAPL", "AM.AAPL"]}}
    assert any(d["stream"] == "T.AAPL" and d["data"]["ev"] == "T" for d in docs[2:])
    assert {r.content_type for r in records if r.kind == KIND_FRAME} == {CT_JSON}


async def test_resync_unsubscribes_and_resubscribes_the_instrument(kafka_settings):
    await declare(kafka_settings)
    async with running(rate=50) as emu:
        p = producer(kafka_settings, emu, encoding="json", bars=("AAPL",))
        async with producing(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            assert p.loop.request_resync(ResyncTarget(instrument="AAPL", reason="gap"))
            assert not await p.adapter.resync(p.loop.session, ResyncTarget(instrument="NOPE"))
            await asyncio.sleep(0.5)
    records = await read_raw(kafka_settings, "alpaca", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    acks = [m for r in records if r.kind == KIND_FRAME for m in messages(r) if m.get("T") == "subscription"]
    assert [(a["trades"], a["bars"]) for a in acks[:3]] == [
        (["AAPL", "MSFT"], ["AAPL"]), (["MSFT"], []), (["MSFT", "AAPL"], ["AAPL"])]


async def test_in_band_slow_client_error_ends_the_session(kafka_settings):
    await declare(kafka_settings)
    async with running(rate=50, faults="slow_client=0.4") as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):
            await wait_for(lambda: p.loop.attempts >= 2, what="a reconnect after 407")
    records = await read_raw(kafka_settings, "alpaca", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "error" and "alpaca error 407: slow client" in end["error"]


def test_settings_from_env_and_secret_files(tmp_path):
    (tmp_path / "key").write_text("PKFILEKEY\n")
    (tmp_path / "secret").write_text("file-secret-value\n")
    env = {"TICKPIPE_ALPACA_KEY_ID_FILE": str(tmp_path / "key"), "TICKPIPE_ALPACA_SECRET_KEY_FILE": str(tmp_path / "secret"),
           "TICKPIPE_ALPACA_FEED": "crypto/us", "TICKPIPE_ALPACA_TRADES": "BTC/USD,ETH/USD",
           "TICKPIPE_ALPACA_QUOTES": "", "TICKPIPE_ALPACA_ORDERBOOKS": "BTC/USD"}
    s = load_section(AlpacaSettings, "alpaca", env=env)
    assert (s.key_id.reveal(), s.secret_key.reveal()) == ("PKFILEKEY", "file-secret-value")
    assert s.channels() == {"trades": ["BTC/USD", "ETH/USD"], "orderbooks": ["BTC/USD"]}
    assert "file-secret-value" not in repr(s)
    adapter = AlpacaAdapter(s)
    assert adapter.endpoint() == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"
    with_path = AlpacaAdapter(AlpacaSettings(key_id=Secret("k"), secret_key=Secret("s"), url="ws://h:1/v2/test/"))
    assert with_path.endpoint() == "ws://h:1/v2/test"
    with pytest.raises(ConfigError, match="TICKPIPE_ALPACA_FEED"):
        load_section(AlpacaSettings, "alpaca", env={**env, "TICKPIPE_ALPACA_FEED": "nyse"})


async def test_second_session_on_one_key_retries_406_until_the_slot_frees(kafka_settings):
    await declare(kafka_settings)
    async with running(rate=20) as emu:
        first = producer(kafka_settings, emu, conn_id="alpaca-a")
        second = producer(kafka_settings, emu, conn_id="alpaca-b", loop={"backoff_initial_s": 0.1, "backoff_max_s": 0.2})
        stop_first = asyncio.Event()
        first_task = asyncio.ensure_future(first.run(stop_first))
        await wait_for(lambda: first.ready()[0], what="first ready")
        async with producing(second):
            await wait_for(lambda: second.loop.attempts >= 3, what="second retrying")
            assert not second.ready()[0] and second.loop.auth_failures == 0, "406 is not a credential failure"
            stop_first.set()                                     # the first session ends: the slot frees
            assert await asyncio.wait_for(first_task, 20) == 0
            await wait_for(lambda: second.ready()[0], what="second ready")
    records = await read_raw(kafka_settings, "alpaca", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= 4)
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END and r.conn == "alpaca-b"]
    assert any("406" in e.get("error", "") for e in ends)
