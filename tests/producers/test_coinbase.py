"""Coinbase Advanced Trade producer adapter against the Coinbase emulator and the real broker."""

from __future__ import annotations

import asyncio
import json

import jwt as pyjwt
import orjson
import pytest

from tests.emulators.coinbase_helpers import KEY_NAME, ec_key, ed_key, ed_raw_b64, emulator, public_pem, sec1_pem
from tests.producers.core_support import fast_settings, read_raw, running, wait_for
from tickpipe.config import ConfigError, Secret, load_section
from tickpipe.emulators.journal import read_journal
from tickpipe.envelope import CT_JSON, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.base import ResyncTarget
from tickpipe.producers.coinbase import CoinbaseAdapter, CoinbaseSettings
from tickpipe.producers.runner import Producer
from tickpipe.topics import TopicSpec, control_topic, create_missing, raw_topic


async def declare(kafka) -> None:
    from tickpipe.admin import admin_client
    async with admin_client(kafka) as admin:
        await create_missing(admin, [TopicSpec(raw_topic("coinbase", kafka.topic_prefix), 1, 3600_000),
                                     TopicSpec(control_topic("coinbase", kafka.topic_prefix), 1, 3600_000)])


def producer(kafka, emu, key=None, loop=None, **settings) -> Producer:
    if key is not None:
        pem = key if isinstance(key, str) else sec1_pem(key)
        settings.update(key_name=Secret(KEY_NAME), private_key=Secret(pem))
    cfg = CoinbaseSettings(url=emu.ws_url(""), **settings)
    return Producer(CoinbaseAdapter(cfg, fast_settings(**(loop or {}))), kafka, conn_id="coinbase-t")


def docs(records) -> list[dict]:
    return [json.loads(r.payload) for r in records if r.kind == KIND_FRAME]


def acks(frames) -> list[dict]:
    return [f["events"][0]["subscriptions"] for f in frames if f.get("channel") == "subscriptions"]


def until_end(count: int = 1):
    return lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= count


async def test_frames_verbatim_in_order_with_markers_and_a_fresh_jwt_per_message(kafka_settings, tmp_path):
    await declare(kafka_settings)
    key = ec_key()
    async with emulator(rate=100, public_keys=public_pem(key), key_name=KEY_NAME, journal=tmp_path / "j") as emu:
        p = producer(kafka_settings, emu, key)
        async with running(p):
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 80, what="80 frames sent")
            await asyncio.sleep(1.1)   # and a heartbeat (1/s)
    records = await read_raw(kafka_settings, "coinbase", until_end())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    frames = [r for r in records if r.kind == KIND_FRAME]
    assert {(r.provider, r.conn, r.content_type) for r in frames} == {("coinbase", "coinbase-t", CT_JSON)}
    assert all(orjson.dumps(orjson.loads(r.payload)) == r.payload for r in frames)   # the emulator's exact bytes
    got = docs(records)
    assert [f["sequence_num"] for f in got] == list(range(len(got)))               # in order, nothing lost
    assert acks(got)[:4] == [{"heartbeats": ["heartbeats"]},
                             {"heartbeats": ["heartbeats"], "level2": ["BTC-USD", "ETH-USD"]},
                             {"heartbeats": ["heartbeats"], "level2": ["BTC-USD", "ETH-USD"], "market_trades": ["BTC-USD", "ETH-USD"]},
                             {"heartbeats": ["heartbeats"], "level2": ["BTC-USD", "ETH-USD"], "market_trades": ["BTC-USD", "ETH-USD"],
                              "ticker": ["BTC-USD", "ETH-USD"]}]
    assert {"l2_data", "market_trades", "ticker", "heartbeats"} <= {f["channel"] for f in got}
    auths = [e for e in read_journal(str(tmp_path / "j")) if e["event"] == "auth"]
    assert len(auths) >= 4 and all(e["ok"] for e in auths)   # every message carried its own valid JWT


