"""Figure 5: memory, processor RSS with 5,000 instruments tracked, producer RSS at 5,000 frames/s.

    python -m bench.memory [--instruments 5000] [--frames-per-instrument 10] [--rate 5000] [--seconds 30]

Processor: the raw topic gets ``instruments x frames-per-instrument`` real financefeast
frames over 4 connections (every instrument gets its own per-instrument integrity state);
the real ``tickpipe process`` reads them all; RSS is sampled throughout (the figure is the
largest sample; ``peak_rss_mb`` is the kernel's high-water mark). Baseline: the same process
right after it is ready, before any frame (what the frameworks cost on their own).
Producer: the real ``tickpipe produce`` against ``tickpipe emulate financefeast --rate``;
baseline: the bare websockets receive loop at the same rate. Targets: <= 250 MB and <= 120 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from bench import common
from bench.producer_throughput import bare_receive, produce_run
from tickpipe.topics import raw_topic, tick_topic

PROCESSOR_TARGET_MB = 250.0
PRODUCER_TARGET_MB = 120.0


async def processor_memory(broker, instruments: int, per_instrument: int) -> dict:
    prefix = common.new_prefix("memory")
    kafka = broker.kafka(prefix)
    await common.declare(kafka)
    frames = instruments * per_instrument
    records = common.raw_frames(frames, common.connection_ids(4), common.symbol_names(instruments))
    async with common.TopicCounter(kafka, [tick_topic("trade", prefix)]) as counter:
        proc = common.processor(broker, prefix)
        try:
            pid = proc.process.pid
            idle = common.rss_mb(pid)["rss_mb"]
            await common.preload(kafka, raw_topic(common.PROVIDER, prefix), records)
            largest, deadline = idle, time.monotonic() + 900
            while counter.count < frames and time.monotonic() < deadline and proc.running():
                largest = max(largest, common.rss_mb(pid)["rss_mb"])
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # a few more batches and commits with every instrument known
            final = common.rss_mb(pid)
            largest = max(largest, final["rss_mb"])
        finally:
            proc.stop()
    return {"instruments": instruments, "frames": frames, "ticks": counter.count, "idle_rss_mb": idle,
            "rss_mb": largest, "final_rss_mb": final["rss_mb"], "peak_rss_mb": final["peak_rss_mb"],
            "ratio_to_idle": common.ratio(largest, idle)}


async def run(instruments: int, per_instrument: int, rate: float, seconds: float) -> dict:
    with common.broker() as broker:
        proc = await processor_memory(broker, instruments, per_instrument)
        common.say(f"processor: {proc}")
        emulator = common.emulator(broker, rate)
        try:
            url = f"ws://127.0.0.1:{emulator.ready['port']}/ws"
            bare = bare_receive(url, seconds, 3.0, "memory-receive")
            common.say(f"bare receive: {bare}")
            prod = await produce_run(broker, url, seconds, 3.0, "memoryproducer", emulator.process.pid)
            common.say(f"producer: {prod}")
        finally:
            emulator.stop()
    producer = {"rate_per_s": prod["rate_per_s"], "rss_mb": prod["max_rss_mb"], "peak_rss_mb": prod["peak_rss_mb"],
                "bare_rss_mb": bare["rss_mb"], "bare_rate_per_s": bare["rate_per_s"],
                "ratio_to_bare": common.ratio(prod["max_rss_mb"], bare["rss_mb"]), "zero_loss": prod["zero_loss"]}
    return {"figure": "memory", "broker": broker.kind,
            "processor_rss_mb": proc["rss_mb"], "processor_target_mb": PROCESSOR_TARGET_MB,
            "producer_rss_mb": producer["rss_mb"], "producer_target_mb": PRODUCER_TARGET_MB,
            "met": proc["rss_mb"] <= PROCESSOR_TARGET_MB and producer["rss_mb"] <= PRODUCER_TARGET_MB
            and proc["ticks"] >= proc["frames"],
            "processor": proc, "producer": producer}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--instruments", type=int, default=5000)
    parser.add_argument("--frames-per-instrument", type=int, default=10)
    parser.add_argument("--rate", type=float, default=5000.0, help="producer test: emulator frames per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="producer test: measured window")
    args = parser.parse_args(argv)
    common.emit(asyncio.run(run(args.instruments, args.frames_per_instrument, args.rate, args.seconds)))


if __name__ == "__main__":
    main()
