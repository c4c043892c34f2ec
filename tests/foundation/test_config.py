"""Settings: precedence, validation errors that name the setting, secrets that never show."""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

import pytest

from tickpipe.config import ConfigError, Secret, load_section, read_config_file, setting
from tickpipe.kafka import KafkaSettings
from tickpipe.logs import get_logger, setup_logging


@dataclass(frozen=True)
class Sample:
    port: int = setting(9000, minimum=1, maximum=65535)
    ratio: float = 0.5
    enabled: bool = True
    symbols: tuple[str, ...] = setting(("AAPL",))
    mode: str = setting("fast", choices=("fast", "safe"))
    token: Secret | None = None


def test_defaults_file_env_and_overrides_in_that_order(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sample:\n  port: 9100\n  ratio: 0.25\n  symbols: [MSFT, GOOG]\n")
    data = read_config_file(cfg)
    s = load_section(Sample, "sample", file_data=data, env={"TICKPIPE_SAMPLE_PORT": "9200"})
    assert (s.port, s.ratio, s.symbols) == (9200, 0.25, ("MSFT", "GOOG"))
    s = load_section(Sample, "sample", file_data=data, env={"TICKPIPE_SAMPLE_PORT": "9200"}, overrides={"port": 9300})
    assert s.port == 9300
    assert load_section(Sample, "sample", env={}).port == 9000


def test_toml_file_and_list_from_env(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[sample]\nmode = "safe"\nenabled = false\n')
    s = load_section(Sample, "sample", file_data=read_config_file(cfg), env={"TICKPIPE_SAMPLE_SYMBOLS": "A, B,C"})
    assert (s.mode, s.enabled, s.symbols) == ("safe", False, ("A", "B", "C"))


@pytest.mark.parametrize("env, message", [
    ({"TICKPIPE_SAMPLE_PORT": "abc"}, "TICKPIPE_SAMPLE_PORT: expected an integer, got 'abc'"),
    ({"TICKPIPE_SAMPLE_PORT": "0"}, "TICKPIPE_SAMPLE_PORT: must be at least 1, got '0'"),
    ({"TICKPIPE_SAMPLE_PORT": "70000"}, "TICKPIPE_SAMPLE_PORT: must be at most 65535"),
    ({"TICKPIPE_SAMPLE_ENABLED": "maybe"}, "TICKPIPE_SAMPLE_ENABLED: expected a boolean"),
    ({"TICKPIPE_SAMPLE_MODE": "turbo"}, "TICKPIPE_SAMPLE_MODE: must be one of fast, safe, got 'turbo'"),
    ({"TICKPIPE_SAMPLE_RATIO": "nan"}, "TICKPIPE_SAMPLE_RATIO: expected a number"),
])
def test_errors_name_the_setting_and_the_bad_value(env, message):
    with pytest.raises(ConfigError) as err:
        load_section(Sample, "sample", env=env)
    assert message in str(err.value)


def test_unknown_key_in_file_is_refused(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("sample:\n  prot: 1\n")
    with pytest.raises(ConfigError, match="unknown setting.*prot"):
        load_section(Sample, "sample", file_data=read_config_file(cfg), env={})


def test_broken_config_file_is_named(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("sample: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid"):
        read_config_file(cfg)
    with pytest.raises(ConfigError, match="cannot read"):
        read_config_file(tmp_path / "missing.yaml")


def test_secret_from_env_or_file_is_masked_everywhere(tmp_path):
    value = "s3cr3t-Value-0123456789"
    s = load_section(Sample, "sample", env={"TICKPIPE_SAMPLE_TOKEN": value})
    assert s.token.reveal() == value
    for text in (repr(s), str(s), f"{s.token}", repr(s.token), str(s.token)):
        assert value not in text
    secret_file = tmp_path / "token"
    secret_file.write_text(value + "\n")
    s2 = load_section(Sample, "sample", env={"TICKPIPE_SAMPLE_TOKEN_FILE": str(secret_file)})
    assert s2.token.reveal() == value
    with pytest.raises(ConfigError, match="TICKPIPE_SAMPLE_TOKEN_FILE: cannot read secret file"):
        load_section(Sample, "sample", env={"TICKPIPE_SAMPLE_TOKEN_FILE": str(tmp_path / "nope")})


def test_bad_secret_value_error_does_not_echo_it():
    @dataclass(frozen=True)
    class Strict:
        token: Secret = setting(help="a token")

    with pytest.raises(ConfigError) as err:
        load_section(Strict, "strict", file_data={"strict": {"token": 12345678}}, env={})
    assert "12345678" not in str(err.value) and "TICKPIPE_STRICT_TOKEN" in str(err.value)
    with pytest.raises(ConfigError, match="TICKPIPE_STRICT_TOKEN: required setting is not set"):
        load_section(Strict, "strict", env={})


def test_secrets_are_masked_in_log_lines_and_exceptions():
    value = "AKIA-very-secret-key-42"
    Secret(value)  # registers the value
    out = io.StringIO()
    setup_logging("INFO", json_format=True, stream=out)
    log = get_logger("tickpipe.test")
    log.info(f"connecting with {value}", credential=value)
    try:
        raise RuntimeError(f"auth failed for {value}")
    except RuntimeError:
        log.exception("boom")
    setup_logging("INFO", json_format=False, stream=out)
    log.warning("text mode", key=value)
    text = out.getvalue()
    assert value not in text
    assert text.count("***") >= 4
    logging.getLogger().handlers.clear()


def test_kafka_settings_refuse_inconsistent_security(tmp_path):
    with pytest.raises(ConfigError, match="TICKPIPE_KAFKA_SSL_CAFILE: file not found"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="TICKPIPE_KAFKA_SASL_MECHANISM: required"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT")
    with pytest.raises(ConfigError, match="TICKPIPE_KAFKA_SASL_USERNAME"):
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="PLAIN")
    with pytest.raises(ConfigError, match="TICKPIPE_KAFKA_SECURITY_PROTOCOL: must be one of"):
        load_section(KafkaSettings, "kafka", env={"TICKPIPE_KAFKA_SECURITY_PROTOCOL": "TLS"})
    ok = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                       sasl_username="u", sasl_password=Secret("pw-123456"))
    assert "pw-123456" not in repr(ok)


def test_short_lived_tokens_are_masked_but_only_the_recent_ones_kept():
    from tickpipe.config import SHORT_LIVED_KEPT, redact, register_secret

    tokens = [f"jwt-token-{i:04d}-abcdef" for i in range(SHORT_LIVED_KEPT + 10)]
    for token in tokens:
        register_secret(token, short_lived=True)
    assert redact(f"url?token={tokens[-1]}") == "url?token=***"
    assert redact(tokens[0]) == tokens[0]          # long expired: no longer scanned for