async def test_reconnect_after_injected_disconnect_resubscribes_everything(kafka_settings):
    await declare(kafka_settings)
    async with emulator(rate=50, faults="disconnect_every=0.5,close_code=4000") as emu:
        p = producer(kafka_settings, emu, ec_key(), channels=("level2", "candles"), product_ids=("SOL-USD",))
        async with running(p):
            await wait_for(lambda: emu._connections >= 3, what="two reconnects")
            await wait_for(lambda: p.ready()[0], what="ready again")
    records = await read_raw(kafka_settings, "coinbase", until_end(3))
    sessions: dict[str, list] = {}
    for r in records:
        if r.kind == KIND_FRAME:
            sessions.setdefault(r.session, []).append(json.loads(r.payload))
    complete = [frames for frames in sessions.values() if len(acks(frames)) >= 3]
    assert len(complete) >= 2
    for frames in complete:
        assert frames[0]["sequence_num"] == 0                                      # a new connection counts from 0
        assert acks(frames)[2] == {"heartbeats": ["heartbeats"], "level2": ["SOL-USD"], "candles": ["SOL-USD"]}
        assert any(f["channel"] == "l2_data" and f["events"][0]["type"] == "snapshot" for f in frames)
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert any(e["reason"] == "closed" and e.get("close_code") == 4000 for e in ends)


