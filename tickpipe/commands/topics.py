"""``tickpipe topics create|list``: the topic catalogue against a broker."""

from __future__ import annotations

import asyncio
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("topics", help="create or list the declared topics",
                       description="Compare the topic catalogue with a broker; create what is missing.")
    p.add_argument("action", choices=("create", "list"), help="create: add missing topics (idempotent); list: declared vs existing")
    p.add_argument("--bootstrap-servers", help="override TICKPIPE_KAFKA_BOOTSTRAP_SERVERS")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.kafka import KafkaSettings
    from tickpipe.topics import TopicSettings

    kafka = ctx.section(KafkaSettings, "kafka", bootstrap_servers=args.bootstrap_servers)
    topics = ctx.section(TopicSettings, "topics")
    return asyncio.run(_run(args.action, kafka, topics))


async def _run(action: str, kafka, topic_settings) -> int:
    from tickpipe.admin import admin_client
    from tickpipe.topics import catalogue, create_missing, inspect

    specs = catalogue(kafka.topic_prefix, topic_settings)
    async with admin_client(kafka) as admin:
        if action == "create":
            created, states = await create_missing(admin, specs, kafka.replication_factor)
            print(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else ""))
        else:
            states = await inspect(admin, specs)
    width = max(len(s.spec.name) for s in states)
    print(f"{'TOPIC':<{width}}  DECLARED  EXISTING  STATUS")
    for st in states:
        existing = "-" if st.existing_partitions is None else str(st.existing_partitions)
        print(f"{st.spec.name:<{width}}  {st.spec.partitions:>8}  {existing:>8}  {st.status}")
    bad = [st for st in states if st.status == "mismatch"]
    for st in bad:
        print(f"error: {st.describe()}", file=sys.stderr)
    missing = [st for st in states if st.status == "missing"]
    return 1 if bad or (action == "create" and missing) else 0
