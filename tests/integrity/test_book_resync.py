"""A level-2 book gap heals end to end: the processor's integrity stage asks the producer through
control.<provider> to resubscribe, and a fresh snapshot reaches the clean book topic, marked."""

from __future__ import annotations

import asyncio
import os
import subprocess

from tests.processors.test_process_e2e import consume
from tickpipe.children import Child, tickpipe_command
from tickpipe.topics import alerts_topic, control_topic, tick_topic


def test_book_gap_triggers_resync_and_a_fresh_snapshot(kafka_settings, tmp_path):
    prefix = kafka_settings.topic_prefix
    env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers, "TICKPIPE_KAFKA_TOPIC_PREFIX": prefix,
           "TICKPIPE_TOPICS_RAW_PARTITIONS": "2", "TICKPIPE_TOPICS_TICK_PARTITIONS": "2"}
    created = subprocess.run(tickpipe_command("topics", "create"), capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=60)
    assert created.returncode == 0, created.stderr
    emulator = Child(tickpipe_command("emulate", "coinbase", "--rate", "40", "--seed", "3", "--faults", "drop=0.03",
                                      "--journal", str(tmp_path / "journal.jsonl"), "--ops-port", "-1"),
                     "emulator", log_file=tmp_path / "emulator.log")
    with emulator:
        producer_env = {**env, "TICKPIPE_COINBASE_URL": f"ws://127.0.0.1:{emulator.ready['port']}",
                        "TICKPIPE_COINBASE_CHANNELS": "level2", "TICKPIPE_COINBASE_PRODUCT_IDS": "BTC-USD"}
        processor_env = {**env, "TICKPIPE_PROCESSOR_APP_ID": f"resync-{prefix}", "TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "6",
                         "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "1", "TICKPIPE_INTEGRITY_REORDER_WINDOW_MS": "100"}
        with Child(tickpipe_command("produce", "coinbase", "--ops-port", "-1"), "producer",
                   log_file=tmp_path / "producer.log", env=producer_env), \
                Child(tickpipe_command("process", "--providers", "coinbase", "--ops-port", "-1"), "processor",
                      log_file=tmp_path / "processor.log", env=processor_env, ready_timeout=60):
            controls = asyncio.run(consume(kafka_settings, [control_topic("coinbase", prefix)], want=1, raw=True,
                                           timeout=60))
            assert controls, "no resync request within 60 s"
            books = asyncio.run(consume(kafka_settings, [tick_topic("book", prefix)], want=10**9, timeout=8))
            alerts = asyncio.run(consume(kafka_settings, [alerts_topic(prefix)], want=1))
    import json
    request = json.loads(controls[0][2])
    assert (request["action"], request["instrument"], request["channel"]) == ("resync", "BTC-USD", "l2_data")
    assert any(a["kind"] == "GAP" and a["scope"] == "connection" for _, _, a, _ in alerts)
    snapshots = [r for _, _, r, _ in books if r["snapshot"]]
    assert len(snapshots) >= 2, "the resubscription should bring a second, fresh snapshot"
    first_request_ns = request["requested_ns"]
    assert any(r["recv_time"] > first_request_ns for r in snapshots[1:])
