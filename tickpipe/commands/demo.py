"""``tickpipe demo``: the whole pipeline on one machine, on the embedded broker, with a live view."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path

from tickpipe.providers import PROVIDERS


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the pipeline on one machine (embedded broker, emulators, producers, processors)",
                       description="Start the embedded broker and declare the topics; start, as separate processes, an "
                                   "emulator with injected faults and a producer for every provider, and the processor; "
                                   "show a live view every second (periodic JSON log lines when stdout is not a "
                                   "terminal). --duration or Ctrl-C ends it: every child stops and a summary is printed "
                                   "(injected versus detected anomalies per provider and kind).")
    p.add_argument("--duration", type=float, default=None, metavar="S",
                   help="stop after S seconds of streaming (default: until Ctrl-C)")
    p.add_argument("--json", metavar="FILE", help="write the final summary here as JSON")
    p.add_argument("--rate", type=float, default=20.0, metavar="MSGS_PER_S",
                   help="emulator data messages per second per connection (default 20)")
    p.add_argument("--seed", type=int, default=1, help="seed of the emulators' data and fault schedules (default 1)")
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, metavar="PROVIDER",
                   help="providers to run (default: every provider with an emulator, adapter and normalizer)")
    p.add_argument("--run-dir", metavar="DIR", help="where children's logs and journals go (default: a new temporary directory)")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.demo.cast import choose
    from tickpipe.kafka import KafkaSettings
    from tickpipe.processors.app import ProcessorSettings
    from tickpipe.topics import TopicSettings

    if args.duration is not None and args.duration <= 0:
        print("tickpipe demo: --duration must be positive", file=sys.stderr)
        return 2
    if args.json and not Path(args.json).resolve().parent.is_dir():
        print(f"tickpipe demo: --json {args.json}: no such directory", file=sys.stderr)
        return 2
    if args.rate <= 0:
        print("tickpipe demo: --rate must be positive", file=sys.stderr)
        return 2
    providers, skipped = choose(list(args.providers or PROVIDERS))
    if not providers:
        print("tickpipe demo: no provider can run: " + "; ".join(f"{p}: {why}" for p, why in skipped.items()),
              file=sys.stderr)
        return 1
    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="tickpipe-demo-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    kafka = ctx.section(KafkaSettings, "kafka")
    topics = ctx.section(TopicSettings, "topics")
    group = ctx.section(ProcessorSettings, "processor").app_id
    return asyncio.run(_main(args, kafka, topics, group, providers, skipped, run_dir))


async def _main(args, kafka, topic_settings, group, providers, skipped, run_dir) -> int:
    from tickpipe.broker import BrokerError, EmbeddedBroker
    from tickpipe.demo import summary as summary_text
    from tickpipe.demo.session import DemoOptions, DemoSession
    from tickpipe.demo.view import Screen

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    signals = []

    def on_signal() -> None:
        signals.append(1)
        stop.set()
        if len(signals) > 1:      # a second Ctrl-C: stop waiting; children are still reaped
            main_task.cancel()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    tty = sys.stdout.isatty()
    options = DemoOptions(providers, skipped, run_dir, args.duration, args.rate, args.seed, group,
                          Screen(sys.stdout, tty))
    print(f"tickpipe demo: providers {', '.join(providers)}; logs and journals in {run_dir}", flush=True)
    for provider, why in skipped.items():
        print(f"tickpipe demo: skipping {provider}: {why}", flush=True)
    broker = EmbeddedBroker(log_file=run_dir / "broker.log", own_process_group=True)
    try:
        await asyncio.to_thread(broker.start)
        print(f"embedded broker: {broker.bootstrap_servers}", flush=True)
        result = await DemoSession(options, kafka, topic_settings, stop).run(broker)
    except (BrokerError, TimeoutError, RuntimeError, OSError) as exc:
        print(f"tickpipe demo: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - say what failed; every child has been stopped by now
        print(f"tickpipe demo: {type(exc).__name__}: {exc} (logs in {run_dir})", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("tickpipe demo: stopped by a second signal; no summary", file=sys.stderr)
        return 1
    finally:
        await asyncio.to_thread(broker.stop)
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    if result is None:
        print("tickpipe demo: stopped before the pipeline was up; no summary", file=sys.stderr)
        return 130
    print(summary_text.render(result), flush=True)
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(result, indent=2))
        except OSError as exc:
            print(f"tickpipe demo: cannot write --json {args.json}: {exc}", file=sys.stderr)
            return 1
    clean = (result["ended_by"] in ("duration", "interrupted") and not result["totals"]["without_data"]
             and all(c == 0 for c in result["exit_codes"].values()))
    return 0 if clean else 1
