"""The broker under figure 3: how long a fetch takes as a partition's log grows.

    python -m bench.broker_fetch [--batches 1000 4000 16000 32000] [--waits 5 10 25 50] [--rounds 9]
                                 [--partitions 1]

A topic's partitions are filled with single-record batches (one produce request each, as a
producer flushing every few milliseconds writes them); at each size a consumer seeks to the
last record of every partition and times how long ``getmany`` takes to return records, once
per fetch wait (``fetch_max_wait_ms``), noting how many partitions the first answer held. The
records are already there, so a broker with an offset index answers with all of them in about
one round trip whatever the log's length. Baseline (same run, same broker): the same fetch on
the smallest log. A wait at which no record came back within ``--starve-s`` seconds counts as
*starved*: the consumer is stuck while records are there.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench import common
from tickpipe.admin import admin_client
from tickpipe.kafka import client_kwargs
from tickpipe.topics import TopicSpec, create_missing


async def fill(producer: AIOKafkaProducer, topic: str, partitions: int, have: int, want: int) -> None:
    """Append single-record batches until each partition holds ``want`` of them."""
    for _ in range(want - have):
        sent = [await producer.send(topic, b"x" * 100, partition=p) for p in range(partitions)]
        await asyncio.gather(*sent)


async def time_fetches(kafka_kwargs: dict, tps: list[TopicPartition], wait_ms: int, rounds: int,
                       starve_s: float) -> dict:
    """Median and largest time (ms) to get records back and the partitions in that first answer,
    or ``starved`` if none came."""
    consumer = AIOKafkaConsumer(**kafka_kwargs, enable_auto_commit=False, fetch_max_wait_ms=wait_ms)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        times, served = [], []
        for _ in range(rounds):
            for tp in tps:
                consumer.seek(tp, ends[tp] - 1)
            t0 = time.perf_counter()
            got = await consumer.getmany(*tps, timeout_ms=int(starve_s * 1000))
            if not got:
                return {"wait_ms": wait_ms, "starved": True}
            times.append((time.perf_counter() - t0) * 1000)
            served.append(len(got))
        times.sort()
        served.sort()
        return {"wait_ms": wait_ms, "starved": False, "median_ms": round(common.percentile(times, 0.5), 2),
                "max_ms": round(times[-1], 2), "partitions_served_median": common.percentile(served, 0.5)}
    finally:
        await consumer.stop()


async def run(sizes: list[int], waits: list[int], rounds: int, starve_s: float, partitions: int = 1) -> dict:
    with common.broker() as broker:
        kafka = broker.kafka(common.new_prefix("brokerfetch"))
        topic = f"{kafka.topic_prefix}bench.fetch"
        async with admin_client(kafka) as admin:
            await create_missing(admin, [TopicSpec(topic, partitions, 86_400_000, purpose="broker fetch cost")],
                                 kafka.replication_factor)
        kwargs = client_kwargs(kafka)
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        producer = AIOKafkaProducer(**kwargs, linger_ms=0)
        await producer.start()
        points, have = [], 0
        try:
            for size in sorted(sizes):
                t0 = time.monotonic()
                await fill(producer, topic, partitions, have, size)
                have = size
                common.say(f"{size} batches stored in each of {partitions} partitions "
                           f"({time.monotonic() - t0:.1f} s to add them)")
                by_wait = [await time_fetches(kwargs, tps, wait, rounds, starve_s) for wait in waits]
                common.say(f"  {by_wait}")
                points.append({"batches": size, "by_wait": by_wait})
        finally:
            await producer.stop()
    return {"figure": "broker_fetch", "broker": broker.kind, "partitions": partitions, **summarise(points),
            "points": points, "met": None}


def summarise(points: list[dict]) -> dict:
    """Baseline = the smallest log; per point the median over waits that delivered; the slope per stored batch."""
    def delivered(point):
        ms = [w["median_ms"] for w in point["by_wait"] if not w["starved"]]
        return min(ms) if ms else None

    first, last = points[0], points[-1]
    base, top = delivered(first), delivered(last)
    slope = (top - base) * 1000 / (last["batches"] - first["batches"]) \
        if base is not None and top is not None and last["batches"] > first["batches"] else None
    return {"fetch_ms_smallest_log": base, "fetch_ms_largest_log": top,
            "ratio_largest_to_smallest": common.ratio(top, base) if base and top else None,
            "us_per_stored_batch": round(slope, 3) if slope is not None else None,
            "starved": [{"batches": p["batches"], "wait_ms": w["wait_ms"]}
                        for p in points for w in p["by_wait"] if w["starved"]]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_fetch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1000, 4000, 16000, 32000],
                        help="log sizes (batches in each partition) to measure at")
    parser.add_argument("--partitions", type=int, default=1, help="partitions of the topic (each filled alike)")
    parser.add_argument("--waits", type=int, nargs="+", default=[5, 10, 25, 50], help="fetch_max_wait_ms values")
    parser.add_argument("--rounds", type=int, default=9, help="fetches timed per size and wait")
    parser.add_argument("--starve-s", type=float, default=3.0, help="no record within this long counts as starved")
    args = parser.parse_args(argv)
    common.emit(asyncio.run(run(args.batches, args.waits, args.rounds, args.starve_s, args.partitions)))


if __name__ == "__main__":
    main()
