"""Financefeast producer adapter against the Financefeast emulator and the real broker."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.producers.core_support import declare_echo_topics, fast_settings, read_raw, wait_for
from tests.producers.core_support import running as producing
from tickpipe.config import Secret, load_section
from tickpipe.emulators.base import EmulatorOptions
from tickpipe.emulators.faults import FaultPlan
from tickpipe.emulators.financefeast import AUTHENTICATED, FinancefeastEmulator
from tickpipe.emulators.financefeast import FinancefeastSettings as EmulatorSettings
from tickpipe.emulators.journal import read_journal
from tickpipe.envelope import CT_JSON, KIND_FRAME, KIND_SESSION_END, KIND_SESSION_START, decode_marker
from tickpipe.producers.financefeast import FinancefeastAdapter, FinancefeastSettings
from tickpipe.producers.runner import Producer

TOKEN = "pk_" + "Nz4" * 7


async def declare(kafka) -> None:
    await declare_echo_topics(kafka, "financefeast", raw_partitions=1)


def emulator(tmp_path, faults: str = "", rate: float = 200, **settings) -> FinancefeastEmulator:
    return FinancefeastEmulator(EmulatorOptions(rate=rate, faults=FaultPlan.parse(faults), journal=str(tmp_path / "j.jsonl"),
                                                credentials=EmulatorSettings(**settings)))


def producer(kafka, emu, token: str = TOKEN, **loop) -> Producer:
    adapter = FinancefeastAdapter(FinancefeastSettings(token=Secret(token), url=emu.ws_url("/ws")), fast_settings(**loop))
    return Producer(adapter, kafka, conn_id="ff-t")


def until_ends(n: int = 1):
    return lambda rs: sum(r.kind == KIND_SESSION_END for r in rs) >= n


async def test_every_price_recorded_verbatim_in_order_with_markers(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path) as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):  # session start + the authenticated frame + 80 prices recorded
            await wait_for(lambda: p.recorder.seq >= 82, what="80 prices recorded")
        emu.journal.flush()
        sent = [(e["ids"]["instrument"], e["ids"]["date"]) for e in read_journal(emu.journal.path) if e["event"] == "sent"]
    records = await read_raw(kafka_settings, "financefeast", until_ends())
    assert [r.seq for r in records] == list(range(1, len(records) + 1))
    assert records[0].kind == KIND_SESSION_START and records[-1].kind == KIND_SESSION_END
    frames = [r for r in records if r.kind == KIND_FRAME]
    assert {(r.content_type, r.provider, r.conn) for r in frames} == {(CT_JSON, "financefeast", "ff-t")}
    assert json.loads(frames[0].payload) == {"type": "authenticated", "data": {"message": AUTHENTICATED}}
    docs = [json.loads(f.payload) for f in frames[1:]]
    assert frames[1].payload.startswith(b'{"type":"price","data":{"date":"')  # as the server wrote it
    got = [(d["data"]["symbol"], d["data"]["date"]) for d in docs]
    assert len(got) >= 80 and got == sent[:len(got)], "every price, in order"


async def test_reconnects_after_injected_disconnects_and_logs_in_again(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, "disconnect_every=0.4,close_code=4000", rate=100) as emu:
        p = producer(kafka_settings, emu)
        async with producing(p):
            await wait_for(lambda: emu.journal.counts.get("connect", 0) >= 3, what="two reconnects")
            await wait_for(lambda: p.ready()[0], what="ready again")
    records = await read_raw(kafka_settings, "financefeast", until_ends(3))
    sessions = {}
    for r in records:
        if r.kind == KIND_FRAME:
            sessions.setdefault(r.session, []).append(json.loads(r.payload))
    assert len(sessions) >= 3 and all(docs[0]["type"] == "authenticated" for docs in sessions.values())
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END]
    assert any(e["reason"] == "closed" and e.get("close_code") == 4000 for e in ends)


@pytest.mark.parametrize("with_json", [True, False])
async def test_wrong_token_is_a_clear_auth_failure_with_slow_retries(kafka_settings, tmp_path, with_json):
    await declare(kafka_settings)
    async with emulator(tmp_path, token=Secret(TOKEN), reject_with_json=with_json) as emu:
        wrong = "pk_" + "Wr0ng" * 4
        p = producer(kafka_settings, emu, token=wrong, auth_retry_min_s=5.0, auth_retry_max_s=10.0)
        async with producing(p):
            await wait_for(lambda: p.loop.auth_failures == 1, what="the auth failure")
            await asyncio.sleep(0.8)
            assert p.loop.attempts == 1 and not p.ready()[0]
    records = await read_raw(kafka_settings, "financefeast", until_ends())
    end = decode_marker([r for r in records if r.kind == KIND_SESSION_END][0].payload)
    assert end["reason"] == "auth_failed" and wrong not in end["error"]
    assert ("Token not authorised" if with_json else "code 1008") in end["error"]


async def test_stream_limit_is_retried_with_backoff_not_as_a_permanent_refusal(kafka_settings, tmp_path):
    await declare(kafka_settings)
    async with emulator(tmp_path, stream_limit=1) as emu:
        first = producer(kafka_settings, emu)
        second = Producer(FinancefeastAdapter(FinancefeastSettings(token=Secret(TOKEN), url=emu.ws_url("/ws")),
                                              fast_settings()), kafka_settings, conn_id="ff-2")
        async with producing(first):
            await wait_for(lambda: first.ready()[0], what="first stream")
            async with producing(second):
                await wait_for(lambda: second.loop.attempts >= 3, what="retries of the second stream")
                assert second.loop.auth_failures == 0 and not second.ready()[0]
    records = await read_raw(kafka_settings, "financefeast", until_ends(3))
    ends = [decode_marker(r.payload) for r in records if r.kind == KIND_SESSION_END and r.conn == "ff-2"]
    assert ends and "stream limit of 1" in ends[0]["error"]


def test_token_from_a_secret_file_and_never_shown(tmp_path):
    (tmp_path / "token").write_text(TOKEN + "\n")
    env = {"TICKPIPE_FINANCEFEAST_TOKEN_FILE": str(tmp_path / "token"),
           "TICKPIPE_FINANCEFEAST_URL": "wss://stream.test.financefeast.io/ws"}
    s = load_section(FinancefeastSettings, "financefeast", env=env)
    assert s.token.reveal() == TOKEN and TOKEN not in repr(s)
    assert FinancefeastAdapter(s).endpoint() == "wss://stream.test.financefeast.io/ws"
    assert FinancefeastAdapter(s).loop_settings.ping_interval_s == 10.0
