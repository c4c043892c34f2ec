"""docker-compose.yml: valid against the Compose Specification schema, and consistent with the
CLI, the settings the code reads, the Prometheus scrape list and .env.example."""

from __future__ import annotations

import copy
import json
import re
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from tests.deploy import settings_catalog
from tests.deploy.chart import ROOT
from tickpipe.cli import build_parser
from tickpipe.config import ConfigError, load_section
from tickpipe.providers import PROVIDERS, section_name

COMPOSE = ROOT / "docker-compose.yml"
SCHEMA = ROOT / "tests" / "deploy" / "compose-spec.schema.json"  # see compose-spec.schema.NOTICE
ENV_EXAMPLE = ROOT / ".env.example"
INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR-default}, as `docker compose` resolves them."""
    if not isinstance(value, str):
        return value

    def resolve(match: re.Match) -> str:
        name, op, default = match.groups()
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")
    return INTERPOLATION.sub(resolve, value)


def container_env(service: dict, dotenv: dict[str, str]) -> dict[str, str]:
    """A service's environment inside its container; a variable without a value comes from .env or stays unset."""
    env = {}
    for name, value in (service.get("environment") or {}).items():
        if value is None:
            if name in dotenv:
                env[name] = dotenv[name]
        else:
            env[name] = str(interpolate(value, dotenv))
    return env


def tickpipe_services(compose: dict) -> dict[str, dict]:
    return {name: s for name, s in compose["services"].items() if "tickpipe" in s.get("image", "")}


def test_compose_file_is_valid_against_the_compose_specification(compose, validator):
    assert [e.message for e in validator.iter_errors(compose)] == []


@pytest.mark.parametrize("breakage", [
    lambda c: c["services"]["processor"].update(commandd=["process"]),
    lambda c: c["services"]["kafka"].update(ports="29092"),
    lambda c: c["services"]["processor"]["depends_on"]["topics"].update(condition="service_done"),
    lambda c: c.update(servics={}),
])
def test_the_schema_rejects_a_broken_compose_file(compose, validator, breakage):
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert list(validator.iter_errors(broken))


def test_every_tickpipe_service_runs_a_real_command_locked_down(compose):
    parser = build_parser()
    services = tickpipe_services(compose)
    assert {"topics", "processor"} <= set(services)
    for name, service in services.items():
        args = parser.parse_args([str(interpolate(a, {})) for a in service["command"]])  # exits on a bad command
        assert args.command in ("topics", "process", "produce", "emulate"), name
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert "user" not in service, f"{name}: the image's non-root user is used"


def test_one_live_producer_one_emulator_and_one_emulated_producer_per_provider(compose):
    services = compose["services"]
    for provider in PROVIDERS:
        live, emulated = services[f"producer-{provider}"], services[f"producer-{provider}-emulated"]
        emulator = services[f"emulator-{provider}"]
        assert live["profiles"] == ["live"] and emulated["profiles"] == ["emulated"] == emulator["profiles"]
        assert live["command"][:2] == ["produce", provider] == emulated["command"][:2]
        assert emulator["command"][:4] == ["emulate", provider, "--host", f"emulator-{provider}"]
        assert emulated["depends_on"][f"emulator-{provider}"] == {"condition": "service_healthy"}
        assert emulated["networks"]["default"]["aliases"] == [f"producer-{provider}"]


def test_live_producers_take_credentials_from_dotenv_only(compose):
    for provider in PROVIDERS:
        service = compose["services"][f"producer-{provider}"]
        provider_vars = {k: v for k, v in service["environment"].items()
                         if k.startswith(f"TICKPIPE_{section_name(provider).upper()}_")}
        assert all(value is None for value in provider_vars.values()), provider  # passed through, never written here


