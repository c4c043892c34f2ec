"""TD Ameritrade / Schwab producer adapters against the streamer emulators and the real broker."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from tests.emulators.streamer_client import StreamerClient
from tests.producers.core_support import fast_settings, read_raw, wait_for
from tests.producers.core_support import running as producing
from tickpipe.config import ConfigError, Secret, load_section
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.journal import read_journal
from tickpipe.emulators.tdameritrade import SchwabEmulator, StreamerEmulatorSettings, TDAmeritradeEmulator
from tickpipe.envelope import CT_JSON, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.base import AuthError, ResyncTarget
from tickpipe.producers.runner import Producer
from tickpipe.producers.tdameritrade import SchwabAdapter, StreamerSettings, TDAmeritradeAdapter
from tickpipe.topics import TopicSpec, control_topic, create_missing, raw_topic

EMULATORS = {"tdameritrade": TDAmeritradeEmulator, "schwab": SchwabEmulator}
ADAPTERS = {"tdameritrade": TDAmeritradeAdapter, "schwab": SchwabAdapter}


async def declare(kafka, provider: str) -> None:
    from tickpipe.admin import admin_client
    async with admin_client(kafka) as admin:
        await create_missing(admin, [TopicSpec(raw_topic(provider, kafka.topic_prefix), 1, 3600_000),
                                     TopicSpec(control_topic(provider, kafka.topic_prefix), 1, 3600_000)])


@contextlib.asynccontextmanager
async def emulator(provider: str, faults: str = "", journal=None, rate: float = 100, **settings):
    creds = StreamerEmulatorSettings(**{"heartbeat_s": 0.2, "clock_speed": 120, **settings})
    options = EmulatorOptions(rate=rate, faults=FaultPlan.parse(faults), credentials=creds,
                              journal=str(journal) if journal else None)
    async with EMULATORS[provider](options) as emu:
        yield emu


def producer(kafka, emu, subscriptions: str, client_id="app-key", secret="app-secret", refresh="refresh-1",
             loop=None, conn_id="td-t") -> Producer:
    cfg = StreamerSettings(client_id=Secret(client_id), client_secret=Secret(secret), refresh_token=Secret(refresh),
                           api_url=emu.http_url(""), subscriptions=subscriptions, streamer_scheme="ws")
    return Producer(ADAPTERS[emu.provider](cfg, fast_settings(**(loop or {}))), kafka, conn_id=conn_id)


def docs(records) -> list[tuple[str, dict]]:
    return [(r.session, json.loads(r.payload)) for r in records if r.kind == KIND_FRAME and r.payload[:1] == b"{"]


def responses(records) -> list[tuple[str, dict]]:
    return [(s, e) for s, d in docs(records) for e in d.get("response", [])]


async def test_tda_frames_verbatim_in_order_with_markers(kafka_settings, tmp_path):
    await declare(kafka_settings, "tdameritrade")
    async with emulator("tdameritrade", journal=tmp_path / "j.jsonl", rate=200) as emu:
        p = producer(kafka_settings, emu, "TIMESALE_EQUITY=AAPL,MSFT@0,1,2,3,4;QUOTE=AAPL@0,1,2,3")
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("sent", 0) >= 80, what="80 messages sent")
        emu.journal.flush()
        sent = [(e["ids"]["instrument"], e["ids"]["product_seq"]) for e in read_journal(emu.journal.path)
                if e["event"] == "sent" and e["ids"]["kind"] == "trade"]
    records = await read_raw(kafka_settings, "tdameritrade", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    assert {r.content_type for r in records if r.kind == KIND_FRAME} == {CT_JSON}
    assert {r.provider for r in records} == {"tdameritrade"} and {r.conn for r in records} == {"td-t"}
    replies = [e for _, e in responses(records)]
    assert (replies[0]["command"], replies[0]["content"]["code"]) == ("LOGIN", 0)
    assert {(e["service"], e["content"]["code"]) for e in replies[1:3]} == {("TIMESALE_EQUITY", 0), ("QUOTE", 0)}
    got = [(c["key"], c["seq"]) for _, d in docs(records) for e in d.get("data", [])
           if e["service"] == "TIMESALE_EQUITY" for c in e["content"]]
    assert len(got) >= 20 and got == sent[:len(got)], "every timesale, verbatim and in order"
    assert any("notify" in d for _, d in docs(records))               # heartbeats are recorded too
    end = decode_marker(records[-1].payload)
    assert end["reason"] == "shutdown"


async def test_schwab_reconnect_after_disconnect_resubscribes_everything(kafka_settings):
    await declare(kafka_settings, "schwab")
    async with emulator("schwab", faults="disconnect_every=0.6,close_code=4000") as emu:
        p = producer(kafka_settings, emu, "LEVELONE_EQUITIES=AAPL,MSFT@0,1,2,3;CHART_EQUITY=AAPL")
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("connect", 0) >= 3, what="two reconnects")
            await wait_for(lambda: p.ready()[0], what="ready again")
    records = await read_raw(kafka_settings, "schwab", lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= 3)
    per_session: dict[str, set] = {}
    for session, e in responses(records):
        if e["command"] == "SUBS" and e["content"]["code"] == 0:
            per_session.setdefault(session, set()).add(e["service"])
    full = [s for s in per_session.values() if s == {"LEVELONE_EQUITIES", "CHART_EQUITY"}]
    assert len(full) >= 3
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert any(e["reason"] == "closed" and e.get("close_code") == 4000 for e in ends)


@pytest.mark.parametrize("provider", ["schwab", "tdameritrade"])
async def test_wrong_credentials_clear_error_and_slow_retries(kafka_settings, provider):
    await declare(kafka_settings, provider)
    strict = dict(client_id=Secret("app-key"), client_secret=Secret("good-secret"), refresh_token=Secret("refresh-1"))
    if provider == "tdameritrade":
        strict.pop("client_secret")
    async with emulator(provider, **strict) as emu:
        bad = dict(secret="wrong-secret-value") if provider == "schwab" else dict(refresh="wrong-refresh-value")
        p = producer(kafka_settings, emu, "CHART_EQUITY=AAPL", loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0}, **bad)
        async with producing(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the auth failure")
            await asyncio.sleep(0.8)
            assert p.loop.attempts == 1 and p.ready() == (False, "not connected")
        with pytest.raises(AuthError, match="token endpoint refused the credentials: HTTP 40") as info:
            await p.adapter.connect()                                   # the error the loop logged, once
        assert info.value.permanent
        assert "wrong-secret-value" not in str(info.value) and "wrong-refresh-value" not in str(info.value)
        good = producer(kafka_settings, emu, "CHART_EQUITY=AAPL", secret="good-secret", conn_id="td-good")
        async with producing(good):                                     # the right credentials pass the same checks
            await wait_for(lambda: good.ready()[0], what="ready with the right credentials")


async def test_login_denied_code_3_is_an_auth_failure(kafka_settings):
    await declare(kafka_settings, "schwab")
    async with emulator("schwab", faults="auth_fail=-1") as emu:
        p = producer(kafka_settings, emu, "CHART_EQUITY=AAPL", loop={"auth_retry_min_s": 5.0, "auth_retry_max_s": 10.0})
        async with producing(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="LOGIN denied")
    records = await read_raw(kafka_settings, "schwab", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "auth_failed" and "code 3" in end["error"]


async def test_second_session_code_12_ends_the_older_one(kafka_settings):
    await declare(kafka_settings, "schwab")
    async with emulator("schwab") as emu:
        p = producer(kafka_settings, emu, "LEVELONE_EQUITIES=AAPL@0,1,2", loop={"backoff_initial_s": 2.0, "backoff_max_s": 3.0})
        async with producing(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            other = await StreamerClient.connect(emu)
            assert (await other.login())["content"]["code"] == 0          # the same user logs in elsewhere
            await wait_for(lambda: not p.ready()[0], what="the producer's session ended")
            await other.close()
    records = await read_raw(kafka_settings, "schwab", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert "code 12" in end["error"]


async def test_heartbeats_keep_the_session_and_a_stall_makes_it_stale(kafka_settings):
    await declare(kafka_settings, "schwab")
    assert SchwabAdapter.loop_defaults["stale_after_s"] == 30.0
    async with emulator("schwab", faults="stall_every=1.0,stall_for=4") as emu:
        p = producer(kafka_settings, emu, "CHART_EQUITY=AAPL", loop={"stale_after_s": 0.8})
        async with producing(p):
            await wait_for(lambda: p.loop.attempts >= 2, what="a reconnect after the stall")
    records = await read_raw(kafka_settings, "schwab", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert ends[0]["reason"] == "stale"
    first = [d for s, d in docs(records) if s == records[0].session]
    assert sum("notify" in d for d in first) >= 2       # heartbeats (CHART only: little data) kept it alive until then


async def test_resync_unsubscribes_and_adds_the_instrument(kafka_settings):
    await declare(kafka_settings, "tdameritrade")
    async with emulator("tdameritrade") as emu:
        p = producer(kafka_settings, emu, "QUOTE=AAPL,MSFT@0,1,2;TIMESALE_EQUITY=AAPL")
        async with producing(p):
            await wait_for(lambda: p.ready()[0], what="ready")
            assert p.loop.request_resync(ResyncTarget(instrument="AAPL", reason="gap"))
            assert not await p.adapter.resync(p.loop.session, ResyncTarget(instrument="NOPE"))
            await asyncio.sleep(0.5)
    records = await read_raw(kafka_settings, "tdameritrade", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    cmds = [(e["service"], e["command"], e["content"]["code"]) for _, e in responses(records)]
    assert ("QUOTE", "UNSUBS", 0) in cmds and ("QUOTE", "ADD", 0) in cmds
    assert ("TIMESALE_EQUITY", "UNSUBS", 0) in cmds and ("TIMESALE_EQUITY", "ADD", 0) in cmds
    adds = [c for _, d in docs(records) for e in d.get("data", []) if e["command"] == "ADD" for c in e["content"]]
    assert adds and {c["key"] for c in adds} == {"AAPL"}


def test_settings_from_env_secret_files_and_subscription_spec(tmp_path):
    (tmp_path / "refresh").write_text("file-refresh-token\n")
    env = {"TICKPIPE_SCHWAB_CLIENT_ID": "app", "TICKPIPE_SCHWAB_REFRESH_TOKEN_FILE": str(tmp_path / "refresh"),
           "TICKPIPE_SCHWAB_SUBSCRIPTIONS": "LEVELONE_EQUITIES=AAPL,MSFT@0,1,2;chart_equity=SPY"}
    s = load_section(StreamerSettings, "schwab", env=env)
    assert s.refresh_token.reveal() == "file-refresh-token" and "file-refresh-token" not in repr(s)
    adapter = SchwabAdapter(s)
    subs = {sub.service: sub for sub in adapter.subscriptions}
    assert subs["LEVELONE_EQUITIES"].parameters() == {"keys": "AAPL,MSFT", "fields": "0,1,2"}
    assert subs["CHART_EQUITY"].fields == tuple(range(9)) and adapter.endpoint() == "https://api.schwabapi.com"
    with pytest.raises(ConfigError, match="TICKPIPE_SCHWAB_SUBSCRIPTIONS.*TIMESALE_EQUITY"):
        SchwabAdapter(StreamerSettings(client_id=Secret("a"), refresh_token=Secret("r"), subscriptions="TIMESALE_EQUITY=AAPL"))
    with pytest.raises(ConfigError, match="TICKPIPE_TDAMERITRADE_SUBSCRIPTIONS"):
        TDAmeritradeAdapter(StreamerSettings(client_id=Secret("a"), refresh_token=Secret("r"), subscriptions="QUOTE"))
    with pytest.raises(ConfigError, match="TICKPIPE_TDAMERITRADE_REFRESH_TOKEN"):
        TDAmeritradeAdapter(StreamerSettings(client_id=Secret("a")))


async def test_produce_command_against_the_emulate_command(kafka_settings, tmp_path):
    """``tickpipe produce tdameritrade`` against ``tickpipe emulate tdameritrade``: both real processes."""
    import signal

    from tickpipe.admin import declare_topics
    from tickpipe.children import Child, tickpipe_command

    await declare_topics(kafka_settings)
    (tmp_path / "refresh").write_text("cli-refresh-token-321\n")
    journal = tmp_path / "journal.jsonl"
    emu_env = {"TICKPIPE_EMULATOR_TDAMERITRADE_CLIENT_ID": "CLIAPPKEY",
               "TICKPIPE_EMULATOR_TDAMERITRADE_REFRESH_TOKEN": "cli-refresh-token-321"}
    emulator = Child(tickpipe_command("emulate", "tdameritrade", "--rate", "200", "--journal", str(journal),
                                      "--ops-port", "0"), "emulator", log_file=tmp_path / "emulator.log", env=emu_env)
    log = tmp_path / "producer.log"
    with emulator:
        env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
               "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_HOST": "127.0.0.1",
               "TICKPIPE_TDAMERITRADE_API_URL": f"http://127.0.0.1:{emulator.ready['port']}",
               "TICKPIPE_TDAMERITRADE_STREAMER_SCHEME": "ws", "TICKPIPE_TDAMERITRADE_CLIENT_ID": "CLIAPPKEY",
               "TICKPIPE_TDAMERITRADE_REFRESH_TOKEN_FILE": str(tmp_path / "refresh"),
               "TICKPIPE_TDAMERITRADE_SUBSCRIPTIONS": "TIMESALE_EQUITY=AAPL,MSFT", "TICKPIPE_OPS_LOG_LEVEL": "DEBUG"}
        producer = Child(tickpipe_command("produce", "tdameritrade", "--ops-port", "0"), "producer", log_file=log, env=env)
        await asyncio.to_thread(producer.start)
        try:
            await wait_for(lambda: journal.exists() and journal.stat().st_size > 20_000, what="data flowing")
            producer.signal(signal.SIGTERM)
            code = await asyncio.to_thread(producer.process.wait, 30)
        finally:
            producer.stop()
    assert code == 0
    records = await read_raw(kafka_settings, "tdameritrade", lambda rs: any(r.kind == KIND_SESSION_END for r in rs))
    got = [(c["key"], c["seq"]) for _, d in docs(records) for e in d.get("data", []) for c in e["content"]]
    sent = [(e["ids"]["instrument"], e["ids"]["product_seq"]) for e in map(json.loads, journal.read_text().splitlines())
            if e["event"] == "sent"]
    assert len(got) > 10 and got == sent[:len(got)]
    text = log.read_text()
    assert "cli-refresh-token-321" not in text and "CLIAPPKEY" not in text
