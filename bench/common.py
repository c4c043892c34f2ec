"""What every benchmark shares: the broker, child processes, raw frames, counting records, results.

Every figure is a ratio against a baseline measured in the same run on the same broker
(these machines are noisy). Each benchmark prints progress lines on stderr and its figures
as one JSON object on the last line of stdout (:func:`emit`).

The broker is ``KAFKA_BOOTSTRAP_SERVERS`` when set, else the embedded Tansu broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from tickpipe.envelope import KIND_SESSION_START, RawRecord, encode_marker
from tickpipe.fetchwait import govern_fetch_wait
from tickpipe.kafka import KafkaSettings, client_kwargs

REPO = Path(__file__).resolve().parents[1]
PROVIDER = "financefeast"  # the simplest feed: one price frame -> one trade record
FF_TOKEN = "pk_" + "b" * 24  # a well-formed token (the emulator accepts any when none is configured)


# ----- output -----
def say(*parts) -> None:
    """A progress line (stderr: stdout ends with the JSON line)."""
    print(*parts, file=sys.stderr, flush=True)


def emit(figures: dict) -> None:
    """The benchmark's result: one JSON object on the last line of stdout."""
    print(json.dumps({**figures, "machine": machine()}, sort_keys=False), flush=True)


def machine() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": round(mem_kb / 2**20, 1),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def ratio(measured: float, baseline: float) -> float:
    return round(measured / baseline, 3) if baseline else 0.0


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


# ----- the broker -----
@dataclass
class Broker:
    bootstrap: str
    kind: str          # "embedded" or "external"
    pid: int | None    # the embedded broker's process (for CPU accounting)

    def kafka(self, prefix: str) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap, topic_prefix=prefix)


@contextlib.contextmanager
def broker():
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):
        yield Broker(os.environ["KAFKA_BOOTSTRAP_SERVERS"], "external", None)
        return
    from tickpipe.broker import EmbeddedBroker

    with EmbeddedBroker() as embedded:
        yield Broker(embedded.bootstrap_servers, "embedded", embedded.process.pid)


def new_prefix(name: str) -> str:
    """A topic prefix of its own for each measured run (runs never share topics)."""
    return f"bench-{name}-{uuid.uuid4().hex[:6]}."


# ----- child processes -----
# Tansu takes about half the session timeout to complete a group join (the environment wins).
GROUP_TIMINGS = {"TICKPIPE_PROCESSOR_SESSION_TIMEOUT_S": "6", "TICKPIPE_PROCESSOR_HEARTBEAT_INTERVAL_S": "1"}


