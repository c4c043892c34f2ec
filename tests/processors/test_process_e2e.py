"""``tickpipe process`` as a real process on the real broker: raw topic -> Faust -> clean topics.

Raw records are produced exactly as ``tickpipe/envelope.py`` says; the clean topics are
decoded with the shipped schemas. The normalizer is the worked example of
``processors/normalizers/base.py`` (plugged in with TICKPIPE_PROCESSOR_NORMALIZERS).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import urllib.request
from pathlib import Path

from tests.processors.support import produce
from tickpipe.avro import AvroReader
from tickpipe.children import Child, tickpipe_command
from tickpipe.envelope import KIND_SESSION_START, RawRecord
from tickpipe.kafka import client_kwargs
from tickpipe.topics import dlq_topic, raw_topic, tick_topic

REPO = Path(__file__).resolve().parents[2]
PRICE = '{"type":"price","data":{"date":"2021-09-29T09:35:5%d","price":%s,"volume":%s,"symbol":"%s"}}'


def process_child(kafka_settings, tmp_path, name: str, providers=("financefeast",),
                  normalizers: str = "financefeast=tests.processors.example_normalizer:normalize",
                  **settings: str) -> Child:
    env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
           "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix,
           "TICKPIPE_PROCESSOR_APP_ID": f"proc-{kafka_settings.topic_prefix}",
           "TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "6", "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "1",
           "TICKPIPE_PROCESSOR_NORMALIZERS": normalizers,
           "TICKPIPE_TOPICS_RAW_PARTITIONS": "2", "TICKPIPE_TOPICS_TICK_PARTITIONS": "2",
           "TICKPIPE_OPS_PORT": "0", "PYTHONPATH": str(REPO), **settings}
    return Child(tickpipe_command("process", "--providers", *providers), name,
                 log_file=tmp_path / f"{name}.log", env=env, ready_timeout=40)


async def consume(kafka_settings, topics: list[str], want: int, settle_s: float = 0.0, timeout: float = 40.0,
                  raw: bool = False) -> list:
    """(topic, key, record, headers) of ``topics`` once ``want`` arrived (then ``settle_s`` more for
    stragglers); records decoded with the shipped schemas, or the value bytes with ``raw``."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(*topics, **client_kwargs(kafka_settings), group_id=None,
                                auto_offset_reset="earliest")
    await consumer.start()
    reader, got = AvroReader(), []

    async def fetch() -> None:
        for batch in (await consumer.getmany(timeout_ms=300)).values():
            got.extend((m.topic, m.key, m.value if raw else reader.decode(m.value), m.headers) for m in batch)

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(got) < want:
            await fetch()
        settle_until = time.monotonic() + settle_s
        while time.monotonic() < settle_until:
            await fetch()
    finally:
        await consumer.stop()
    return got


