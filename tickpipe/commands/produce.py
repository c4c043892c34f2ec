"""``tickpipe produce <provider>``: one producer process for one provider connection."""

from __future__ import annotations

import importlib
import re
import sys

from tickpipe.providers import PROVIDERS, section_name

CONN_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "produce", help="stream one provider connection verbatim into raw.<provider>",
        description="Connect to a provider's feed (or its emulator: the endpoint comes from configuration), "
                    "authenticate, subscribe, and write every frame verbatim into raw.<provider> with session "
                    "and loss markers. Credentials come from TICKPIPE_<PROVIDER>_* variables or *_FILE secret "
                    "files; loop and buffer settings from TICKPIPE_PRODUCER_*. Prints one JSON 'ready' line once "
                    "its ops server serves; SIGTERM unsubscribes, flushes and exits 0.")
    p.add_argument("provider", help=f"provider id: {', '.join(PROVIDERS)}")
    p.add_argument("--connection-id", metavar="ID", help="connection id, the Kafka key (default <provider>-0); "
                                                         "stable across restarts of this connection slot")
    p.add_argument("--ops-port", type=int, default=None, help="port of /metrics, /healthz, /readyz "
                                                              "(default TICKPIPE_OPS_PORT; 0 any free port; -1 off)")
    p.add_argument("--no-control", action="store_true", help="do not follow control.<provider> resync requests")
    p.add_argument("--adapter", metavar="MODULE:CLASS", help="an adapter class kept outside tickpipe "
                                                             "(default: the built-in adapter of the provider)")
    p.set_defaults(func=run)


def _adapter_class(args):
    from tickpipe import producers

    if args.adapter:
        module_name, _, cls_name = args.adapter.partition(":")
        cls = getattr(importlib.import_module(module_name), cls_name)
        if cls.provider != args.provider:
            raise ValueError(f"--adapter {args.adapter} is for provider '{cls.provider}', not '{args.provider}'")
        return cls
    return producers.load(args.provider)


def run(args, ctx) -> int:
    from tickpipe.children import print_ready
    from tickpipe.gctune import settle_heap
    from tickpipe.kafka import KafkaSettings
    from tickpipe.producers.runner import Producer, default_conn_id
    from tickpipe.producers.settings import loop_settings_for
    from tickpipe.service import OpsServer, OpsSettings, run_service

    if not args.adapter and args.provider not in PROVIDERS:
        print(f"tickpipe produce: unknown provider '{args.provider}'; known: {', '.join(PROVIDERS)}", file=sys.stderr)
        return 2
    if args.connection_id is not None and not CONN_ID.fullmatch(args.connection_id):
        print("tickpipe produce: --connection-id must be 1-100 characters of letters, digits and . _ : -, "
              f"got {args.connection_id[:120]!r}", file=sys.stderr)
        return 2
    try:
        cls = _adapter_class(args)
    except (ValueError, LookupError, ImportError, AttributeError) as exc:
        print(f"tickpipe produce: {exc}", file=sys.stderr)
        return 2
    loop_settings = loop_settings_for(cls, ctx.file_data)
    provider_settings = ctx.section(cls.settings_class, section_name(args.provider)) if cls.settings_class else None
    kafka = ctx.section(KafkaSettings, "kafka")
    ops_settings = ctx.section(OpsSettings, "ops", port=args.ops_port)
    conn_id = args.connection_id or default_conn_id(args.provider)
    from tickpipe.topics import TopicSettings
    topic_settings = ctx.section(TopicSettings, "topics")

    async def main(stop) -> int:
        producer = Producer(cls(provider_settings, loop_settings), kafka, conn_id, loop_settings,
                            follow_control=not args.no_control, topic_settings=topic_settings)
        ops = OpsServer(ops_settings.host, ops_settings.port) if ops_settings.port >= 0 else None
        if ops:
            ops.add_readiness("feed", producer.ready)
            await ops.start()
        try:
            settle_heap()
            print_ready(provider=args.provider, conn=conn_id, topic=producer.topic, ops_port=ops.port if ops else None)
            return await producer.run(stop)
        finally:
            if ops:
                await ops.stop()

    return run_service(main, grace_s=ops_settings.shutdown_grace_s + loop_settings.flush_timeout_s)
