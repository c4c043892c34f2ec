"""The whole pipeline over TLS with verification on: producer, the Faust processor and `tail`
all reach the broker only through a TLS terminator, which the broker advertises."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tickpipe.children import Child, tickpipe_command

pytestmark = pytest.mark.kafka


def test_emulator_producer_processor_and_tail_over_tls(pki, tls_broker, tmp_path):
    tls = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": f"localhost:{tls_broker[0]}", "TICKPIPE_KAFKA_SECURITY_PROTOCOL": "SSL",
           "TICKPIPE_KAFKA_SSL_CAFILE": pki.ca_file, "TICKPIPE_KAFKA_TOPIC_PREFIX": "tlspipe.",
           "TICKPIPE_TOPICS_RAW_PARTITIONS": "2", "TICKPIPE_TOPICS_TICK_PARTITIONS": "2"}
    created = subprocess.run(tickpipe_command("topics", "create"), capture_output=True, text=True,
                             env={**os.environ, **tls}, timeout=60)
    assert created.returncode == 0, created.stderr
    with Child(tickpipe_command("emulate", "coinbase", "--rate", "20", "--ops-port", "-1"), "emulator",
               log_file=tmp_path / "emulator.log") as emulator:
        producer_env = {**tls, "TICKPIPE_COINBASE_URL": f"ws://127.0.0.1:{emulator.ready['port']}",
                        "TICKPIPE_COINBASE_CHANNELS": "market_trades,ticker"}
        processor_env = {**tls, "TICKPIPE_PROCESSOR_APP_ID": "tls-processor", "TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "6",
                         "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "1"}
        with Child(tickpipe_command("produce", "coinbase", "--ops-port", "0"), "producer",
                   log_file=tmp_path / "producer.log", env=producer_env), \
                Child(tickpipe_command("process", "--providers", "coinbase", "--ops-port", "0"), "processor",
                      log_file=tmp_path / "processor.log", env=processor_env, ready_timeout=60):
            tail = subprocess.run(tickpipe_command("tail", "ticks.level1", "--from-beginning", "--limit", "3",
                                                   "--timeout", "30"),
                                  capture_output=True, text=True, env={**os.environ, **tls}, timeout=60)
    assert tail.returncode == 0, tail.stderr
    records = [json.loads(line) for line in tail.stdout.splitlines()]
    assert len(records) == 3
    assert {r["type"] for r in records} == {"LevelOne"} and {r["provider"] for r in records} == {"coinbase"}
    assert all(r["conn"] and r["recv_time"] > 0 for r in records)
