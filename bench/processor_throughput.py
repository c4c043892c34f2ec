"""Figure 1: processor throughput, ``tickpipe process`` versus a bare consume->produce pass-through.

    python -m bench.processor_throughput [--frames 200000] [--conns 4] [--rounds 1]

The raw topic (4 partitions) is loaded once with real financefeast price frames in the raw
envelope (one connection per partition, each opened by its ``session_start`` marker). Then,
per round and each with a consumer group of its own, the bare pass-through
(``bench.baselines passthrough``) and the real ``tickpipe process`` (one Faust worker:
envelope, normalization, integrity checks with their state table, Avro encoding, produce to
``ticks.trade``) read all of it; a rate is the growth of the output topic between 10 % and
90 % of the frames (group join and tail excluded). Target: processor/pass-through >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench import common
from tickpipe.topics import dlq_topic, raw_topic, tick_topic

TARGET = 0.5


async def measure_output(kafka, topic: str, total: int, start_child, timeout: float, profile: str | None = None) -> dict:
    """Start a child, then the steady rate at which ``topic`` gains ``total`` records; stop the child."""
    async with common.TopicCounter(kafka, [topic]) as counter:
        proc = start_child()
        profiler = common.start_profiler(proc.process.pid, profile)
        try:
            cpu0, t0 = common.cpu_seconds(proc.process.pid), time.monotonic()
            result = await counter.rate_until(total, timeout, alive=proc.running)
            result["cpu_utilisation"] = round((common.cpu_seconds(proc.process.pid) - cpu0)
                                              / max(1e-9, time.monotonic() - t0), 2)
            result.update(common.rss_mb(proc.process.pid))
        finally:
            common.stop_profiler(profiler)
            proc.stop()
    return result


async def one_round(broker, frames: int, conns: int, timeout: float, r: int, profile: str | None,
                    settings: dict[str, str], skip_baseline: bool = False) -> tuple[dict, dict, int]:
    """Load a fresh raw topic; the pass-through, then the processor, each read all of it."""
    prefix = common.new_prefix(f"proc{r}")
    kafka = broker.kafka(prefix)
    source, sink = raw_topic(common.PROVIDER, prefix), f"{prefix}bench.passthrough"
    await common.declare(kafka, raw_partitions=max(4, conns), extra=[(sink, 8)])
    records = common.raw_frames(frames, common.connection_ids(conns))
    load_s = await common.preload(kafka, source, records)
    common.say(f"round {r + 1}: loaded {len(records)} raw records in {load_s:.1f}s ({len(records) / load_s:.0f}/s)")
    base = {"rate_per_s": 0.0} if skip_baseline else await measure_output(kafka, sink, len(records), lambda: common.child(
        ["-m", "bench.baselines", "passthrough", "--bootstrap", broker.bootstrap, "--source", source,
         "--sink", sink, "--group", f"{prefix}passthrough"], f"passthrough-{r}", {}), timeout)
    common.say(f"round {r + 1}: pass-through {base}")
    proc = await measure_output(kafka, tick_topic("trade", prefix), frames,
                                lambda: common.processor(broker, prefix, f"processor-{r}", **settings), timeout, profile)
    common.say(f"round {r + 1}: processor {proc}")
    async with common.TopicCounter(kafka, [dlq_topic(common.PROVIDER, prefix)]) as dlq:
        await asyncio.sleep(1.0)
        dead = dlq.count
    return base, proc, dead


async def run(frames: int, conns: int, rounds: int, timeout: float, profile: str | None = None,
              settings: dict[str, str] | None = None, skip_baseline: bool = False) -> dict:
    baselines, processed, dead = [], [], 0
    with common.broker() as broker:
        for r in range(rounds):
            base, proc, d = await one_round(broker, frames, conns, timeout, r, profile, settings or {}, skip_baseline)
            baselines.append(base)
            processed.append(proc)
            dead += d
    ratios = [common.ratio(p["rate_per_s"], b["rate_per_s"]) for p, b in zip(processed, baselines)]
    figure = statistics.median(ratios)
    return {"figure": "processor_throughput", "broker": broker.kind, "frames": frames, "connections": conns,
            "ratio": figure, "target": TARGET, "met": figure >= TARGET and all(p["complete"] for p in processed),
            "processor_frames_per_s": statistics.median(p["rate_per_s"] for p in processed),
            "passthrough_frames_per_s": statistics.median(b["rate_per_s"] for b in baselines),
            "ratios": ratios, "dead_letters": dead, "settings": settings or {}, "processor": processed, "passthrough": baselines}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.processor_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000, help="price frames in the raw topic")
    parser.add_argument("--conns", type=int, default=4, help="producer connections (one per raw partition)")
    parser.add_argument("--rounds", type=int, default=1, help="pass-through/processor pairs; the median ratio counts")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds allowed per measured run")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the processor into FILE (collapsed stacks)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a TICKPIPE_* setting for the processor (repeatable); none by default")
    parser.add_argument("--skip-baseline", action="store_true", help="processor only (profiling; no figure)")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.setting)
    common.emit(asyncio.run(run(args.frames, args.conns, args.rounds, args.timeout, args.profile, settings,
                                args.skip_baseline)))


if __name__ == "__main__":
    main()
