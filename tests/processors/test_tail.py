"""``tickpipe tail`` on real topics: both Avro wire formats, a bad record, and raw topics -> replay."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

from tests.processors.registry_server import RegistryServer
from tests.processors.support import produce
from tickpipe.avro import AvroEncoder, shipped_schemas
from tickpipe.children import tickpipe_command
from tickpipe.envelope import RawRecord
from tickpipe.processors.records import ALL_KINDS
from tickpipe.topics import raw_topic, tick_topic

REPO = Path(__file__).resolve().parents[2]


def run(kafka_settings, *args: str, stdin: bytes | None = None, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
                "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "PYTHONPATH": str(REPO), **env}
    return subprocess.run(tickpipe_command(*args), input=stdin, capture_output=True, env=full_env, timeout=60)


def trade(i: int) -> dict:
    return {"provider": "coinbase", "symbol": "BTC-USD", "provider_symbol": "BTC-USD", "recv_time": 10 + i,
            "conn": "c", "session": "s", "frame_seq": i, "frame_index": 0, "price": f"8{i}000.10", "size": "0.00012"}


def test_tail_decodes_single_object_and_confluent_records(kafka_settings):
    topic = tick_topic("trade", kafka_settings.topic_prefix)
    with RegistryServer() as registry:
        schema_id = registry.ids.setdefault(shipped_schemas()["trade"].text, 7)
        confluent = AvroEncoder(registry_ids={kind: schema_id for kind in ALL_KINDS})
        asyncio.run(produce(kafka_settings, topic, [
            (b"BTC-USD", AvroEncoder().encode("trade", trade(1)), None),
            (b"BTC-USD", confluent.encode("trade", trade(2)), None),
            (b"BTC-USD", b"not avro", None)]))
        done = run(kafka_settings, "tail", "ticks.trade", "--from-beginning", "--limit", "3",
                   TICKPIPE_AVRO_REGISTRY_URL=registry.url)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(d["type"], d["price"], d["frame_seq"]) for d in lines[:2]] == [("Trade", "81000.10", 1), ("Trade", "82000.10", 2)]
    assert lines[0]["size"] == "0.00012" and lines[0]["conditions"] == [] and lines[0]["event_time"] is None
    assert lines[2]["type"] is None and "neither" in lines[2]["error"]
    assert b"undecodable" in done.stderr
    assert ("GET", "/schemas/ids/7") in registry.requests


def test_tail_of_a_raw_topic_replays_to_the_same_ticks(kafka_settings, tmp_path):
    topic = raw_topic("financefeast", kafka_settings.topic_prefix)
    frames = []
    for seq, session in ((1, "s1"), (2, "s1"), (3, "s2")):
        payload = ('{"type":"price","data":{"date":"2021-09-29T09:35:53","price":1.%d0,"volume":%d,"symbol":"A.NZ"}}'
                   % (seq, seq)).encode()
        raw = RawRecord("financefeast", "ff-0", session, seq, 5_000 + seq, payload)
        frames.append((raw.key, raw.payload, raw.headers()))
    asyncio.run(produce(kafka_settings, topic, frames))
    tailed = run(kafka_settings, "tail", "raw.financefeast", "--from-beginning", "--timeout", "2")
    assert tailed.returncode == 0, tailed.stderr.decode()
    export = tmp_path / "export.jsonl"
    export.write_bytes(tailed.stdout)
    assert [json.loads(line)["value"] for line in tailed.stdout.splitlines()] == [f[1].decode() for f in frames]
    replayed = run(kafka_settings, "replay", "--provider", "financefeast", str(export),
                   TICKPIPE_PROCESSOR_NORMALIZERS="financefeast=tests.processors.example_normalizer:normalize")
    assert replayed.returncode == 0, replayed.stderr.decode()
    ticks = [d for d in map(json.loads, replayed.stdout.splitlines()) if d["type"] == "Trade"]
    assert [(t["price"], t["size"], t["session"], t["frame_seq"], t["recv_time"]) for t in ticks] == [
        ("1.10", "1", "s1", 1, 5001), ("1.20", "2", "s1", 2, 5002), ("1.30", "3", "s2", 3, 5003)]


def test_tail_of_a_missing_topic_says_so(kafka_settings):
    done = run(kafka_settings, "tail", "ticks.nothing", "--limit", "1")
    assert done.returncode == 1 and b"does not exist" in done.stderr
