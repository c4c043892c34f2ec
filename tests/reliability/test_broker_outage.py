"""The broker stopped for 10 s and started again under a real ``tickpipe produce alpaca`` process
reading its emulator at a high rate.

The embedded broker keeps nothing across a restart, so this checks the producer side
(``tests/producers/test_core_outage.py`` proves the same of the producer core with a toy feed):
reads pause first (back-pressure), the websocket lives through it, the buffer stays within its
bound by dropping the oldest frames, and every ``tp-seq`` the process ever assigned is either in
Kafka or in exactly one loss marker range, as many as the dropped-frames metric says. With an
external Kafka the lossless case needs the broker stopped by someone who can:
``TICKPIPE_TEST_BROKER_STOP`` / ``TICKPIPE_TEST_BROKER_START`` (shell commands) run it.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
import uuid

import pytest

from tests.producers.core_support import read_raw
from tests.reliability.support import Rig, http_get, journal_events, wait_until
from tickpipe.broker import EmbeddedBroker, free_port
from tickpipe.envelope import KIND_FRAME, KIND_LOSS, decode_marker
from tickpipe.kafka import KafkaSettings

OUTAGE_S = 10.0
BUFFER_FRAMES = 400
PRODUCER = {"TICKPIPE_PRODUCER_BUFFER_MAX_FRAMES": str(BUFFER_FRAMES), "TICKPIPE_PRODUCER_MAX_PAUSE_S": "1",
            "TICKPIPE_PRODUCER_REQUEST_TIMEOUT_MS": "1500", "TICKPIPE_PRODUCER_PING_TIMEOUT_S": "10"}


def metric(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf'^{name}{{[^}}]*}} (\S+)$', text, re.M))


@pytest.mark.timeout(150)
def test_ten_second_broker_stop_back_pressure_bounded_buffer_and_exact_loss_accounting(tmp_path, figures):
    broker = EmbeddedBroker(port=free_port(), log_file=tmp_path / "tansu.log")
    broker.start()
    kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=f"b{uuid.uuid4().hex[:6]}.")
    rig = Rig(kafka, tmp_path)
    try:
        rig.declare_topics()
        rig.start_feeds(["alpaca"], rate=150, producer_env={"alpaca": PRODUCER})
        producer = rig.producers["alpaca"]
        port = producer.ready["ops_port"]
        wait_until(lambda: metric(http_get(port, "/metrics"), "tickpipe_producer_frames_produced_total") > 300, 30,
                   "frames in Kafka")
        rig.emulators["alpaca"].signal(19)                       # SIGSTOP: a quiet moment to read what Kafka holds
        wait_until(lambda: metric(http_get(port, "/metrics"), "tickpipe_producer_buffered_frames") == 0, 15, "buffer empty")
        delivered = metric(http_get(port, "/metrics"), "tickpipe_producer_frames_produced_total")
        before = asyncio.run(read_raw(kafka, "alpaca", lambda rs: len(rs) >= delivered))
        broker.stop(0.5)
        stopped = time.monotonic()
        rig.emulators["alpaca"].signal(18)
        peak, paused = 0.0, 0.0
        while time.monotonic() - stopped < OUTAGE_S:
            text = http_get(port, "/metrics")
            peak = max(peak, metric(text, "tickpipe_producer_buffered_frames"))
            paused = max(paused, metric(text, "tickpipe_producer_reading_paused"))
            time.sleep(0.2)
        broker.start()                                           # same port, empty memory
        rig.declare_topics()
        wait_until(lambda: metric(http_get(port, "/metrics"), "tickpipe_producer_loss_markers_total") >= 1
                   and metric(http_get(port, "/metrics"), "tickpipe_producer_buffered_frames") < BUFFER_FRAMES / 4,
                   30, "a loss marker written after the broker came back")
        assert rig.crashed() == []
        text = http_get(port, "/metrics")
        codes = rig.stop()
        assert codes["produce-alpaca"] == 0, codes
        after = asyncio.run(read_raw(kafka, "alpaca", lambda rs: False, timeout=8))
    finally:
        rig.stop()
        broker.stop(0.5)
    dropped_metric = metric(text, "tickpipe_producer_frames_dropped_total")
    losses = [decode_marker(r.payload) for r in after if r.kind == KIND_LOSS]
    dropped = [s for doc in losses for a, b in doc["ranges"] for s in range(a, b + 1)]
    seen = {r.seq for r in before} | {r.seq for r in after}
    last = max(seen)
    assert paused == 1, "reads never paused: no back-pressure"
    assert peak <= BUFFER_FRAMES + 1, f"{peak} records buffered, bound {BUFFER_FRAMES} (+ the open loss marker)"
    assert dropped and len(dropped) == len(set(dropped)) == sum(d["dropped_frames"] for d in losses)
    assert not set(dropped) & seen                               # dropped means never delivered
    assert seen | set(dropped) == set(range(1, last + 1))        # every tp-seq accounted for, exactly once
    assert dropped_metric >= len(dropped)                        # (the metric also counts drops after the last marker)
    connects = [e for e in journal_events(rig.journal("alpaca")) if e.get("event") == "connect"]
    assert len(connects) == 1, "the feed connection should live through the outage"
    assert any(r.kind == KIND_FRAME for r in after)
    figures["broker outages survived (10 s)"] += 1
    figures["frames dropped during the broker outage, each in a loss marker"] += len(dropped)


@pytest.mark.skipif(not (os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("TICKPIPE_TEST_BROKER_STOP")
                         and os.environ.get("TICKPIPE_TEST_BROKER_START")),
                    reason="needs an external Kafka and the commands that stop and start it")
@pytest.mark.timeout(150)
def test_with_an_external_kafka_a_ten_second_stop_loses_nothing(kafka_settings, tmp_path):
    rig = Rig(kafka_settings, tmp_path)
    rig.declare_topics()
    try:
        rig.start_feeds(["alpaca"], rate=50)
        time.sleep(3)
        subprocess.run(os.environ["TICKPIPE_TEST_BROKER_STOP"], shell=True, check=True, timeout=60)
        time.sleep(OUTAGE_S)
        subprocess.run(os.environ["TICKPIPE_TEST_BROKER_START"], shell=True, check=True, timeout=120)
        time.sleep(10)
        codes = rig.stop()
        assert codes["produce-alpaca"] == 0
        records = asyncio.run(read_raw(kafka_settings, "alpaca", lambda rs: False, timeout=10))
    finally:
        rig.stop()
    seqs = sorted(r.seq for r in records)
    assert seqs == list(range(1, len(seqs) + 1)) and not [r for r in records if r.kind == KIND_LOSS]
