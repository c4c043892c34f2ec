"""``tickpipe process``: the Faust processor, raw topics -> clean Avro topics."""

from __future__ import annotations

import asyncio
import logging
import sys

from tickpipe.providers import PROVIDERS


def add_parser(sub) -> None:
    p = sub.add_parser("process", help="normalize raw.<provider> topics into clean Avro ticks (Faust)",
                       description="Declare the topics, register the schemas when a registry is configured, "
                                   "and run one Faust agent per provider: normalize every raw frame, produce "
                                   "ticks.<kind> keyed by instrument and dead letters to dlq.<provider>. "
                                   "Prints one JSON 'ready' line once the consumer group has its partitions.")
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, metavar="PROVIDER",
                   help="providers to process (default: every provider with a normalizer)")
    p.add_argument("--ops-port", type=int, default=None, help="port of /metrics, /healthz, /readyz "
                                                              "(default TICKPIPE_OPS_PORT; 0 any, -1 off)")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.kafka import KafkaSettings
    from tickpipe.processors.app import ProcessorSettings
    from tickpipe.processors.normalizers import NormalizerMissing, available_providers, load_normalizer
    from tickpipe.schema_registry import AvroSettings
    from tickpipe.service import OpsSettings, run_service
    from tickpipe.topics import TopicSettings

    kafka = ctx.section(KafkaSettings, "kafka")
    topics = ctx.section(TopicSettings, "topics")
    processor = ctx.section(ProcessorSettings, "processor")
    avro = ctx.section(AvroSettings, "avro")
    ops = ctx.section(OpsSettings, "ops", port=args.ops_port)
    from tickpipe.processors.integrity.stage import IntegritySettings
    integrity = ctx.section(IntegritySettings, "integrity")
    providers = list(args.providers or available_providers(processor.normalizer_overrides()))
    if not providers:
        print("tickpipe process: no provider normalizer is installed", file=sys.stderr)
        return 2
    try:
        for provider in providers:
            load_normalizer(provider, processor.normalizer_overrides())
    except NormalizerMissing as exc:
        print(f"tickpipe process: {exc}", file=sys.stderr)
        return 2
    _quiet_faust(ops.log_level)
    from tickpipe.schema_registry import RegistryError

    try:
        return run_service(lambda stop: _main(stop, kafka, topics, processor, avro, ops, providers, integrity),
                           grace_s=ops.shutdown_grace_s)
    except RegistryError as exc:
        print(f"tickpipe process: schema registry: {exc}", file=sys.stderr)
        return 1


def _quiet_faust(level: str) -> None:
    """Faust and mode log every service start/stop at INFO; keep them at WARNING unless debugging."""
    if level != "DEBUG":
        for name in ("faust", "mode", "aiokafka"):
            logging.getLogger(name).setLevel(logging.WARNING)


async def _encoder(avro, kafka, providers):
    from tickpipe.avro import AvroEncoder
    from tickpipe.schema_registry import SchemaRegistry, register_shipped, value_subjects

    if not avro.registry_url:
        return AvroEncoder()
    async with SchemaRegistry.from_settings(avro) as registry:
        ids = await register_shipped(registry, value_subjects(kafka.topic_prefix, providers))
    return AvroEncoder(registry_ids=ids)


async def declare_state_topics(kafka, processor, providers, topics) -> None:
    """Create the state tables' changelog topics (Faust declares nothing here)."""
    from tickpipe.admin import admin_client
    from tickpipe.processors.app import changelog_topics
    from tickpipe.topics import create_missing

    async with admin_client(kafka) as admin:
        _created, states = await create_missing(admin, changelog_topics(processor, providers, topics),
                                                kafka.replication_factor)
    bad = [st.describe() for st in states if st.status != "ok"]
    if bad:
        raise RuntimeError("state changelog topics do not match: " + "; ".join(bad))


async def _main(stop, kafka, topics, processor, avro, ops_settings, providers, integrity) -> int:
    from tickpipe.admin import declare_topics
    from tickpipe.children import print_ready
    from tickpipe.gctune import settle_heap
    from tickpipe.logs import get_logger
    from tickpipe.processors.app import build_app
    from tickpipe.processors.integrity.check import IntegrityCheck
    from tickpipe.service import OpsServer

    log = get_logger("tickpipe.process")
    ops = OpsServer(ops_settings.host, ops_settings.port) if ops_settings.port >= 0 else None
    state = {"assigned": False, "app": None}

    def ready():
        app = state["app"]
        if app is None or not state["assigned"]:
            return False, "waiting for the consumer group"
        if app.rebalancing:
            return False, "consumer group rebalancing"
        if any(p.retrying for p in app.tickpipe_processors.values()):
            return False, "the broker refuses our records"
        return True, ""

    if ops is not None:
        ops.add_readiness("processor", ready)
        await ops.start()
    try:
        await declare_topics(kafka, topics)
        encoder = await _encoder(avro, kafka, providers)
        await declare_state_topics(kafka, processor, providers, topics)
        app = build_app(kafka, processor, providers, topics, encoder,
                        checks_factory=lambda provider, store: [IntegrityCheck(provider, integrity, store)])
        state["app"] = app
        await app.start()
        log.info("processor started", providers=providers, wire_format=encoder.wire_format)
        while not stop.is_set() and not state["assigned"]:
            assignment = app.consumer.assignment() if app.consumer else set()
            state["assigned"] = bool(assignment) and not app.rebalancing
            if not state["assigned"]:
                await asyncio.sleep(0.1)
        if state["assigned"]:
            settle_heap()
            print_ready(providers=providers, ops_port=ops.port if ops else None, wire_format=encoder.wire_format)
        code = 0
        while not stop.is_set():
            if app.crashed or app.should_stop:
                log.error("processor app stopped by itself", reason=repr(app.crash_reason))
                code = 1
                break
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        log.info("processor stopping")
        await app.stop()
        return code
    finally:
        if ops is not None:
            await ops.stop()