def tickpipe_env(broker: Broker, prefix: str, **settings: str) -> dict[str, str]:
    """Environment of a ``tickpipe`` child: this broker and prefix, test-sized group timings, quiet logs."""
    timings = {name: os.environ.get(name, default) for name, default in GROUP_TIMINGS.items()}
    env = {"TICKPIPE_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap, "TICKPIPE_KAFKA_TOPIC_PREFIX": prefix, **timings,
           "TICKPIPE_PROCESSOR_APP_ID": f"{prefix}processor", "TICKPIPE_OPS_PORT": "0",
           "TICKPIPE_OPS_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
    env.update(settings)
    return env


def log_dir() -> Path:
    path = Path(os.environ.get("BENCH_LOG_DIR") or tempfile.mkdtemp(prefix="tickpipe-bench-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def child(args: list[str], name: str, env: dict[str, str], ready_timeout: float = 60.0):
    """A started child process (``tickpipe ...`` or ``-m bench.baselines ...``) that printed its ready line."""
    from tickpipe.children import Child

    cmd = [sys.executable, *args] if args[0] == "-m" else [sys.executable, "-m", "tickpipe.cli", *args]
    return Child(cmd, name, log_file=log_dir() / f"{name}.log", env=env, ready_timeout=ready_timeout).start()


def processor(broker: Broker, prefix: str, name: str = "processor", **settings: str):
    """The real ``tickpipe process`` (Faust app) for the benchmark provider."""
    return child(["process", "--providers", PROVIDER], name, tickpipe_env(broker, prefix, **settings))


def emulator(broker: Broker, rate: float, symbols: list[str] | None = None, name: str = "emulator"):
    """The real ``tickpipe emulate financefeast`` at ``rate`` frames/s (0: as fast as it can)."""
    args = ["emulate", PROVIDER, "--rate", str(rate)]
    if symbols:
        args += ["--symbols", *symbols]
    return child(args, name, tickpipe_env(broker, ""))


def producer(broker: Broker, prefix: str, url: str, name: str = "producer", **settings: str):
    """The real ``tickpipe produce financefeast`` against ``url`` (the emulator)."""
    env = tickpipe_env(broker, prefix, TICKPIPE_FINANCEFEAST_URL=url, TICKPIPE_FINANCEFEAST_TOKEN=FF_TOKEN,
                       **settings)
    return child(["produce", PROVIDER, "--no-control"], name, env)


def start_profiler(pid: int, out: str | None):
    """``py-spy record`` of a child into ``out`` (collapsed stacks, for flame graphs), or None.

    py-spy is a dev tool, not a dependency: ``pip install py-spy``."""
    if not out:
        return None
    import shutil
    import subprocess

    exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "200", "--format", "raw", "--nonblocking",
                             "--output", out], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler) -> None:
    import signal

    if profiler is not None:
        profiler.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        profiler.wait(30)


def stop_all(*children) -> None:
    for c in children:
        if c is not None:
            c.stop()


# ----- process accounting (Linux /proc) -----
def rss_mb(pid: int) -> dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident set size of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far."""
    if pid is None:
        return 0.0
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int) -> dict[str, float]:
    """A child's /metrics, as ``name{labels}`` -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[name] = float(value)
    return out


# ----- raw frames -----
def symbol_names(count: int) -> list[str]:
    """``count`` distinct NZX-looking tickers (letters only: the emulator treats digits as bonds)."""
    names = []
    for i in range(count):
        letters, n = "", i
        for _ in range(4):
            n, r = divmod(n, 26)
            letters = chr(65 + r) + letters
        names.append(letters + ".NZ")
    return names


def connection_ids(partitions: int) -> list[str]:
    """One connection id per raw partition (the default partitioner puts conn ``i`` on partition ``i``)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitioner, every = DefaultPartitioner(), list(range(partitions))
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        conn = f"{PROVIDER}-{n}"
        found.setdefault(partitioner(conn.encode(), every, every), conn)
        n += 1
    return [found[p] for p in every]


def raw_frames(frames: int, conns: list[str], symbols: list[str] | None = None, seed: int = 1) -> list[RawRecord]:
    """Real financefeast price frames (the emulator's own generator) in the raw envelope, round-robin
    over ``conns``; every connection starts with its ``session_start`` marker (``tp-seq`` 1)."""
    from tickpipe.emulators.base import EmulatorOptions
    from tickpipe.emulators.financefeast import FinancefeastEmulator

    import orjson

    emu = FinancefeastEmulator(EmulatorOptions(seed=seed, symbols=tuple(symbols or ())))
    now = time.time_ns()
    out, seq = [], {}
    for conn in conns:
        seq[conn] = 1
        out.append(RawRecord(PROVIDER, conn, "s1", 1, now, encode_marker(KIND_SESSION_START, attempt=1),
                             kind=KIND_SESSION_START))
    for i in range(frames):
        conn = conns[i % len(conns)]
        seq[conn] += 1
        payload, _ids = emu.next_price(emu.symbols[i % len(emu.symbols)] if symbols else None)
        out.append(RawRecord(PROVIDER, conn, "s1", seq[conn], now + i, orjson.dumps(payload)))
    return out


async def preload(kafka: KafkaSettings, topic: str, records: list[RawRecord]) -> float:
    """Produce ``records`` into ``topic`` (acks=all) as fast as the broker takes them; returns seconds."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(**client_kwargs(kafka), acks="all", linger_ms=5, max_batch_size=1 << 20,
                                enable_idempotence=False)
    await producer.start()
    started = time.monotonic()
    try:
        pending = []
        for record in records:
            pending.append(await producer.send(topic, record.payload, key=record.key, headers=record.headers()))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def declare(kafka: KafkaSettings, raw_partitions: int = 4, extra: list[tuple[str, int]] = ()) -> None:
    """The catalogue's topics (``raw_partitions`` per raw topic) plus ``extra`` (name, partitions)."""
    from tickpipe.admin import admin_client, declare_topics
    from tickpipe.topics import TopicSettings, TopicSpec, create_missing

    await declare_topics(kafka, TopicSettings(raw_partitions=raw_partitions))
    if extra:
        async with admin_client(kafka) as admin:
            await create_missing(admin, [TopicSpec(name, parts, 86_400_000, purpose="benchmark")
                                         for name, parts in extra], kafka.replication_factor)


# ----- watching topics grow -----
class TopicCounter:
    """Counts the records of some topics by reading them (Tansu's ListOffsets answers the base
    offset of the last batch, not the high watermark, so end offsets cannot count records)."""

    def __init__(self, kafka: KafkaSettings, topics: list[str], on_record=None, fetch_max_wait_ms: int = 100,
                 on_batch=None) -> None:
        """``on_record(message)`` per record; ``on_batch(messages, read_ns)`` per fetched batch, with the
        time ``getmany`` returned it (before anything here looked at its records)."""
        self.kafka, self.topics, self.on_record, self.fetch_max_wait_ms = kafka, topics, on_record, fetch_max_wait_ms
        self.on_batch = on_batch
        self.count = 0
        self._consumer = None
        self._task: asyncio.Task | None = None
        self.fetch_wait = None

    async def __aenter__(self) -> "TopicCounter":
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(*self.topics, **client_kwargs(self.kafka), group_id=None,
                                          auto_offset_reset="earliest", fetch_max_bytes=64 << 20,
                                          max_partition_fetch_bytes=16 << 20,
                                          fetch_max_wait_ms=self.fetch_max_wait_ms)
        await self._consumer.start()
        self.fetch_wait = govern_fetch_wait(self._consumer, "bench")  # a WaitLadder (None: not governed)
        self._task = asyncio.ensure_future(self._read())
        return self

    async def _read(self) -> None:
        on_record, on_batch = self.on_record, self.on_batch
        while True:
            fetched = await self._consumer.getmany(timeout_ms=200, max_records=50_000)
            read_ns = time.time_ns()
            for batch in fetched.values():
                self.count += len(batch)
                if on_batch is not None:
                    on_batch(batch, read_ns)
                if on_record is not None:
                    for message in batch:
                        on_record(message)

    async def __aexit__(self, *exc) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def rate_until(self, total: int, timeout: float, lo: float = 0.1, hi: float = 0.9,
                         interval: float = 0.1, alive=lambda: True) -> dict:
        """Sample the count until ``total`` records are there (or ``alive()`` turns false); the
        steady rate between the ``lo`` and ``hi`` fractions of ``total`` (start-up and tail excluded)."""
        samples: list[tuple[float, int]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._task.done():
                self._task.result()
            if not alive():
                raise RuntimeError("a measured process exited early (see its log in BENCH_LOG_DIR)")
            samples.append((time.monotonic(), self.count))
            if self.count >= total:
                break
            await asyncio.sleep(interval)
        return steady_rate(samples, total, lo, hi)


def steady_rate(samples: list[tuple[float, int]], total: int, lo: float, hi: float) -> dict:
    first = next(((t, n) for t, n in samples if n >= lo * total), None)
    last = next(((t, n) for t, n in samples if n >= hi * total), None)
    reached = samples[-1][1] if samples else 0
    if first is None or last is None or last[0] <= first[0]:
        return {"rate_per_s": 0.0, "records": reached, "complete": reached >= total, "window_s": 0.0}
    return {"rate_per_s": round((last[1] - first[1]) / (last[0] - first[0]), 1), "records": reached,
            "complete": reached >= total, "window_s": round(last[0] - first[0], 2)}
