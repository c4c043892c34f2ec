"""Figure 4: scaling, two ``tickpipe process`` workers versus one on a 4-partition raw topic.

    python -m bench.scaling [--frames 200000] [--partitions 4]

Two fresh raw topics (``--partitions``, one connection per partition) get the same number
of real financefeast frames. One worker reads the first; two workers of one consumer group,
started together (so they join one generation and split the partitions), read the second.
A rate is the growth of ``ticks.trade`` between 10 % and 90 % of the frames. CPU use of the
workers and of the broker over the window is reported: on a 2-core machine the broker, the
counting consumer and the workers share the cores, which bounds the figure, so the frames
per worker CPU-second of two workers against one is reported beside it
(``cpu_efficiency_two_vs_one``: near 1 when the workers add no work of their own). Target: >= 1.7.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from bench import common
from tickpipe.topics import raw_topic, tick_topic

TARGET = 1.7


async def measure(broker, frames: int, partitions: int, workers: int) -> dict:
    prefix = common.new_prefix(f"scale{workers}")
    kafka = broker.kafka(prefix)
    await common.declare(kafka, raw_partitions=partitions)
    records = common.raw_frames(frames, common.connection_ids(partitions))
    await common.preload(kafka, raw_topic(common.PROVIDER, prefix), records)
    # Started together (one group generation); the pool's threads live until the workers are
    # stopped, because a child started with PR_SET_PDEATHSIG dies with the thread that forked it.
    async with common.TopicCounter(kafka, [tick_topic("trade", prefix)]) as counter:
        with ThreadPoolExecutor(workers) as pool:
            started = list(pool.map(lambda i: common.processor(broker, prefix, f"{prefix}worker-{i}"), range(workers)))
            try:
                pids = [w.process.pid for w in started]
                cpu0, b0, t0 = [common.cpu_seconds(p) for p in pids], common.cpu_seconds(broker.pid), time.monotonic()
                result = await counter.rate_until(frames, 900, alive=lambda: all(w.running() for w in started))
                elapsed = time.monotonic() - t0
                result["worker_cpu_utilisation"] = [round((common.cpu_seconds(p) - c) / elapsed, 2)
                                                    for p, c in zip(pids, cpu0)]
                result["broker_cpu_utilisation"] = round((common.cpu_seconds(broker.pid) - b0) / elapsed, 2)
            finally:
                common.stop_all(*started)
    return {"workers": workers, **result}


async def run(frames: int, partitions: int) -> dict:
    with common.broker() as broker:
        one = await measure(broker, frames, partitions, 1)
        common.say(f"one worker: {one}")
        two = await measure(broker, frames, partitions, 2)
        common.say(f"two workers: {two}")
    figure = common.ratio(two["rate_per_s"], one["rate_per_s"])
    # Not the figure: frames per worker CPU-second, two workers against one. Near 1.0 means the
    # workers add no work of their own (the code scales); the figure then shows the cores it got.
    per_cpu = [w["rate_per_s"] / max(1e-9, sum(w["worker_cpu_utilisation"])) for w in (one, two)]
    return {"figure": "scaling", "broker": broker.kind, "frames": frames, "partitions": partitions,
            "ratio": figure, "target": TARGET, "met": figure >= TARGET and two["complete"],
            "one_worker_frames_per_s": one["rate_per_s"], "two_workers_frames_per_s": two["rate_per_s"],
            "cpu_efficiency_two_vs_one": common.ratio(per_cpu[1], per_cpu[0]),
            "one_worker": one, "two_workers": two}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="price frames per raw topic")
    parser.add_argument("--partitions", type=int, default=4, help="raw topic partitions (at least 4 for the figure)")
    args = parser.parse_args(argv)
    common.emit(asyncio.run(run(args.frames, args.partitions)))


if __name__ == "__main__":
    main()
