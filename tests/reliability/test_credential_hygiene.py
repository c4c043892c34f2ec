"""Credential hygiene across every provider, end to end: real emulators enforcing known
credentials (with faults: malformed frames, drops, duplicates, disconnects, token expiry;
rejected logins are in ``test_wrong_credentials``), real producers holding them at DEBUG log level, and the processor. No log line of any
process, no scraped /metrics, no DLQ record, no alert and no session-end error text holds a
secret value."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.reliability import credentials
from tests.reliability.support import Rig, decode_avro, http_get, read_topics
from tickpipe.envelope import KIND_FRAME
from tickpipe.providers import PROVIDERS
from tickpipe.topics import alerts_topic, dlq_topic, raw_topic

FAULTS = "malformed=0.05,drop=0.02,duplicate=0.02,disconnect_every=6,close_code=1011"
TOKEN_EXPIRY = {"tdameritrade": ",token_expiry=5", "schwab": ",token_expiry=5", "marketprophit": ",token_expiry=5"}


@pytest.mark.timeout(240)
def test_no_secret_in_logs_metrics_dead_letters_alerts_or_errors(kafka_settings, tmp_path, figures):
    rig = Rig(kafka_settings, tmp_path, env={"TICKPIPE_OPS_LOG_LEVEL": "DEBUG"})
    rig.declare_topics()
    try:
        rig.start_feeds(PROVIDERS, rate=40,
                        faults={p: FAULTS + TOKEN_EXPIRY.get(p, "") for p in PROVIDERS},
                        emulator_env={p: credentials.emulator_env(p) for p in PROVIDERS},
                        producer_env={p: credentials.producer_env(p) for p in PROVIDERS})
        worker = rig.worker("process", PROVIDERS)
        worker.start()
        time.sleep(12)                                            # several disconnects and token expiries
        scraped = {name: http_get(child.ready["ops_port"], "/metrics")
                   for name, child in [*((c.name, c) for c in rig.producers.values()), ("process", worker)]}
        assert rig.crashed() == []
    finally:
        codes = rig.stop()
    assert set(codes.values()) == {0}, codes
    prefix = kafka_settings.topic_prefix
    raw = asyncio.run(read_topics(kafka_settings, [raw_topic(p, prefix) for p in PROVIDERS]))
    out = asyncio.run(read_topics(kafka_settings, [alerts_topic(prefix)] + [dlq_topic(p, prefix) for p in PROVIDERS]))
    decoded = decode_avro(out)
    dead = [r for t, r in decoded if t.startswith(prefix + "dlq.")]
    alerts = [r for t, r in decoded if t == alerts_topic(prefix)]
    markers = [v for _, _, v, h in raw if dict(h).get("tp-kind", KIND_FRAME.encode()) != KIND_FRAME.encode()]
    logs = rig.logs()

    # the run exercised what it looks at: data from every provider, DEBUG lines, dead letters, alerts
    assert {t.removeprefix(prefix + "raw.") for t, *_ in raw} == set(PROVIDERS)
    assert '"level": "debug"' in logs["process"]                    # DEBUG logging was on
    assert len(dead) >= 5 and len(alerts) >= 5 and len(markers) >= 2 * len(PROVIDERS)

    assert credentials.leaks(f"error: {credentials.SECRETS['alpaca']['secret_key']}!")   # the search finds a leak
    found = {f"log {name}": credentials.leaks(text) for name, text in logs.items()}
    found |= {f"metrics {name}": credentials.leaks(text) for name, text in scraped.items()}
    found |= {f"dead letter {i}": credentials.leaks(repr(r.as_json() if hasattr(r, "as_json") else r))
              for i, r in enumerate(dead)}
    found |= {f"alert {i}": credentials.leaks(repr(a)) for i, a in enumerate(alerts)}
    found |= {f"session marker {i}": credentials.leaks(m) for i, m in enumerate(markers)}
    found = {where: names for where, names in found.items() if names}
    assert found == {}
    figures["secrets leaked"] += sum(len(v) for v in found.values())
    figures["secret values checked (x logs, metrics, DLQ, alerts, markers)"] = len(credentials.secret_forms())
    figures["log lines checked for secrets"] += sum(t.count("\n") for t in logs.values())
