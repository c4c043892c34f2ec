"""The bare baselines the figures are ratios against, each run as a child process like the real thing.

    python -m bench.baselines passthrough --bootstrap HOST:PORT --source TOPIC --sink TOPIC --group ID
        consume -> produce with nothing in between (aiokafka only): per fetched batch, one ``send``
        per record (same key, value and headers), the batch's acknowledgements awaited before the
        next fetch (acks=all), offsets auto-committed every second -- the processor's delivery
        guarantee without its work.
    python -m bench.baselines receive --url ws://... --token T --seconds S [--warmup W]
        a bare ``websockets`` receive loop: authenticate as the financefeast producer does, then
        ``recv()`` and count; prints ``{"frames", "seconds", "rate_per_s", ...}`` for the window
        after the warm-up.

Both print the tickpipe ready line once connected, and run until SIGTERM (``receive``: until
its window is over).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time

from tickpipe.children import print_ready


async def passthrough(args) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    consumer = AIOKafkaConsumer(args.source, bootstrap_servers=args.bootstrap, group_id=args.group,
                                auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=1000,
                                session_timeout_ms=6000, heartbeat_interval_ms=1000)
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks="all", enable_idempotence=False)
    await consumer.start()
    await producer.start()
    print_ready(role="passthrough")
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=args.batch_max)
            pending = [await producer.send(args.sink, m.value, key=m.key, headers=list(m.headers))
                       for batch in batches.values() for m in batch]
            if pending:
                await asyncio.gather(*pending)
    finally:
        await consumer.stop()
        await producer.stop()


async def receive(args) -> None:
    from websockets.asyncio.client import connect

    async with connect(args.url, max_size=16 * 1024 * 1024, max_queue=64, ping_interval=10, ping_timeout=20,
                       proxy=None) as ws:
        await ws.send(json.dumps({"type": "authenticate", "data": {"token": args.token}}))
        await ws.recv()
        print_ready(role="receive")
        warm_until = time.monotonic() + args.warmup
        while time.monotonic() < warm_until:
            await ws.recv()
        frames, started, cpu = 0, time.monotonic(), time.process_time()
        until = started + args.seconds
        while time.monotonic() < until:
            await ws.recv()
            frames += 1
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    print(json.dumps({"frames": frames, "seconds": round(elapsed, 3), "rate_per_s": round(frames / elapsed, 1),
                      "cpu_utilisation": round(cpu / elapsed, 2)}), flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("passthrough")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--sink", required=True)
    p.add_argument("--group", required=True)
    p.add_argument("--batch-max", type=int, default=1000)
    r = sub.add_parser("receive")
    r.add_argument("--url", required=True)
    r.add_argument("--token", required=True)
    r.add_argument("--seconds", type=float, default=10.0)
    r.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args(argv)
    asyncio.run(passthrough(args) if args.role == "passthrough" else receive(args))


if __name__ == "__main__":
    main()
