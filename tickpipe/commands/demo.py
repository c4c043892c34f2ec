"""``tickpipe demo``: the whole pipeline on one machine, on the embedded broker."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on one machine (embedded broker, emulators, producers, processors)",
                       description="Start the embedded broker and declare the topics, then run every stage "
                                   "of the pipeline that exists; Ctrl-C or --duration ends it.")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds (default: until Ctrl-C)")
    p.add_argument("--json", metavar="FILE", help="write the final summary here as JSON")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from dataclasses import replace

    from tickpipe.admin import declare_topics
    from tickpipe.broker import EmbeddedBroker
    from tickpipe.kafka import KafkaSettings
    from tickpipe.topics import TopicSettings, catalogue

    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(1))
    started = time.monotonic()
    with EmbeddedBroker() as broker:
        kafka = replace(ctx.section(KafkaSettings, "kafka"), bootstrap_servers=broker.bootstrap_servers)
        topic_settings = ctx.section(TopicSettings, "topics")
        created = asyncio.run(declare_topics(kafka, topic_settings))
        print(f"embedded broker: {broker.bootstrap_servers}")
        print(f"declared {len(catalogue(kafka.topic_prefix, topic_settings))} topics ({len(created)} created)")
        print("Ctrl-C to stop" if args.duration is None else f"running for {args.duration:g}s", flush=True)
        while not stopping and (args.duration is None or time.monotonic() - started < args.duration):
            if not broker.running():
                print("embedded broker exited unexpectedly", file=sys.stderr)
                return 1
            time.sleep(0.2)
    summary = {"bootstrap_servers": broker.bootstrap_servers, "topics_created": created,
               "seconds": round(time.monotonic() - started, 1)}
    print("demo stopped: " + json.dumps(summary))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(summary, fh, indent=2)
    return 0
