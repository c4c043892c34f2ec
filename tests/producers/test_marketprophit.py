"""Market Prophit producer adapter against the Market Prophit emulator and the real broker."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict

import pytest

from tests.producers.core_support import declare_echo_topics, fast_settings, read_raw, wait_for
from tests.producers.core_support import running as producing
from tickpipe.config import Secret, load_section, redact
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal
from tickpipe.emulators.marketprophit import MarketProphitEmulator
from tickpipe.emulators.marketprophit import MarketProphitSettings as EmulatorSettings
from tickpipe.envelope import CT_SOCKETIO, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.base import AuthError, FeedError, ResyncTarget
from tickpipe.producers.marketprophit import MarketProphitAdapter, MarketProphitSettings, parse_subscription
from tickpipe.producers.runner import Producer

KEY = "sk_live_" + "Mp9" * 8
SUBS = ("/real-time/crowd-sentiment?ticker=AAPL", "/real-time/user-sentiment?ticker=TSLA")


async def declare(kafka) -> None:
    await declare_echo_topics(kafka, "marketprophit", raw_partitions=1)


def emulator(tmp_path, faults: str = "", rate: float = 100, **settings) -> MarketProphitEmulator:
    return MarketProphitEmulator(EmulatorOptions(rate=rate, faults=FaultPlan.parse(faults), journal=str(tmp_path / "j.jsonl"),
                                                 credentials=EmulatorSettings(**settings)))


def producer(kafka, emu, key: str = KEY, subscriptions=SUBS, loop=None, **settings) -> Producer:
    cfg = MarketProphitSettings(secret_key=Secret(key), url=emu.http_url(""), subscriptions=subscriptions, **settings)
    return Producer(MarketProphitAdapter(cfg, fast_settings(**(loop or {}))), kafka, conn_id="mp-t")


def journal(emu) -> list[dict]:
    emu.journal.flush()
    return read_journal(emu.journal.path)


def until_ends(n: int = 1):
    return lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= n


def events_by_session(records) -> dict[str, list]:
    out = defaultdict(list)
    for r in records:
        if r.kind == KIND_FRAME:
            out[r.session].append(json.loads(r.payload))
    return out


async def test_res_events_recorded_verbatim_in_order_with_markers(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path) as emu:
        async with producing(producer(kafka_settings, emu)):
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 60, what="60 records sent")
        sent = [(e["ids"]["ticker"], e["ids"]["ts"]) for e in journal(emu) if e["event"] == "sent"]
    records = await read_raw(kafka_settings, "marketprophit", until_ends())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    frames = [r for r in records if r.kind == KIND_FRAME]
    assert {(r.content_type, r.conn) for r in frames} == {(CT_SOCKETIO, "mp-t")}
    assert frames[0].payload.startswith(b'["res",[{"ts":"')
    events = [json.loads(f.payload) for f in frames]
    assert all(e[0] == "res" and isinstance(e[1][0]["ticker"], str) for e in events)
    got = [(e[1][0]["ticker"], e[1][0]["ts"]) for e in events]
    assert len(got) >= 40 and got == sent[:len(got)], "every record, in order"
    assert {t for t, _ in got} == {"AAPL", "TSLA"}


async def test_reconnect_after_injected_disconnect_resubscribes_everything(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, "disconnect_every=0.5,close_code=0") as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("connect", 0) >= 3, what="two reconnects")
            await wait_for(lambda: p.ready()[0], what="ready again")
        requests = defaultdict(list)
        for e in journal(emu):
            if e["event"] == "request" and e["action"] == "subscribe":
                requests[e["conn"]].append((e["path"], e["ticker"]))
    everything = [("/real-time/crowd-sentiment", "AAPL"), ("/real-time/user-sentiment", "TSLA")]
    assert all(subs == everything[:len(subs)] for subs in requests.values())  # a drop may cut one short
    assert sum(subs == everything for subs in requests.values()) >= 3
    records = await read_raw(kafka_settings, "marketprophit", until_ends(3))
    assert len(events_by_session(records)) >= 2 and sum(r.kind == KIND_SESSION_START for r in records) >= 3
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert any(e["reason"] == "closed" for e in ends[:2])


async def test_generation_b_subscription_records_data_events(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path) as emu:
        p = producer(kafka_settings, emu, subscriptions=("market-prophit-sentiment",))
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 10, what="10 data events sent")
            # sent is not yet received on a loaded machine: wait until the producer recorded them
            await wait_for(lambda: p.recorder.seq >= 7, what="the data events recorded")
    records = await read_raw(kafka_settings, "marketprophit", until_ends())
    events = [json.loads(r.payload) for r in records if r.kind == KIND_FRAME]
    assert len(events) >= 5 and {e[0] for e in events} == {"data"}
    assert events[0][1]["path"] == "market-prophit-sentiment" and len(events[0][1]["results"]) == 5


async def test_socketio_keepalive_holds_one_session_through_many_ping_intervals(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, rate=5, ping_interval_s=0.2, ping_timeout_s=0.5) as emu:
        p = producer(kafka_settings, emu, subscriptions=("/real-time/crowd-sentiment?ticker=AAPL",))
        async with producing(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            await asyncio.sleep(1.5)  # 7 ping intervals, 3 ping timeouts
            assert p.ready()[0] and p.loop.attempts == 1
        assert emu.journal.counts.get("connect") == 1


async def test_wrong_secret_key_is_a_clear_auth_failure_with_slow_retries(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, secret_key=Secret(KEY)) as emu:
        wrong = "sk_live_" + "Zz1" * 8
        p = producer(kafka_settings, emu, key=wrong, loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0})
        async with producing(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the auth failure")
            await asyncio.sleep(0.8)
            assert p.loop.attempts == 1 and not p.ready()[0]
    records = await read_raw(kafka_settings, "marketprophit", lambda rs: len(rs) >= 1, timeout=1.5)
    assert records == []  # refused at POST /jwt: no session was opened
    assert p.loop.auth_failures == 1


async def test_token_refreshed_before_expiry_and_subscriptions_restored(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, token_lifetime_s=2.0) as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("connect", 0) >= 3, what="two token refreshes")
            await wait_for(lambda: p.ready()[0], what="ready again")
        lines = journal(emu)
    assert not [e for e in lines if e["event"] == "auth" and not e["ok"]], "never used an expired token"
    records = await read_raw(kafka_settings, "marketprophit", until_ends(2))
    ends = [decode_marker(r.payload)["reason"] for r in records if r.kind == KIND_SESSION_END]
    assert ends[:2] == ["token_refresh", "token_refresh"]
    for events in list(events_by_session(records).values())[:2]:
        assert {e[1][0]["ticker"] for e in events} == {"AAPL", "TSLA"}


async def test_server_side_token_expiry_mid_session_reconnects_with_a_new_token(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, "token_expiry=1.0", token_has_exp=False) as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("fault:token_expiry", 0) >= 2, what="two expiries")
            await wait_for(lambda: p.ready()[0], what="ready again")
        lines = journal(emu)
    reasons = [e["reason"] for e in lines if e["event"] == "disconnect"]
    assert reasons[:2] == ["token expired", "token expired"]
    subscribed = defaultdict(list)
    for e in lines:
        if e["event"] == "request" and e["action"] == "subscribe":
            subscribed[e["conn"]].append(e["ticker"])
    # every session subscribes in the configured order (on a loaded machine one may expire half-way
    # through); sessions before and after an expiry subscribed everything
    assert all(t == ["AAPL", "TSLA"][:len(t)] for t in subscribed.values())
    assert sum(t == ["AAPL", "TSLA"] for t in subscribed.values()) >= 2
    records = await read_raw(kafka_settings, "marketprophit", until_ends(2))
    assert decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)["reason"] == "closed"


async def test_refused_subscription_is_permanent_and_names_the_path(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path) as emu:
        p = producer(kafka_settings, emu, subscriptions=("/real-time/no-such-thing?ticker=AAPL",),
                     loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0})
        async with producing(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the refusal")
    records = await read_raw(kafka_settings, "marketprophit", until_ends())
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "auth_failed" and "Unknown endpoint: /real-time/no-such-thing" in end["error"]
    err = [json.loads(r.payload) for r in records if r.kind == KIND_FRAME]
    assert err[0][0] == "err" and err[0][1]["message"].startswith("Unknown endpoint")  # the err event is recorded


async def test_resync_unsubscribes_and_resubscribes_the_ticker(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path) as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            assert p.loop.request_resync(ResyncTarget(instrument="TSLA", reason="gap"))
            assert not await p.adapter.resync(p.loop.session, ResyncTarget(instrument="NOPE"))
            await wait_for(lambda: emu.journal.counts.get("request", 0) >= 4, what="the resync requests")
        requests = [(e["action"], e["ticker"]) for e in journal(emu) if e["event"] == "request"]
    assert requests[:4] == [("subscribe", "AAPL"), ("subscribe", "TSLA"), ("unsubscribe", "TSLA"), ("subscribe", "TSLA")]


@pytest.mark.parametrize("http_form", [False, True])
async def test_a_refused_handshake_is_a_clear_transient_error(tmp_path, http_form):
    """The token expires while the handshake is slow: the socket.io refusal names the reason."""
    async with emulator(tmp_path, "slow=0.3", token_lifetime_s=0.2, refuse_with_http=http_form) as emu:
        adapter = MarketProphitAdapter(MarketProphitSettings(secret_key=Secret(KEY), url=emu.http_url("")), fast_settings())
        with pytest.raises(FeedError, match="jwt expired") as refusal:
            await adapter.connect()
    assert not isinstance(refusal.value, AuthError) and KEY not in str(refusal.value)


async def test_the_fetched_jwt_is_masked_in_logs_and_sets_the_refresh_deadline(tmp_path):
    async with emulator(tmp_path, token_lifetime_s=100) as emu:
        adapter = MarketProphitAdapter(MarketProphitSettings(secret_key=Secret(KEY), url=emu.http_url("")), fast_settings())
        token = await adapter.fetch_token()
    assert redact(f"GET /socket.io/?EIO=3&token={token}") == "GET /socket.io/?EIO=3&token=***"
    assert 80 < adapter.session_deadline() - time.time() <= 91  # a tenth of the lifetime before exp


def test_settings_from_env_secret_file_and_subscription_syntax(tmp_path):
    (tmp_path / "key").write_text(KEY + "\n")
    env = {"TICKPIPE_MARKETPROPHIT_SECRET_KEY_FILE": str(tmp_path / "key"),
           "TICKPIPE_MARKETPROPHIT_SUBSCRIPTIONS": "/real-time/tweet-volume?ticker=TSLA,crowd-sentiment"}
    s = load_section(MarketProphitSettings, "marketprophit", env=env)
    assert s.secret_key.reveal() == KEY and KEY not in repr(s)
    assert MarketProphitAdapter(s).requests == [
        {"path": "/real-time/tweet-volume", "method": "get", "params": {"ticker": "TSLA"}},
        {"path": "crowd-sentiment", "params": {}}]
    assert parse_subscription("/real-time/user-sentiment?ticker=JABA&x=1", "GET")["params"] == {"ticker": "JABA", "x": "1"}


async def test_tickpipe_produce_subprocess_stops_cleanly_on_sigint(kafka_settings, tmp_path):
    """engineio 3.x would hijack SIGINT (stop the loop); the adapter leaves signals to run_service."""
    import signal

    from tickpipe.children import Child, tickpipe_command

    await declare(kafka_settings)
    (tmp_path / "key").write_text(KEY + "\n")
    log = tmp_path / "producer.log"
    async with emulator(tmp_path) as emu:
        env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
               "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_HOST": "127.0.0.1",
               "TICKPIPE_MARKETPROPHIT_URL": emu.http_url(""), "TICKPIPE_MARKETPROPHIT_SECRET_KEY_FILE": str(tmp_path / "key"),
               "TICKPIPE_MARKETPROPHIT_SUBSCRIPTIONS": ",".join(SUBS), "TICKPIPE_OPS_LOG_LEVEL": "DEBUG"}
        child = Child(tickpipe_command("produce", "marketprophit", "--connection-id", "mp-cli", "--ops-port", "0"),
                      "producer", log_file=log, env=env)
        await asyncio.to_thread(child.start)
        try:
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 30, what="records flowing")
            child.signal(signal.SIGINT)
            code = await asyncio.to_thread(child.process.wait, 30)
        finally:
            child.stop()
        assert code == 0
        unsubscribed = [e["ticker"] for e in journal(emu) if e["event"] == "request" and e["action"] == "unsubscribe"]
    assert unsubscribed == ["AAPL", "TSLA"]
    records = await read_raw(kafka_settings, "marketprophit", until_ends())
    assert decode_marker(records[-1].payload)["reason"] == "shutdown" and {r.conn for r in records} == {"mp-cli"}
    assert KEY not in log.read_text()
