"""Connection faults for every provider at once, through the real pipeline: connections cut every
few seconds (close frames, and bare TCP drops), data stalls, the provider's slow-client error,
tokens expiring mid-session. Every producer recovers by itself, no process crashes, and every
reconnect the journal records is one RESET alert whose span is the outage: it starts when the
emulator cut the connection (within the time a client needs to notice) and ends when the
emulator accepted the next one, before its first data message."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability import credentials
from tests.reliability.support import Rig, decode_avro, journal_events, read_topics, wait_until
from tickpipe.providers import PROVIDERS
from tickpipe.topics import alerts_topic

RUN_S = 13.0
NOTICE_S = 1.0          # a close frame or a dropped TCP connection is seen this soon (on 2 loaded cores)
STALLS = "stall_every=3,stall_for=1"
# fault mix -> provider -> spec; a provider without the fault (no tokens, no slow-client error) sits it out
MIXES = {
    "cuts": {p: f"disconnect_every=3,close_code={0 if p in ('coinbase', 'financefeast') else 1011},{STALLS}"
             for p in PROVIDERS},
    "slow-client": {p: f"slow_client=3,{STALLS}" for p in PROVIDERS if p not in ("financefeast", "marketprophit")},
    "token-expiry": {p: f"token_expiry=3,{STALLS}" for p in ("tdameritrade", "schwab", "coinbase", "coinbase-exchange",
                                                              "marketprophit")},
}
# how a journal names the end of a session each mix causes (Market Prophit's producer renews its JWT
# before it expires: the session it closes for that counts)
CAUSES = {"cuts": ("fault",), "slow-client": ("slow_client", "ErrSlowConsume", "slow client"),
          "token-expiry": ("token_expiry", "token expired", "auth expired", "client closed")}
# tokens exist only with credentials (Coinbase JWTs, Exchange signatures); the streamers end a session on expiry
TOKEN_SETUP = {"emulator": {p: {**credentials.emulator_env(p),
                                **({f"TICKPIPE_EMULATOR_{p.upper()}_DROP_ON_TOKEN_EXPIRY": "true"}
                                   if p in ("tdameritrade", "schwab") else {})} for p in MIXES["token-expiry"]},
               "producer": {p: credentials.producer_env(p) for p in MIXES["token-expiry"]}}


def outages(lines: list[dict]) -> list[tuple[int, int, int, int]]:
    """(last data sent before the cut, cut, next connect, first data on it or 2**63) for every
    connection the emulator closed that was followed by another."""
    connects = [(e["ts_ns"], e["conn"]) for e in lines if e.get("event") == "connect"]
    first_sent: dict = {}
    last_sent: dict = {}
    for e in lines:
        if e.get("event") == "sent":
            first_sent.setdefault(e["conn"], e["ts_ns"])
            last_sent[e["conn"]] = e["ts_ns"]
    out, seen = [], set()
    for e in lines:
        if e.get("event") == "disconnect" and e["conn"] not in seen:
            seen.add(e["conn"])
            later = [(ts, c) for ts, c in connects if ts > e["ts_ns"]]
            if later:
                out.append((last_sent.get(e["conn"], 0), e["ts_ns"], later[0][0], first_sent.get(later[0][1], 2**63)))
    return out


@pytest.mark.timeout(150)
@pytest.mark.parametrize("mix", list(MIXES))
def test_every_provider_recovers_and_each_outage_is_one_reset_alert_with_its_span(mix, kafka_settings, tmp_path, figures):
    faults = MIXES[mix]
    providers = list(faults)
    setup = TOKEN_SETUP if mix == "token-expiry" else {}
    rig = Rig(kafka_settings, tmp_path)
    rig.declare_topics()
    try:
        worker = rig.worker("process", providers, env={"TICKPIPE_INTEGRITY_STALE_AFTER_S": "0"})
        worker.start()
        rig.start_feeds(providers, faults=faults, rate=40, emulator_env=setup.get("emulator"),
                        producer_env=setup.get("producer"))
        wait_until(lambda: all(any(e.get("event") == "sent" for e in journal_events(rig.journal(p))) for p in providers),
                   45, "every feed sending")                # a loaded machine starts seven feeds slowly
        time.sleep(RUN_S)
        frozen_ns = time.time_ns()
        for child in rig.emulators.values():         # the journals end here: later outages are not scored
            child.signal(19)                         # SIGSTOP
        time.sleep(4.0)                              # the processor catches up with what was sent
        assert rig.crashed() == []
        alerts = [r for _, r in decode_avro(asyncio.run(read_topics(kafka_settings, [alerts_topic(kafka_settings.topic_prefix)])))]
    finally:
        for child in rig.emulators.values():
            child.signal(18)                         # SIGCONT, so they can stop
        codes = rig.stop()
    assert set(codes.values()) == {0}, codes
    problems = {}
    for provider in providers:
        lines = [e for e in journal_events(rig.journal(provider)) if e.get("ts_ns", 0) <= frozen_ns]
        cuts = outages(lines)
        injected = [e for e in lines if e.get("event") == "disconnect"
                    and any(cause in str(e.get("reason")) for cause in CAUSES[mix])]
        connects = sum(1 for e in lines if e.get("event") == "connect")
        resets = sorted((a for a in alerts if a["provider"] == provider and a["kind"] == "RESET"),
                        key=lambda a: a["span_start"])
        wrong = []
        if len(injected) < 2 or len(cuts) < 2:
            wrong.append(f"only {len(injected)} sessions ended by {mix} ({len(cuts)} in all)")
        if connects - len(cuts) != 1:                 # every reconnect follows a cut: stalls cause none
            wrong.append(f"{connects} connections for {len(cuts)} cuts")
        if len(resets) != len(cuts):
            wrong.append(f"{len(cuts)} outages journaled, {len(resets)} RESET alerts")
        for (last_data, cut, reconnect, first_data), alert in zip(cuts, resets):
            start, end = alert["span_start"], alert["span_end"]
            # (a producer that closes a session itself - a JWT renewal - may miss the last message or two
            # the emulator sent meanwhile; they lie inside the span)
            if not last_data - 0.1e9 <= start <= cut + NOTICE_S * 1e9:
                wrong.append(f"span starts {(start - cut) / 1e9:+.3f}s after the cut, "
                             f"{(start - last_data) / 1e9:+.3f}s after the last data before it")
            if not reconnect - 0.2e9 <= end <= first_data:
                wrong.append(f"span ends {(end - reconnect) / 1e9:+.3f}s after the reconnect, "
                             f"{(end - first_data) / 1e9:+.3f}s after its first data")
        if wrong:
            problems[provider] = wrong
        figures[f"outages injected and survived ({mix}), each one RESET alert with its span"] += len(cuts)
        if mix == "cuts":
            figures["stalls injected and survived (no reconnect)"] += sum(
                1 for e in lines if e.get("event") == "fault" and e.get("fault") == "stall")
    assert problems == {}
