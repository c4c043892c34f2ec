"""Figure 3: end-to-end latency, producer receive -> clean tick readable by a consumer.

    python -m bench.latency [--rate 5000] [--seconds 60] [--warmup 10] [--setting NAME=VALUE ...]

The whole real path on one broker: ``tickpipe emulate financefeast --rate 5000`` ->
``tickpipe produce financefeast`` -> ``raw.financefeast`` -> ``tickpipe process`` ->
``ticks.trade`` -> a consumer here, which takes ``now - recv_time`` of every tick (the
producer's receive stamp, carried through the Avro record; one machine, one clock), taken
when the consumer's ``getmany`` returns the record's batch; the records are decoded after the
run, so the measuring process does next to nothing while it measures. The
baseline, measured in the same run by a second consumer, is the first hop alone: receive ->
raw record readable (``tp-recv-ns``); the processor's share is the difference. Target:
tick p99 <= 50 ms on the embedded broker. ``--setting`` passes ``TICKPIPE_*`` settings to
every child (e.g. ``TICKPIPE_PROCESSOR_BATCH_WITHIN_S=0.01``); none are set by default.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import time

from bench import common
from tickpipe.topics import raw_topic, tick_topic

TARGET_P99_MS = 50.0


def p99_by_slice(reads: list[tuple[int, int]], t0_ns: int, slice_s: float = 10.0) -> list[float]:
    """p99 (ms) of the (read time, latency) pairs in each ``slice_s`` of the window, in order."""
    slices: dict[int, list[float]] = {}
    for read_ns, latency_ns in reads:
        slices.setdefault(int((read_ns - t0_ns) / 1e9 // slice_s), []).append(latency_ns / 1e6)
    return [round(common.percentile(sorted(v), 0.99), 1) for _k, v in sorted(slices.items())]


def summary(latencies_ns: list[int]) -> dict:
    ms = sorted(x / 1e6 for x in latencies_ns)
    return {"count": len(ms), "p50_ms": round(common.percentile(ms, 0.5), 2),
            "p99_ms": round(common.percentile(ms, 0.99), 2), "max_ms": round(ms[-1], 2) if ms else None}


async def run(rate: float, seconds: float, warmup: float, settings: dict[str, str], fetch_wait_ms: int = 5) -> dict:
    from tickpipe.avro import AvroReader

    reader = AvroReader()
    window = {"open": False}
    ticks_read: list[tuple[int, list]] = []  # (read time, the batch's messages), looked into after the run
    raws_read: list[tuple[int, list]] = []

    def on_ticks(messages, read_ns: int) -> None:
        if window["open"]:
            ticks_read.append((read_ns, messages))

    def on_raws(messages, read_ns: int) -> None:
        if window["open"]:
            raws_read.append((read_ns, messages))

    with common.broker() as broker:
        prefix = common.new_prefix("latency")
        kafka = broker.kafka(prefix)
        await common.declare(kafka)
        children = []
        try:
            children.append(common.processor(broker, prefix, **settings))
            async with common.TopicCounter(kafka, [tick_topic("trade", prefix)], on_batch=on_ticks,
                                          fetch_max_wait_ms=fetch_wait_ms) as ticks, \
                    common.TopicCounter(kafka, [raw_topic(common.PROVIDER, prefix)], on_batch=on_raws,
                                          fetch_max_wait_ms=fetch_wait_ms) as raws:
                emulator = common.emulator(broker, rate)
                children.append(emulator)
                children.append(common.producer(broker, prefix, f"ws://127.0.0.1:{emulator.ready['port']}/ws",
                                                **settings))
                await asyncio.sleep(warmup)
                pids = {"processor": children[0].process.pid, "producer": children[2].process.pid,
                        "broker": broker.pid, "emulator": emulator.process.pid, "bench": os.getpid()}
                gc.disable()  # the measuring loop keeps every record it reads: no collector pauses in it
                window["open"] = True
                t0, n0, t0_ns = time.monotonic(), ticks.count, time.time_ns()
                cpu0 = {name: common.cpu_seconds(pid) for name, pid in pids.items()}
                await asyncio.sleep(seconds)
                window["open"] = False
                elapsed, delivered = time.monotonic() - t0, ticks.count - n0
                cpu = {name: round((common.cpu_seconds(pid) - cpu0[name]) / elapsed, 2) for name, pid in pids.items()}
                gc.enable()
                raw_delivered = raws.count
                reader_waits = {name: counter.fetch_wait.wait_ms if counter.fetch_wait else fetch_wait_ms
                                for name, counter in (("ticks", ticks), ("raw", raws))}
        finally:
            common.stop_all(*reversed(children))
    tick_reads = [(read_ns, read_ns - reader.decode(m.value)["recv_time"]) for read_ns, batch in ticks_read for m in batch]
    ticks_ns = [latency for _read, latency in tick_reads]
    raw_ns = [read_ns - int(headers["tp-recv-ns"]) for read_ns, batch in raws_read for m in batch
              if (headers := dict(m.headers)).get("tp-kind") == b"frame"]
    clean, first_hop = summary(ticks_ns), summary(raw_ns)
    return {"figure": "latency", "broker": broker.kind, "rate_per_s": rate, "seconds": round(elapsed, 1),
            "ticks_per_s": round(delivered / elapsed, 1), "tick": clean, "raw_first_hop": first_hop,
            "processor_share_p99_ms": round(clean["p99_ms"] - first_hop["p99_ms"], 2),
            "ratio_p99_tick_to_raw": common.ratio(clean["p99_ms"], first_hop["p99_ms"]),
            "target_p99_ms": TARGET_P99_MS, "met": clean["p99_ms"] <= TARGET_P99_MS and delivered > 0,
            "tick_p99_ms_by_10s": p99_by_slice(tick_reads, t0_ns), "raw_records_read": raw_delivered,
            "cpu_cores": cpu, "consumer_fetch_max_wait_ms": fetch_wait_ms,
            "reader_fetch_wait_ms_at_end": reader_waits, "settings": settings}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="emulator frames per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    parser.add_argument("--fetch-wait-ms", type=int, default=5,
                        help="fetch_max_wait_ms the two measuring consumers start with (Tansu holds a fetch that "
                             "finds nothing this long; tickpipe.fetchwait raises it when the broker starves them)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a TICKPIPE_* setting for every child (repeatable)")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.setting)
    common.emit(asyncio.run(run(args.rate, args.seconds, args.warmup, settings, args.fetch_wait_ms)))


if __name__ == "__main__":
    main()
