"""``tickpipe replay``: normalize a file of raw frames offline (no Kafka), JSON lines out."""

from __future__ import annotations

import contextlib
import json
import sys

from tickpipe.providers import PROVIDERS


def add_parser(sub) -> None:
    p = sub.add_parser("replay", help="run the normalizers over a file of raw frames, without Kafka",
                       description="Read INPUT (one websocket text frame per line exactly as received, or a "
                                   "raw-topic export from 'tickpipe tail raw.<provider>'), normalize it as "
                                   "'tickpipe process' would, and write JSON lines: each record's Avro fields "
                                   "plus \"type\". Ticks, alerts and dead letters go to stdout unless "
                                   "--ticks/--alerts/--dlq name files. A summary goes to stderr.")
    p.add_argument("--provider", required=True, choices=PROVIDERS, help="whose frames INPUT holds")
    p.add_argument("input", metavar="INPUT", help="file of raw frames ('-' for stdin)")
    p.add_argument("--ticks", metavar="FILE", help="write tick records here (default stdout)")
    p.add_argument("--alerts", metavar="FILE", help="write gap alerts here (default: with the ticks)")
    p.add_argument("--dlq", metavar="FILE", help="write dead letters here (default: with the ticks)")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.processors.app import ProcessorSettings
    from tickpipe.processors.normalizers import NormalizerMissing
    from tickpipe.processors.pipeline import Pipeline
    from tickpipe.processors.rawfile import RawFileError
    from tickpipe.processors.replay import replay

    from tickpipe.processors.integrity.check import IntegrityCheck
    from tickpipe.processors.integrity.stage import IntegritySettings

    overrides = ctx.section(ProcessorSettings, "processor").normalizer_overrides()
    integrity = ctx.section(IntegritySettings, "integrity")
    try:
        pipeline = Pipeline.for_provider(args.provider, overrides, checks=[IntegrityCheck(args.provider, integrity)])
    except NormalizerMissing as exc:
        print(f"tickpipe replay: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:
        try:
            source = sys.stdin.buffer if args.input == "-" else stack.enter_context(open(args.input, "rb"))
            ticks = stack.enter_context(open(args.ticks, "wb")) if args.ticks else sys.stdout.buffer
            alerts = stack.enter_context(open(args.alerts, "wb")) if args.alerts else None
            dlq = stack.enter_context(open(args.dlq, "wb")) if args.dlq else None
        except OSError as exc:
            print(f"tickpipe replay: cannot open {exc.filename}: {exc.strerror}", file=sys.stderr)
            return 2
        try:
            counts = replay(pipeline, source, ticks, alerts, dlq)
        except RawFileError as exc:
            print(f"tickpipe replay: {args.input}: {exc}", file=sys.stderr)
            return 1
        ticks.flush()
    print(json.dumps({"event": "replayed", "provider": args.provider, **counts.as_dict()}), file=sys.stderr)
    return 0
