"""The emulator settings table: every provider's producer accepts it, and it names the emulator."""

from __future__ import annotations

import pytest

from tickpipe import producers
from tickpipe.config import load_section
from tickpipe.demo.emulated import PLACEHOLDER, PRODUCER_ENV, emulator_env, producer_env
from tickpipe.providers import PROVIDERS, section_name


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_producer_of_every_provider_accepts_the_emulator_settings(provider):
    try:
        cls = producers.load(provider)
    except LookupError as exc:
        pytest.skip(str(exc))
    env = producer_env(provider, 41234, host="emulator-host")
    settings = load_section(cls.settings_class, section_name(provider), env=env)
    adapter = cls(settings)                      # validates subscriptions, credentials present
    assert "emulator-host:41234" in adapter.endpoint()
    assert PLACEHOLDER not in repr(settings)     # passed as secrets: masked


def test_every_provider_has_an_entry_and_emulator_settings_are_their_own_section():
    assert set(PRODUCER_ENV) == set(PROVIDERS)
    for provider in PROVIDERS:
        assert all(k.startswith(f"TICKPIPE_EMULATOR_{section_name(provider).upper()}_") for k in emulator_env(provider))


def test_children_get_the_embedded_broker_and_none_of_the_shells_kafka_security(tmp_path, monkeypatch):
    from tickpipe.demo.children import Cast

    monkeypatch.setenv("TICKPIPE_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("TICKPIPE_KAFKA_SASL_PASSWORD", "from-the-shell")
    monkeypatch.setenv("TICKPIPE_KAFKA_TOPIC_PREFIX", "demo.")
    child = Cast(tmp_path, "127.0.0.1:9999", rate=5, seed=1)._child("produce-alpaca", ["produce", "alpaca"],
                                                                   producer_env("alpaca", 1234))
    kafka = {k: v for k, v in child.env.items() if k.startswith("TICKPIPE_KAFKA_")}
    assert kafka["TICKPIPE_KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9999" and kafka["TICKPIPE_KAFKA_TOPIC_PREFIX"] == "demo."
    assert set(kafka) <= {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS", "TICKPIPE_KAFKA_TOPIC_PREFIX", "TICKPIPE_KAFKA_CLIENT_ID"}
    assert child.env["TICKPIPE_ALPACA_URL"] == "ws://127.0.0.1:1234" and child.own_process_group