def emulated_settings_errors(compose: dict, provider: str) -> list[str]:
    """Build the provider's adapter from the emulated producer's environment, as `tickpipe produce` does."""
    from tickpipe import producers

    cls = settings_catalog.provider_settings(provider)
    if cls is None:
        return []
    env = container_env(compose["services"][f"producer-{provider}-emulated"], {})
    try:
        adapter = producers.load(provider)(load_section(cls, section_name(provider), env=env))
    except ConfigError as exc:
        return [str(exc)]
    urls = [adapter.endpoint()] + [v for v in vars(adapter.settings).values() if isinstance(v, str) and "://" in v]
    return [f"{url} is not the emulator" for url in urls if urlsplit(url).hostname != f"emulator-{provider}"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_emulated_producers_load_their_settings_and_point_at_their_emulator(compose, provider):
    assert emulated_settings_errors(compose, provider) == []


def test_the_check_catches_an_emulated_producer_left_on_the_real_feed(compose):
    broken = copy.deepcopy(compose)
    del broken["services"]["producer-alpaca-emulated"]["environment"]["TICKPIPE_ALPACA_URL"]
    assert emulated_settings_errors(broken, "alpaca")


def test_every_variable_set_in_compose_is_a_tickpipe_setting(compose):
    known = settings_catalog.variables()
    for name, service in tickpipe_services(compose).items():
        unknown = sorted(v for v in service.get("environment", {}) if v not in known)
        assert unknown == [], name


def test_kafka_settings_load_from_the_compose_environment(compose):
    from tickpipe.kafka import KafkaSettings

    for name, service in tickpipe_services(compose).items():
        if service["command"][0] == "emulate":
            continue  # an emulator is the provider's side: no Kafka
        settings = load_section(KafkaSettings, "kafka", env=container_env(service, {}))
        assert settings.bootstrap_servers == "kafka:9092" and settings.security_protocol == "PLAINTEXT", name
    secured = container_env(compose["services"]["processor"], {
        "TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "TICKPIPE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "TICKPIPE_KAFKA_SASL_USERNAME": "tickpipe", "TICKPIPE_KAFKA_SASL_PASSWORD": "from-dotenv"})
    settings = load_section(KafkaSettings, "kafka", env=secured)
    assert settings.sasl_password.reveal() == "from-dotenv"


def test_processors_scale_with_compose_scale(compose):
    processor = compose["services"]["processor"]
    assert "container_name" not in processor and "ports" not in processor and "hostname" not in processor


def test_prometheus_scrapes_every_tickpipe_service(compose):
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    discovered = {name for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", [])
                  for name in sd["names"]}
    expected = set()
    for name, service in tickpipe_services(compose).items():
        if name == "topics":
            continue  # one-shot: serves no ops port
        aliases = (service.get("networks") or {}).get("default", {}).get("aliases")
        expected |= set(aliases or [name])
    assert expected == discovered
    assert {sd["port"] for job in prometheus["scrape_configs"] for sd in job.get("dns_sd_configs", [])} == {9400}


def test_mounted_files_exist_and_grafana_finds_the_dashboard(compose):
    for service in compose["services"].values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), source
    grafana = compose["services"]["grafana"]
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/tickpipe.yml").read_text())
    dashboards_dir = provider["providers"][0]["options"]["path"]
    assert f"./deploy/grafana/dashboards:{dashboards_dir}:ro" in grafana["volumes"]
    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def dotenv_example() -> dict[str, str]:
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            pairs[name.strip()] = value.strip()
    return pairs


def test_env_example_documents_exactly_what_compose_reads(compose):
    text = COMPOSE.read_text()
    interpolated = {m.group(1) for m in INTERPOLATION.finditer(text)}
    passed_through = {name for service in compose["services"].values()
                      for name, value in (service.get("environment") or {}).items() if value is None}
    assert set(dotenv_example()) == interpolated | passed_through


def test_env_example_holds_no_credential_values():
    known = settings_catalog.variables()
    for name, value in dotenv_example().items():
        if name in known and known[name].secret or "PASSWORD" in name:
            assert value == "", f"{name} has a value in .env.example"


def test_env_example_lists_every_provider_credential():
    documented = set(dotenv_example())
    for provider in PROVIDERS:
        cls = settings_catalog.provider_settings(provider)
        if cls is None:
            continue
        needed = {v.name for v in settings_catalog.variables({section_name(provider): cls}).values()
                  if (v.secret or v.required) and not v.name.endswith("_FILE")}
        assert needed <= documented, provider
