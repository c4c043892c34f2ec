"""``tickpipe tail <topic>``: print a topic's records as JSON lines, decoded.

Clean topics (ticks.*, alerts.gaps, dlq.*) hold Avro in either wire form: each line is the
record's fields plus ``"type"``. Raw topics (raw.*) print as raw-topic export lines, which
``tickpipe replay`` reads back.
"""

from __future__ import annotations

import asyncio
import sys


def add_parser(sub) -> None:
    p = sub.add_parser("tail", help="print a topic's records as JSON lines (Avro decoded; raw topics as export lines)",
                       description="Consume TOPIC (the configured topic prefix is added unless already there) "
                                   "without a consumer group and print one JSON line per record. Avro single-object "
                                   "and Confluent wire formats are both decoded (the registry is asked for unknown "
                                   "ids when TICKPIPE_AVRO_REGISTRY_URL is set).")
    p.add_argument("topic", help="e.g. ticks.trade, dlq.coinbase, raw.alpaca")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record (default: only new ones)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N records")
    p.add_argument("--timeout", type=float, default=None, metavar="S", help="stop when no record arrives for S seconds")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.kafka import KafkaSettings
    from tickpipe.schema_registry import AvroSettings

    kafka = ctx.section(KafkaSettings, "kafka")
    avro = ctx.section(AvroSettings, "avro")
    topic = args.topic if args.topic.startswith(kafka.topic_prefix) else kafka.topic_prefix + args.topic
    try:
        return asyncio.run(_tail(kafka, avro, topic, args.from_beginning, args.limit, args.timeout, sys.stdout.buffer))
    except KeyboardInterrupt:
        return 0


async def _tail(kafka, avro, topic: str, from_beginning: bool, limit: int | None, timeout: float | None, out) -> int:
    import contextlib

    from aiokafka import AIOKafkaConsumer, TopicPartition

    from tickpipe.fetchwait import govern_fetch_wait
    from tickpipe.kafka import client_kwargs, start_client
    from tickpipe.processors.rawfile import export_line
    from tickpipe.schema_registry import SchemaRegistry

    raw = topic[len(kafka.topic_prefix):].startswith("raw.")
    consumer = AIOKafkaConsumer(**client_kwargs(kafka), group_id=None, enable_auto_commit=False)
    async with contextlib.AsyncExitStack() as stack:
        registry = None
        if avro.registry_url and not raw:
            registry = await stack.enter_async_context(SchemaRegistry.from_settings(avro))
        stack.push_async_callback(consumer.stop)
        await start_client(consumer, kafka)
        govern_fetch_wait(consumer, "tail")
        partitions = consumer.partitions_for_topic(topic) or await _partitions(consumer, topic)
        if not partitions:
            print(f"tickpipe tail: topic {topic} does not exist", file=sys.stderr)
            return 1
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await (consumer.seek_to_beginning(*tps) if from_beginning else consumer.seek_to_end(*tps))
        decode = _decoder(registry)
        count, loop = 0, asyncio.get_running_loop()
        last = loop.time()
        while limit is None or count < limit:
            batches = await consumer.getmany(timeout_ms=200, max_records=limit - count if limit else 500)
            for msg in (m for batch in batches.values() for m in batch):
                if raw:
                    out.write(export_line(msg.key, msg.value, msg.headers, msg.topic, msg.partition, msg.offset))
                else:
                    out.write(await decode(msg))
                count += 1
            if batches:
                out.flush()
                last = loop.time()
            elif timeout is not None and loop.time() - last >= timeout:
                break
    return 0


async def _partitions(consumer, topic: str):
    await consumer._client.force_metadata_update()  # the consumer knows only topics it has seen
    return consumer.partitions_for_topic(topic)


def _decoder(registry):
    import orjson

    from tickpipe.avro import AvroDecodeError, AvroReader, record_json_line

    reader = AvroReader(registry=registry)

    async def decode(msg) -> bytes:
        try:
            return record_json_line(await reader.decode_async(msg.value or b""))
        except Exception as exc:  # never stop tailing on one bad record; say where it is
            kind = "undecodable" if isinstance(exc, AvroDecodeError) else type(exc).__name__
            print(f"tickpipe tail: {msg.topic}[{msg.partition}]@{msg.offset}: {kind}: {exc}", file=sys.stderr)
            return orjson.dumps({"type": None, "error": str(exc), "partition": msg.partition,
                                 "offset": msg.offset}) + b"\n"

    return decode