def frame(seq: int, payload: str, kind: str = "frame", session: str = "s1") -> tuple[bytes, bytes, list]:
    raw = RawRecord("financefeast", "ff-0", session, seq, 1_700_000_000_000_000_000 + seq, payload.encode(), kind=kind)
    return raw.key, raw.payload, raw.headers()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_raw_frames_become_clean_ticks_and_dead_letters_and_survive_a_restart(kafka_settings, tmp_path):
    prefix = kafka_settings.topic_prefix
    trades, dlq = tick_topic("trade", prefix), dlq_topic("financefeast", prefix)
    bad_headers = [("tp-provider", b"financefeast"), ("tp-conn", b"ff-0")]
    with process_child(kafka_settings, tmp_path, "process-1") as child:
        ops_port = child.ready["ops_port"]
        asyncio.run(produce(kafka_settings, raw_topic("financefeast", prefix), [
            frame(1, '{"event":"session_start"}', KIND_SESSION_START),
            frame(2, '{"type":"authenticated","data":{"message":"ok"}}'),
            frame(3, PRICE % (1, "3.0400", "181123", "NZB.NZ")),
            frame(4, '{"type":"price","data":'),
            frame(5, PRICE % (2, "0.00000001", "2.50", "AIR.NZ")),
            (b"ff-0", b"no envelope", bad_headers),
            frame(6, PRICE % (3, "3.05", "7", "NZB.NZ")),
        ]))
        got = asyncio.run(consume(kafka_settings, [trades, dlq], want=5))
        assert http_get(ops_port, "/readyz")[0] == 200
        _, metrics = http_get(ops_port, "/metrics")
        child.signal(signal.SIGTERM)
        assert child.process.wait(20) == 0
    ticks = sorted((r for t, _, r, _ in got if t == trades), key=lambda r: r["frame_seq"])
    assert [(r.name, r["symbol"], r["price"], r["size"], r["frame_seq"], r["session"]) for r in ticks] == [
        ("Trade", "NZB.NZ", "3.0400", "181123", 3, "s1"), ("Trade", "AIR.NZ", "0.00000001", "2.50", 5, "s1"),
        ("Trade", "NZB.NZ", "3.05", "7", 6, "s1")]
    assert ticks[0]["recv_time"] == 1_700_000_000_000_000_003 and ticks[0]["event_time"] == 1632908151000000000
    assert {(k, r["symbol"]) for t, k, r, _ in got if t == trades} == {(b"NZB.NZ", "NZB.NZ"), (b"AIR.NZ", "AIR.NZ")}
    dead = sorted((r for t, _, r, _ in got if t == dlq), key=lambda r: r["error_kind"])
    assert [(d["error_kind"], d["payload"]) for d in dead] == [
        ("envelope", b"no envelope"), ("parse", b'{"type":"price","data":')]
    assert dead[1]["frame_seq"] == 4 and dead[1]["conn"] == "ff-0"
    assert [(h["key"], h["value"]) for h in dead[0]["headers"]] == bad_headers
    assert 'tickpipe_processor_dead_letters_total{error_kind="parse",provider="financefeast"} 1.0' in metrics
    assert 'tickpipe_processor_records_total{kind="trade",provider="financefeast"} 3.0' in metrics
    assert 'tickpipe_processor_end_to_end_latency_seconds_count{provider="financefeast"} 3.0' in metrics
    assert 'tickpipe_consumer_fetch_wait_ms{consumer="processor"} 10.0' in metrics  # the default, governed

    # Offsets were committed: a new process of the same group continues after them.
    with process_child(kafka_settings, tmp_path, "process-2"):
        asyncio.run(produce(kafka_settings, raw_topic("financefeast", prefix), [frame(7, PRICE % (4, "9.99", "1", "FBU.NZ"))]))
        got = asyncio.run(consume(kafka_settings, [trades], want=4, settle_s=2.0))
    assert sorted(r["frame_seq"] for _, _, r, _ in got) == [3, 5, 6, 7]
    assert os.path.exists(tmp_path / "process-2.log")


def test_a_partition_the_broker_is_slow_to_read_does_not_stall_the_processor(kafka_broker, kafka_settings, tmp_path):
    """Embedded Tansu answers a fetch with no records when reading the partition outlasts the fetch
    wait (it lists every batch stored): with a 1 ms wait and 4,000 batches in one partition the
    processor would never get a frame. Its wait grows instead (``tickpipe/fetchwait.py``)."""
    prefix = kafka_settings.topic_prefix
    frames = [frame(1, '{"event":"session_start"}', KIND_SESSION_START)]
    frames += [frame(seq, PRICE % (seq % 10, f"{seq}.01", "1", "NZB.NZ")) for seq in range(2, 4001)]  # all distinct
    asyncio.run(produce(kafka_settings, raw_topic("financefeast", prefix), frames))  # one batch each, one partition
    with process_child(kafka_settings, tmp_path, "process-slow", TICKPIPE_PROCESSOR_FETCH_MAX_WAIT_MS="1") as child:
        got = asyncio.run(consume(kafka_settings, [tick_topic("trade", prefix)], want=3999, timeout=60))
        _, metrics = http_get(child.ready["ops_port"], "/metrics")
    assert sorted(r["frame_seq"] for _, _, r, _ in got) == list(range(2, 4001))
    wait = float(metrics.split('tickpipe_consumer_fetch_wait_ms{consumer="processor"} ')[1].split()[0])
    assert wait > 1 if kafka_broker.kind == "embedded" else wait >= 1


