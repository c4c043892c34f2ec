"""Figure 2: producer throughput, ``tickpipe produce`` versus a bare websockets receive loop.

    python -m bench.producer_throughput [--seconds 15] [--warmup 3] [--rounds 1]

One ``tickpipe emulate financefeast --rate 0`` (as fast as it can send) serves both, one
after the other: the bare loop (``bench.baselines receive``: authenticate, ``recv()``,
count) and the real ``tickpipe produce financefeast`` (the shared loop, the envelope, the
Kafka sink with its defaults: acks=all, zstd, linger 20 ms). The producer's rate is frames
acknowledged by Kafka per second (its ``frames_produced`` counter over the window after the
warm-up). Zero loss: after SIGTERM it must exit 0 with nothing dropped, and the raw topic
must hold every ``tp-seq`` from 1 to the last exactly once. Target: producer/bare >= 0.8.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from bench import common
from tickpipe.topics import raw_topic

TARGET = 0.8
PRODUCED = 'tickpipe_producer_frames_produced_total{provider="financefeast"}'
RECEIVED = 'tickpipe_producer_frames_received_total{provider="financefeast"}'
DROPPED = 'tickpipe_producer_frames_dropped_total{provider="financefeast"}'


def ws_url(emulator) -> str:
    return f"ws://127.0.0.1:{emulator.ready['port']}/ws"


def bare_receive(url: str, seconds: float, warmup: float, name: str) -> dict:
    """Run the bare receive loop for its window; its result line, plus its peak RSS."""
    proc = common.child(["-m", "bench.baselines", "receive", "--url", url, "--token", common.FF_TOKEN,
                         "--seconds", str(seconds), "--warmup", str(warmup)], name, {})
    rss = {"rss_mb": 0.0, "peak_rss_mb": 0.0}
    while proc.running():
        rss = common.rss_mb(proc.process.pid)
        time.sleep(0.2)
    proc.process.wait(10)
    time.sleep(0.2)  # the reader thread takes the last line
    result = json.loads(proc.stdout_lines[-1])
    return {**result, **rss}


async def raw_sequences(kafka, topic: str, settle_s: float = 2.0) -> list[int]:
    """Every ``tp-seq`` in ``topic``, read until nothing new arrives for ``settle_s``."""
    seqs: list[int] = []

    def take(message) -> None:
        seqs.append(int(dict(message.headers)["tp-seq"]))

    async with common.TopicCounter(kafka, [topic], on_record=take) as counter:
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() - quiet_since < settle_s:
            if counter.count != last:
                last, quiet_since = counter.count, time.monotonic()
            await asyncio.sleep(0.2)
    return seqs


def loss_check(seqs: list[int], exit_code: int | None, dropped: float) -> dict:
    highest = max(seqs, default=0)
    unique = len(set(seqs))
    return {"records_in_raw_topic": len(seqs), "highest_tp_seq": highest, "missing": highest - unique,
            "duplicates": len(seqs) - unique, "dropped": int(dropped), "exit_code": exit_code,
            "zero_loss": highest == unique == len(seqs) and exit_code == 0 and dropped == 0}


async def produce_run(broker, url: str, seconds: float, warmup: float, name: str, emulator_pid: int | None = None,
                      **settings: str) -> dict:
    """The real producer for ``warmup + seconds``; its rate over the window, RSS, and the loss check."""
    prefix = common.new_prefix(name)
    kafka = broker.kafka(prefix)
    await common.declare(kafka)
    proc = common.producer(broker, prefix, url, name, **settings)
    port, pid = proc.ready["ops_port"], proc.process.pid
    peak = 0.0
    try:
        await asyncio.sleep(warmup)
        others0 = [common.cpu_seconds(p) for p in (emulator_pid, broker.pid)]
        m0, t0, cpu0 = common.scrape(port), time.monotonic(), common.cpu_seconds(pid)
        until = t0 + seconds
        while time.monotonic() < until:
            peak = max(peak, common.rss_mb(pid)["rss_mb"])
            await asyncio.sleep(0.25)
        m1, t1, cpu1 = common.scrape(port), time.monotonic(), common.cpu_seconds(pid)
        others = [round((common.cpu_seconds(p) - c0) / (t1 - t0), 2) for p, c0 in zip((emulator_pid, broker.pid), others0)]
        rss = common.rss_mb(pid)
    finally:
        code = proc.stop(timeout=60)
    elapsed = t1 - t0
    seqs = await raw_sequences(kafka, raw_topic(common.PROVIDER, prefix))
    return {"rate_per_s": round((m1[PRODUCED] - m0[PRODUCED]) / elapsed, 1),
            "received_per_s": round((m1[RECEIVED] - m0[RECEIVED]) / elapsed, 1),
            "seconds": round(elapsed, 2), "cpu_utilisation": round((cpu1 - cpu0) / elapsed, 2),
            "emulator_cpu_utilisation": others[0], "broker_cpu_utilisation": others[1],
            "rss_mb": rss["rss_mb"], "max_rss_mb": max(peak, rss["rss_mb"]), "peak_rss_mb": rss["peak_rss_mb"],
            **loss_check(seqs, code, m1.get(DROPPED, 0.0))}


async def run(seconds: float, warmup: float, rounds: int, settings: dict[str, str] | None = None) -> dict:
    bare, produced = [], []
    with common.broker() as broker:
        emulator = common.emulator(broker, rate=0)
        try:
            url = ws_url(emulator)
            for r in range(rounds):
                bare.append(bare_receive(url, seconds, warmup, f"receive-{r}"))
                common.say(f"round {r + 1}: bare receive {bare[-1]}")
                produced.append(await produce_run(broker, url, seconds, warmup, f"producer{r}",
                                                  emulator.process.pid, **(settings or {})))
                common.say(f"round {r + 1}: producer {produced[-1]}")
        finally:
            emulator.stop()
    ratios = [common.ratio(p["rate_per_s"], b["rate_per_s"]) for p, b in zip(produced, bare)]
    figure = statistics.median(ratios)
    zero_loss = all(p["zero_loss"] for p in produced)
    return {"figure": "producer_throughput", "broker": broker.kind, "ratio": figure, "target": TARGET,
            "met": figure >= TARGET and zero_loss, "zero_loss": zero_loss,
            "producer_frames_per_s": statistics.median(p["rate_per_s"] for p in produced),
            "bare_frames_per_s": statistics.median(b["rate_per_s"] for b in bare),
            "ratios": ratios, "settings": settings or {}, "producer": produced, "bare_receive": bare}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.producer_throughput", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured window of each run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before the window")
    parser.add_argument("--rounds", type=int, default=1, help="bare/producer pairs; the median ratio counts")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a TICKPIPE_* setting for the producer (repeatable); none by default")
    args = parser.parse_args(argv)
    settings = dict(item.split("=", 1) for item in args.setting)
    common.emit(asyncio.run(run(args.seconds, args.warmup, args.rounds, settings)))


if __name__ == "__main__":
    main()
