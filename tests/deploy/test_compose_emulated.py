"""The compose profile `emulated`, run without Docker: every emulator with its compose command and
every emulated producer with its compose environment (only the emulator's host and port changed
to loopback), against a real broker. Each producer must get ready and write frames to Kafka."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid

import pytest
import yaml

from tests.deploy.chart import ROOT
from tests.deploy.test_compose import container_env, interpolate
from tickpipe.children import Child, tickpipe_command
from tickpipe.providers import PROVIDERS

pytestmark = pytest.mark.kafka
DEADLINE_S = 45


def emulator_command(service: dict, provider: str) -> list[str]:
    args = [str(interpolate(a, {})) for a in service["command"]]
    assert args[args.index("--host") + 1] == f"emulator-{provider}" and args[args.index("--port") + 1] == "8080"
    args[args.index("--host") + 1], args[args.index("--port") + 1] = "127.0.0.1", "0"
    return args


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0), ""


def frames_produced(ops_port: int, provider: str) -> float:
    _, body = get(f"http://127.0.0.1:{ops_port}/metrics")
    match = re.search(r'^tickpipe_producer_frames_produced_total\{provider="%s"\} (\S+)$' % re.escape(provider), body, re.M)
    return float(match.group(1)) if match else 0.0


def start_all(children: list[Child]) -> None:
    # One after the other, from this thread: a child dies with the thread that started it.
    for child in children:
        child.start()


def test_every_emulated_producer_streams_from_its_emulator_into_kafka(kafka_broker, tmp_path):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    kafka = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_broker.bootstrap_servers,
             "TICKPIPE_KAFKA_TOPIC_PREFIX": f"t{uuid.uuid4().hex[:8]}."}
    topics = compose["services"]["topics"]  # what compose runs before any producer
    created = subprocess.run(tickpipe_command(*topics["command"]), env={**os.environ, **container_env(topics, {}), **kafka},
                             capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr

    emulators = {p: Child(tickpipe_command(*emulator_command(compose["services"][f"emulator-{p}"], p)), f"emulator-{p}",
                          log_file=tmp_path / f"emulator-{p}.log", env={"TICKPIPE_OPS_PORT": "0"}) for p in PROVIDERS}
    with contextlib.ExitStack() as stack:
        for child in emulators.values():
            stack.callback(child.stop)
        start_all(list(emulators.values()))
        producers = {}
        for p in PROVIDERS:
            service = compose["services"][f"producer-{p}-emulated"]
            env = {k: v.replace(f"emulator-{p}:8080", f"127.0.0.1:{emulators[p].ready['port']}")
                   for k, v in container_env(service, {}).items()}
            producers[p] = Child(tickpipe_command(*service["command"]), f"producer-{p}",
                                 log_file=tmp_path / f"producer-{p}.log", env={**env, **kafka, "TICKPIPE_OPS_PORT": "0"})
            stack.callback(producers[p].stop)
        start_all(list(producers.values()))

        deadline = time.monotonic() + DEADLINE_S
        streaming: set[str] = set()
        while time.monotonic() < deadline and streaming != set(PROVIDERS):
            for p, child in producers.items():
                port = child.ready["ops_port"]
                if get(f"http://127.0.0.1:{port}/readyz")[0] == 200 and frames_produced(port, p) > 0:
                    streaming.add(p)
            time.sleep(0.5)
        assert streaming == set(PROVIDERS), f"not streaming: {sorted(set(PROVIDERS) - streaming)} (logs in {tmp_path})"

        for child in producers.values():
            child.signal(signal.SIGTERM)  # once: a second signal would force the exit
        assert {p: child.process.wait(30) for p, child in producers.items()} == {p: 0 for p in PROVIDERS}
