"""Shared by the reliability tests: real emulators and producers as child processes, captured
frames of every provider, and the checks every normalized or dead-lettered frame must pass.

The provider -> settings table that points a producer at its emulator is the demo's
(:mod:`tickpipe.demo.emulated`); child processes are :class:`tickpipe.children.Child`.
"""

from __future__ import annotations

import contextlib
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson

from tickpipe.avro import AvroReader
from tickpipe.children import Child, tickpipe_command
from tickpipe.demo.emulated import emulator_env, producer_env
from tickpipe.processors.normalizers.errors import ERROR_KINDS
from tickpipe.processors.pipeline import FrameResult
from tickpipe.processors.rawfile import read_raw_file
from tickpipe.processors.records import CONTROL_KIND, DEAD_LETTER_KIND
from tickpipe.providers import PROVIDERS

REPO = Path(__file__).resolve().parents[2]
FAST_PRODUCER = {"TICKPIPE_PRODUCER_UNSUBSCRIBE_TIMEOUT_S": "0.5", "TICKPIPE_PRODUCER_BACKOFF_INITIAL_S": "0.2",
                 "TICKPIPE_PRODUCER_LINGER_MS": "5"}
# Each child is started from one of these threads, which must outlive it (PR_SET_PDEATHSIG
# fires when the thread that forked a child ends).
STARTERS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="reliability-start")


def emulator(provider: str, run_dir: Path, *, faults: str = "", seed: int = 1, rate: float = 50.0,
             env: dict[str, str] | None = None, journal: bool = True) -> Child:
    """``tickpipe emulate <provider>`` on a free port (not started)."""
    args = ["emulate", provider, "--port", "0", "--ops-port", "-1", "--seed", str(seed), "--rate", f"{rate:g}"]
    if journal:
        args += ["--journal", str(run_dir / f"emulate-{provider}.journal")]
    if faults:
        args += ["--faults", faults]
    return Child(tickpipe_command(*args), f"emulate-{provider}", run_dir / f"emulate-{provider}.log",
                 env={**emulator_env(provider), **(env or {})}, ready_timeout=30)


def producer(provider: str, emulator_port: int, run_dir: Path, bootstrap: str, *, prefix: str = "",
             env: dict[str, str] | None = None, name: str | None = None, args=()) -> Child:
    """``tickpipe produce <provider> [args]`` pointed at an emulator on ``emulator_port`` (not started)."""
    name = name or f"produce-{provider}"
    base = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": bootstrap, "TICKPIPE_KAFKA_TOPIC_PREFIX": prefix,
            "TICKPIPE_OPS_HOST": "127.0.0.1", **FAST_PRODUCER, **producer_env(provider, emulator_port)}
    merged = {**base, **(env or {})}
    child = Child(tickpipe_command("produce", provider, "--ops-port", "0", *args), name, run_dir / f"{name}.log",
                  env={k: v for k, v in merged.items() if v is not None}, ready_timeout=30)
    for k in [k for k, v in merged.items() if v is None]:   # None: unset (also if set in this environment)
        child.env.pop(k, None)
    return child


def start_all(children) -> None:
    """Start children in parallel; each start waits for the child's ready line."""
    errors = [f.exception() for f in [STARTERS.submit(c.start) for c in children]]
    errors = [e for e in errors if e is not None]
    if errors:
        raise errors[0]


@contextlib.contextmanager
def stopping(*children: Child):
    """Stop ``children`` (SIGTERM, then SIGKILL) on every exit path, in reverse order."""
    try:
        yield children
    finally:
        for child in reversed(children):
            child.stop(10)