async def test_wrong_key_gives_clear_error_and_slow_retries(kafka_settings):
    await declare(kafka_settings)
    async with emulator(public_keys=public_pem(ec_key()), key_name=KEY_NAME) as emu:
        pem = sec1_pem(ec_key())   # a key the emulator does not know
        p = producer(kafka_settings, emu, pem, loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0})
        async with running(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the auth failure")
            await asyncio.sleep(0.8)
            assert p.loop.attempts == 1 and p.ready() == (False, "not connected")
    records = await read_raw(kafka_settings, "coinbase", until_end())
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "auth_failed" and "authentication failure" in end["error"]
    assert "heartbeats" in end["error"] and pem not in end["error"] and KEY_NAME not in end["error"]


async def test_ed25519_key_from_secret_files_on_the_user_endpoint(kafka_settings, tmp_path):
    await declare(kafka_settings)
    key = ed_key()
    (tmp_path / "name").write_text(KEY_NAME + "\n")
    (tmp_path / "key").write_text(ed_raw_b64(key) + "\n")
    env = {"TICKPIPE_COINBASE_KEY_NAME_FILE": str(tmp_path / "name"), "TICKPIPE_COINBASE_PRIVATE_KEY_FILE": str(tmp_path / "key"),
           "TICKPIPE_COINBASE_CHANNELS": "user,futures_balance_summary", "TICKPIPE_COINBASE_PRODUCT_IDS": "BTC-USD"}
    async with emulator(rate=20, public_keys=public_pem(key), key_name=KEY_NAME) as emu:
        cfg = load_section(CoinbaseSettings, "coinbase", env={**env, "TICKPIPE_COINBASE_URL": emu.ws_url("/user")})
        adapter = CoinbaseAdapter(cfg, fast_settings())
        assert adapter.signer.algorithm == "EdDSA" and "BEGIN" not in repr(cfg) and KEY_NAME not in repr(cfg)
        p = Producer(adapter, kafka_settings, conn_id="coinbase-t")
        async with running(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            await asyncio.sleep(0.3)
    got = docs(await read_raw(kafka_settings, "coinbase", until_end()))
    assert acks(got)[-1] == {"heartbeats": ["heartbeats"], "user": ["BTC-USD"], "futures_balance_summary": ["emulator-portfolio"]}
    assert any(f["channel"] == "user" and f["events"][0]["type"] == "snapshot" for f in got)
    assert any(f["channel"] == "futures_balance_summary" for f in got)


async def test_public_channels_without_key_send_no_jwt(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(rate=50, journal=tmp_path / "j", public_keys=public_pem(ec_key())) as emu:
        p = producer(kafka_settings, emu, channels=("market_trades",), product_ids=("ETH-USD", "NOPE-USD"))
        async with running(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            await asyncio.sleep(0.3)
    got = docs(await read_raw(kafka_settings, "coinbase", until_end()))
    assert acks(got)[-1] == {"heartbeats": ["heartbeats"], "market_trades": ["ETH-USD"]}   # unknown product dropped
    assert not [e for e in read_journal(str(tmp_path / "j")) if e["event"] == "auth"]


async def test_resync_resubscribes_the_product_for_a_new_snapshot(kafka_settings):
    await declare(kafka_settings)
    async with emulator(rate=50) as emu:
        p = producer(kafka_settings, emu, ec_key(), channels=("level2", "ticker"))
        async with running(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            assert p.loop.request_resync(ResyncTarget(instrument="ETH-USD", channel="l2_data", reason="gap"))
            assert not await p.adapter.resync(p.loop.session, ResyncTarget(instrument="NOPE-USD"))
            await asyncio.sleep(0.5)
    got = docs(await read_raw(kafka_settings, "coinbase", until_end()))
    levels = [a.get("level2") for a in acks(got)]
    assert levels[-2:] == [["BTC-USD"], ["BTC-USD", "ETH-USD"]]
    snapshots = [f["events"][0]["product_id"] for f in got if f["channel"] == "l2_data" and f["events"][0]["type"] == "snapshot"]
    assert snapshots == ["BTC-USD", "ETH-USD", "ETH-USD"]


async def test_error_frame_while_streaming_ends_the_session(kafka_settings):
    await declare(kafka_settings)
    async with emulator(rate=20, faults="token_expiry=0.4") as emu:
        p = producer(kafka_settings, emu, ec_key(), channels=("ticker",))
        async with running(p):
            await wait_for(lambda: p.loop.attempts >= 2, what="a reconnect after the error")
    records = await read_raw(kafka_settings, "coinbase", until_end())
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "error" and "coinbase error: authentication failure" in end["error"]


def test_settings_validation_and_jwt_shape(tmp_path):
    with pytest.raises(ConfigError, match="unknown channel"):
        CoinbaseSettings(channels=("level3",))
    with pytest.raises(ConfigError, match="set both or neither"):
        CoinbaseSettings(key_name=Secret("organizations/o/apiKeys/k"))
    with pytest.raises(ConfigError, match="user need a CDP API key"):
        CoinbaseSettings(channels=("user",))
    garbage = "definitely-not-a-private-key-value"
    with pytest.raises(ConfigError, match="TICKPIPE_COINBASE_PRIVATE_KEY") as info:
        CoinbaseAdapter(CoinbaseSettings(key_name=Secret(KEY_NAME), private_key=Secret(garbage)))
    assert garbage not in str(info.value)
    key = ec_key()
    adapter = CoinbaseAdapter(CoinbaseSettings(key_name=Secret(KEY_NAME), private_key=Secret(sec1_pem(key).replace("\n", "\\n"))))
    token = adapter.signer.token()
    header = pyjwt.get_unverified_header(token)
    claims = pyjwt.decode(token, key.public_key(), algorithms=["ES256"])
    assert header["alg"] == "ES256" and header["kid"] == KEY_NAME and len(header["nonce"]) == 64
    assert claims["iss"] == "cdp" and claims["sub"] == KEY_NAME and claims["exp"] - claims["nbf"] == 120
    assert "uri" not in claims and adapter.signer.token() != token
    assert CoinbaseSettings().subscriptions() == {"heartbeats": [], "level2": ["BTC-USD", "ETH-USD"],
                                                  "market_trades": ["BTC-USD", "ETH-USD"], "ticker": ["BTC-USD", "ETH-USD"]}


async def test_produce_coinbase_command_keeps_key_out_of_logs(kafka_settings, tmp_path):
    import signal

    from tickpipe.children import Child, tickpipe_command

    await declare(kafka_settings)
    key = ec_key()
    (tmp_path / "key.pem").write_text(sec1_pem(key))
    log = tmp_path / "producer.log"
    async with emulator(rate=50, public_keys=public_pem(key), key_name=KEY_NAME) as emu:
        env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
               "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_LOG_LEVEL": "DEBUG",
               "TICKPIPE_COINBASE_URL": emu.ws_url(""), "TICKPIPE_COINBASE_KEY_NAME": KEY_NAME,
               "TICKPIPE_COINBASE_PRIVATE_KEY_FILE": str(tmp_path / "key.pem"), "TICKPIPE_COINBASE_CHANNELS": "ticker"}
        child = Child(tickpipe_command("produce", "coinbase", "--ops-port", "0"), "producer", log_file=log, env=env)
        await asyncio.to_thread(child.start)
        try:
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 20, what="frames flowing")
            child.signal(signal.SIGTERM)
            assert await asyncio.to_thread(child.process.wait, 30) == 0
        finally:
            child.stop()
    got = docs(await read_raw(kafka_settings, "coinbase", until_end()))
    assert acks(got)[-1] == {"heartbeats": ["heartbeats"], "ticker": ["BTC-USD", "ETH-USD"]}
    text = log.read_text()
    assert "coinbase" in text and KEY_NAME not in text and "PRIVATE KEY" not in text and "eyJ" not in text
