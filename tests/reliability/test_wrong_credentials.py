"""Wrong credentials, every provider at once: each emulator enforces the right ones, each producer
holds a wrong one. Every producer says so once, clearly, and keeps retrying at the slow,
capped auth pace (here 1-2 s, so a bounded run can count it): never a tight loop, never an exit,
never the secret in its log."""

from __future__ import annotations

import re
import time

import pytest

from tests.reliability import credentials
from tests.reliability.support import Rig, http_get, journal_events
from tickpipe.providers import PROVIDERS

RETRY_MIN_S, RETRY_MAX_S, WATCH_S = 1.0, 2.0, 10.0
REFUSED = "authentication refused: check the credentials; retrying slowly"


def metric(text: str, name: str, provider: str) -> float:
    match = re.search(rf'^{name}{{provider="{re.escape(provider)}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.mark.timeout(120)
def test_wrong_credentials_get_a_clear_error_and_slow_capped_retries_for_every_provider(kafka_settings, tmp_path, figures):
    rig = Rig(kafka_settings, tmp_path, env={"TICKPIPE_PRODUCER_AUTH_RETRY_MIN_S": f"{RETRY_MIN_S}",
                                             "TICKPIPE_PRODUCER_AUTH_RETRY_MAX_S": f"{RETRY_MAX_S}"})
    rig.declare_topics()
    try:
        rig.start_feeds(PROVIDERS, emulator_env={p: credentials.emulator_env(p) for p in PROVIDERS},
                        producer_env={p: credentials.producer_env(p, wrong=True) for p in PROVIDERS})
        started = time.monotonic()
        time.sleep(WATCH_S)
        scraped = {p: http_get(c.ready["ops_port"], "/metrics") for p, c in rig.producers.items()}
        watched = time.monotonic() - started + 3.0           # + the time from the ready line to the first attempt
        assert rig.crashed() == []                           # refused credentials are no reason to exit
    finally:
        codes = rig.stop()
    assert set(codes.values()) == {0}, codes
    logs = rig.logs()
    most = int(watched / RETRY_MIN_S) + 1
    for provider in PROVIDERS:
        failures = metric(scraped[provider], "tickpipe_producer_auth_failures_total", provider)
        assert 3 <= failures <= most, f"{provider}: {failures} refused logins in {watched:.0f}s"
        assert metric(scraped[provider], "tickpipe_producer_auth_failing", provider) == 1
        log = logs[f"produce-{provider}"]
        assert log.count(REFUSED) == 1, provider                # one clear error line, not one per attempt
        connects = [e["ts_ns"] for e in journal_events(rig.journal(provider)) if e.get("event") == "connect"]
        gaps = [(b - a) / 1e9 for a, b in zip(connects, connects[1:])]
        assert all(gap >= RETRY_MIN_S * 0.95 for gap in gaps), f"{provider}: reconnected after {min(gaps):.2f}s"
        figures["wrong-credential logins refused (all retried at the slow pace)"] += int(failures)
    found = {name: credentials.leaks(text) for name, text in logs.items()}
    assert {name: names for name, names in found.items() if names} == {}