def test_with_a_registry_schemas_are_registered_at_start_and_ticks_use_the_confluent_format(kafka_settings, tmp_path):
    from tests.processors.registry_server import RegistryServer
    from tickpipe.schema_registry import SchemaRegistry

    prefix = kafka_settings.topic_prefix
    with RegistryServer() as registry:
        child = process_child(kafka_settings, tmp_path, "process-registry")
        child.env["TICKPIPE_AVRO_REGISTRY_URL"] = registry.url
        with child:
            assert child.ready["wire_format"] == "confluent"
            assert f"{prefix}ticks.trade-value" in registry.subjects and f"{prefix}dlq.financefeast-value" in registry.subjects
            asyncio.run(produce(kafka_settings, raw_topic("financefeast", prefix), [frame(1, PRICE % (1, "2.50", "3", "A.NZ"))]))
            [(_, _, value, _)] = asyncio.run(consume(kafka_settings, [tick_topic("trade", prefix)], want=1, raw=True))

        async def decode(value):
            async with SchemaRegistry(registry.url) as client:
                return await AvroReader(registry=client).decode_async(value)

        assert value[0] == 0 and int.from_bytes(value[1:5], "big") == registry.subjects[f"{prefix}ticks.trade-value"][0]
        record = asyncio.run(decode(value))
    assert (record.name, record["price"], record["size"]) == ("Trade", "2.50", "3")


def test_normalizer_state_survives_a_restart(kafka_settings, tmp_path):
    """Sparse level-one deltas keep merging across processes: the state lives in a Faust table."""
    prefix = kafka_settings.topic_prefix
    merging = "schwab=tests.processors.example_normalizer:normalize_merging"

    def delta(seq: int, payload: str) -> tuple[bytes, bytes, list]:
        raw = RawRecord("schwab", "schwab-0", "s1", seq, 1_000 + seq, payload.encode())
        return raw.key, raw.payload, raw.headers()

    with process_child(kafka_settings, tmp_path, "state-1", providers=("schwab",), normalizers=merging):
        asyncio.run(produce(kafka_settings, raw_topic("schwab", prefix), [delta(1, '{"key":"MSFT","1":417.01,"2":417.08}')]))
        assert len(asyncio.run(consume(kafka_settings, [tick_topic("level1", prefix)], want=1))) == 1
    with process_child(kafka_settings, tmp_path, "state-2", providers=("schwab",), normalizers=merging):
        asyncio.run(produce(kafka_settings, raw_topic("schwab", prefix), [delta(2, '{"key":"MSFT","2":417.10}')]))
        got = asyncio.run(consume(kafka_settings, [tick_topic("level1", prefix)], want=2))
    images = sorted((r for _, _, r, _ in got), key=lambda r: r["frame_seq"])
    assert [(r["frame_seq"], r["bid_price"], r["ask_price"]) for r in images] == [(1, "417.01", "417.08"),
                                                                               (2, "417.01", "417.10")]


def test_an_unreachable_registry_is_a_clear_start_up_error(kafka_settings, tmp_path):
    import subprocess

    from tickpipe.broker import free_port

    child = process_child(kafka_settings, tmp_path, "process-no-registry")
    env = {**child.env, "TICKPIPE_AVRO_REGISTRY_URL": f"http://127.0.0.1:{free_port()}"}
    done = subprocess.run(child.cmd, env=env, capture_output=True, timeout=60)
    assert done.returncode == 1
    assert b"tickpipe process: schema registry:" in done.stderr and b"cannot reach the registry" in done.stderr