def http_get(port: int, path: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return resp.read().decode()


def capture_corpus(run_dir: Path, providers=PROVIDERS, seconds: float = 3.0) -> dict[str, list[tuple]]:
    """Real frames of every provider: each emulator captured with ``tickpipe capture --export``
    (session markers included); alpaca twice, in JSON and in msgpack. provider -> [(key, value, headers)]."""
    import subprocess

    def one(name: str, provider: str, extra: dict[str, str]) -> tuple[str, list]:
        out = run_dir / f"{name}.raw"
        with emulator(provider, run_dir, journal=False, seed=11) as emu:
            env = {**os.environ, **producer_env(provider, int(emu.ready["port"])), **extra}
            done = subprocess.run(tickpipe_command("capture", provider, "--out", str(out), "--export",
                                                   "--duration", f"{seconds:g}", "--limit", "400"),
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            assert done.returncode == 0, done.stderr[-2000:]
        with open(out, "rb") as fh:
            return name, list(read_raw_file(fh, provider))

    jobs = [(p, p, {}) for p in providers]
    if "alpaca" in providers:
        jobs.append(("alpaca-msgpack", "alpaca", {"TICKPIPE_ALPACA_ENCODING": "msgpack"}))
    with ThreadPoolExecutor(len(jobs)) as pool:
        return dict(pool.map(lambda job: one(*job), jobs))


class OutcomeChecker:
    """What must hold for every frame the pipeline is given, good or bad (counts them too)."""

    def __init__(self) -> None:
        self.reader = AvroReader()
        self.tried = 0
        self.dead_letters: dict[str, int] = {}
        self.last_dead_letter: dict | None = None

    def check(self, result: FrameResult, payload: bytes, must_dead_letter: bool = False) -> None:
        self.tried += 1
        # every output decodes: Avro records, and resync requests (JSON) for the producer
        decoded = [(out.kind, orjson.loads(out.value) if out.kind == CONTROL_KIND else self.reader.decode(out.value))
                   for out in result.outputs]
        dead = [rec for kind, rec in decoded if kind == DEAD_LETTER_KIND]
        if result.dead_letter is not None:
            assert result.records == [], "a dead-lettered frame must yield no records"
            assert len(dead) == 1, "a dead-lettered frame yields exactly one DLQ output"
            [letter] = dead
            self.last_dead_letter = letter
            assert letter["payload"] == payload, "the DLQ record must hold the original bytes"
            assert letter["reason"].strip(), "the DLQ record must say why"
            assert letter["error_kind"] in ERROR_KINDS
            self.dead_letters[letter["error_kind"]] = self.dead_letters.get(letter["error_kind"], 0) + 1
        else:
            assert not must_dead_letter, f"an undecodable frame was not dead-lettered: {payload[:120]!r}"
            assert dead == []


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ----- the real pipeline: emulators, producers, processors as processes, on the test's broker -----
SMALL_TOPICS_ENV = {"TICKPIPE_TOPICS_RAW_PARTITIONS": "2", "TICKPIPE_TOPICS_TICK_PARTITIONS": "2"}
# the embedded broker waits about half the session timeout per join: keep it short
PROCESSOR_ENV = {"TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "6", "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "1",
                 "TICKPIPE_PROCESSOR_COMMIT_INTERVAL_S": "0.5", "TICKPIPE_INTEGRITY_REORDER_WINDOW_MS": "1000"}


class Rig:
    """Emulators, producers and processor workers of one test, sharing its topic prefix."""

    def __init__(self, kafka_settings, run_dir: Path, env: dict[str, str] | None = None) -> None:
        self.kafka, self.run_dir = kafka_settings, run_dir
        self.env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
                    "TICKPIPE_KAFKA_TOPIC_PREFIX": kafka_settings.topic_prefix, "TICKPIPE_OPS_HOST": "127.0.0.1",
                    **SMALL_TOPICS_ENV, **(env or {})}
        self.emulators: dict[str, Child] = {}
        self.producers: dict[str, Child] = {}
        self.workers: dict[str, Child] = {}

    def declare_topics(self) -> None:
        import asyncio

        from tickpipe.admin import declare_topics
        from tickpipe.topics import TopicSettings

        asyncio.run(declare_topics(self.kafka, TopicSettings(raw_partitions=2, tick_partitions=2)))

    def start_feeds(self, providers, *, faults: dict[str, str] | None = None, emulator_env=None, producer_env=None,
                    rate: float = 50.0, seed: int = 1, producer_args=None) -> None:
        """An emulator per provider, then its producer (``*_env``: provider -> extra variables,
        ``producer_args``: provider -> extra arguments of ``tickpipe produce``)."""
        faults, emulator_env, producer_env = faults or {}, emulator_env or {}, producer_env or {}
        for i, p in enumerate(providers):
            self.emulators[p] = emulator(p, self.run_dir, faults=faults.get(p, ""), seed=seed + i, rate=rate,
                                         env={**self.env, **emulator_env.get(p, {})})
        start_all(self.emulators[p] for p in providers)
        for p in providers:
            self.producers[p] = producer(p, int(self.emulators[p].ready["port"]), self.run_dir, self.kafka.bootstrap_servers,
                                         prefix=self.kafka.topic_prefix, env={**self.env, **producer_env.get(p, {})},
                                         args=(producer_args or {}).get(p, ()))
        start_all(self.producers[p] for p in providers)

    def worker(self, name: str, providers, env: dict[str, str] | None = None) -> Child:
        """A ``tickpipe process`` worker of the test's consumer group (not started)."""
        child = Child(tickpipe_command("process", "--providers", *providers, "--ops-port", "0"), name,
                      self.run_dir / f"{name}.log",
                      env={**self.env, **PROCESSOR_ENV, "TICKPIPE_PROCESSOR_APP_ID": f"proc-{self.kafka.topic_prefix}",
                           **(env or {})}, ready_timeout=90)
        self.workers[name] = child
        return child

    def journal(self, provider: str) -> Path:
        return self.run_dir / f"emulate-{provider}.journal"

    def children(self) -> list[Child]:
        return [*self.emulators.values(), *self.producers.values(), *self.workers.values()]

    def crashed(self) -> list[str]:
        """Children that exited although nobody stopped them."""
        return [c.name for c in self.children() if c.process is not None and c.process.poll() is not None]

    def stop(self) -> dict[str, int | None]:
        """Producers first (they flush), then workers, then emulators; every exit code."""
        codes = {}
        for group in (self.producers, self.workers, self.emulators):
            for child in group.values():
                child.signal(15)
            deadline = time.monotonic() + 25
            while any(c.running() for c in group.values()) and time.monotonic() < deadline:
                time.sleep(0.05)
            for child in group.values():
                if child.running():
                    child.process.kill()
                codes[child.name] = child.stop(5)   # exited: only reaps it
        return codes

    def logs(self) -> dict[str, str]:
        return {p.stem: p.read_text(errors="replace") for p in self.run_dir.glob("*.log")}


async def read_topics(kafka_settings, topics: list[str], idle_s: float = 2.0, timeout: float = 40.0) -> list:
    """Every record of ``topics`` from the beginning, until none arrived for ``idle_s``:
    (topic, key, value bytes, headers)."""
    import asyncio

    from aiokafka import AIOKafkaConsumer

    from tickpipe.kafka import client_kwargs

    consumer = AIOKafkaConsumer(*topics, **client_kwargs(kafka_settings), group_id=None, auto_offset_reset="earliest",
                                fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=32 * 1024 * 1024)
    await consumer.start()
    got: list = []
    loop = asyncio.get_running_loop()
    deadline, last = loop.time() + timeout, loop.time()
    try:
        while loop.time() < deadline and loop.time() - last < idle_s:
            for batch in (await consumer.getmany(timeout_ms=300)).values():
                got.extend((m.topic, m.key, m.value, m.headers) for m in batch)
                last = loop.time()
    finally:
        await consumer.stop()
    return got


async def group_lag(kafka_settings, group_id: str, topics: list[str]) -> dict[str, int]:
    """``topic/partition`` -> records of ``topics`` the consumer group has not committed yet
    (its committed offset against the partition's true end, read from the log)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from tickpipe.admin import admin_client
    from tickpipe.kafka import client_kwargs
    from tickpipe.processors.end_offsets import true_end_offsets

    probe = AIOKafkaConsumer(**client_kwargs(kafka_settings), group_id=None)
    await probe.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or ())]
        reported = await probe.end_offsets(tps)
    finally:
        await probe.stop()
    ends = await true_end_offsets(client_kwargs(kafka_settings), reported)
    async with admin_client(kafka_settings) as admin:
        committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
    return {f"{tp.topic}/{tp.partition}": ends[tp] - max(0, getattr(committed.get(tp), "offset", 0) or 0)
            for tp in tps}


def decode_avro(records: list) -> list:
    """(topic, decoded record) of Avro values."""
    reader = AvroReader()
    return [(topic, reader.decode(value)) for topic, _, value, _ in records]


def journal_events(path: Path) -> list[dict]:
    """The complete lines of an emulator's journal (see :mod:`tickpipe.demo.journals`)."""
    from tickpipe.demo.journals import JournalTail

    tail = JournalTail(path)
    tail.read()
    return tail.lines
