"""Figure 3: end-to-end latency, producer receive -> clean tick readable by a consumer.

    python -m bench.latency [--rate 5000] [--seconds 60] [--warmup 10] [--setting NAME=VALUE ...]

The whole real path on one broker: ``tickpipe emulate financefeast --rate 5000`` ->
``tickpipe produce financefeast`` -> ``raw.financefeast`` -> ``tickpipe process`` ->
``ticks.trade`` -> a consumer here, which takes ``now - recv_time`` of every tick (the
producer's receive stamp, carried through the Avro record; one machine, one clock). The
baseline, measured in the same run by a second consumer, is the first hop alone: receive ->
raw record readable (``tp-recv-ns``); the processor's share is the difference. Target:
tick p99 <= 50 ms on the embedded broker. ``--setting`` passes ``TICKPIPE_*`` settings to
every child (e.g. ``TICKPIPE_PROCESSOR_BATCH_WITHIN_S=0.01``); none are set by default.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench import common
from tickpipe.topics import raw_topic, tick_topic

TARGET_P99_MS = 50.0


def summary(latencies_ns: list[int]) -> dict:
    ms = sorted(x / 1e6 for x in latencies_ns)
    return {"count": len(ms), "p50_ms": round(common.percentile(ms, 0.5), 2),
            "p99_ms": round(common.percentile(ms, 0.99), 2), "max_ms": round(ms[-1], 2) if ms else None}


async def run(rate: float, seconds: float, warmup: float, settings: dict[str, str]) -> dict:
    from tickpipe.avro import AvroReader

    reader = AvroReader()
    window = {"open": False}
    ticks_ns: list[int] = []
    raw_ns: list[int] = []

    def on_tick(message) -> None:
        now = time.time_ns()
        if window["open"]:
            ticks_ns.append(now - reader.decode(message.value)["recv_time"])

    def on_raw(message) -> None:
        now = time.time_ns()
        if window["open"]:
            headers = dict(message.headers)
            if headers.get("tp-kind") == b"frame":
                raw_ns.append(now - int(headers["tp-recv-ns"]))

    with common.broker() as broker:
        prefix = common.new_prefix("latency")
        kafka = broker.kafka(prefix)
        await common.declare(kafka)
        children = []
        try:
            children.append(common.processor(broker, prefix, **settings))
            async with common.TopicCounter(kafka, [tick_topic("trade", prefix)], on_record=on_tick,
                                          fetch_max_wait_ms=5) as ticks, \
                    common.TopicCounter(kafka, [raw_topic(common.PROVIDER, prefix)], on_record=on_raw,
                                          fetch_max_wait_ms=5) as raws:
                emulator = common.emulator(broker, rate)
                children.append(emulator)
                children.append(common.producer(broker, prefix, f"ws://127.0.0.1:{emulator.ready['port']}/ws",
                                                **settings))
                await asyncio.sleep(warmup)
                window["open"] = True
                t0, n0 = time.monotonic(), ticks.count
                await asyncio.sleep(seconds)
                window["open"] = False
                elapsed, delivered = time.monotonic() - t0, ticks.count - n0
                raw_delivered = raws.count
        finally:
            common.stop_all(*reversed(children))
    clean, first_hop = summary(ticks_ns), summary(raw_ns)
    return {"figure": "latency", "broker": broker.kind, "rate_per_s": rate, "seconds": round(elapsed, 1),
            "ticks_per_s": round(delivered / elapsed, 1), "tick": clean, "raw_first_hop": first_hop,
            "processor_share_p99_ms": round(clean["p99_ms"] - first_hop["p99_ms"], 2),
            "ratio_p99_tick_to_raw": common.ratio(clean["p99_ms"], first_hop["p99_ms"]),
            "target_p99_ms": TARGET_P99_MS, "met": clean["p99_ms"] <= TARGET_P99_MS and delivered > 0,
            "raw_records_read": raw_delivered, "settings": settings}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="emulator frames per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds before the window")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a TICKPIPE_* setting for every child (repeatable)")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.setting)
    common.emit(asyncio.run(run(args.rate, args.seconds, args.warmup, settings)))


if __name__ == "__main__":
    main()
