"""``tickpipe capture <provider> --out FILE``: record a live feed's (or an emulator's) frames to a file."""

from __future__ import annotations

import asyncio
import sys

from tickpipe.providers import PROVIDERS, section_name


def add_parser(sub) -> None:
    p = sub.add_parser("capture", help="record raw frames from a feed (or emulator) into a file for replay",
                       description="Connect like 'tickpipe produce' (same TICKPIPE_<PROVIDER>_* settings), but write "
                                   "the frames to FILE instead of Kafka: one websocket text frame per line, exactly "
                                   "as received, or with --export the raw-topic export format (session markers, "
                                   "binary frames). Stops after --duration/--limit, or on SIGTERM/Ctrl-C.")
    p.add_argument("provider", choices=PROVIDERS)
    p.add_argument("--out", required=True, metavar="FILE", help="file to write (appended to)")
    p.add_argument("--export", action="store_true", help="write raw-topic export lines instead of bare frames")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N frames")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe import producers
    from tickpipe.producers.settings import loop_settings_for
    from tickpipe.service import run_service

    try:
        cls = producers.load(args.provider)
    except (ValueError, LookupError) as exc:
        print(f"tickpipe capture: {exc}", file=sys.stderr)
        return 2
    loop_settings = loop_settings_for(cls, ctx.file_data)
    provider_settings = ctx.section(cls.settings_class, section_name(args.provider)) if cls.settings_class else None
    try:
        out = open(args.out, "ab")
    except OSError as exc:
        print(f"tickpipe capture: cannot open {args.out}: {exc.strerror}", file=sys.stderr)
        return 2
    with out:
        return run_service(lambda stop: _capture(stop, args, cls(provider_settings, loop_settings), loop_settings, out))


async def _capture(stop: asyncio.Event, args, adapter, loop_settings, out) -> int:
    from tickpipe.children import print_ready
    from tickpipe.logs import get_logger
    from tickpipe.processors.rawfile import CaptureWriter
    from tickpipe.producers.loop import ConnectionLoop
    from tickpipe.producers.recorder import Recorder

    log = get_logger("tickpipe.capture")
    writer = CaptureWriter(out, export=args.export)
    recorder = Recorder(args.provider, f"{args.provider}-capture")
    recorder.attach(writer)
    loop = ConnectionLoop(adapter, recorder, writer, loop_settings)
    started = asyncio.get_running_loop().time()

    async def watch() -> None:
        while not stop.is_set():
            if args.limit is not None and writer.frames + writer.unwritable >= args.limit:
                break
            if args.duration is not None and asyncio.get_running_loop().time() - started >= args.duration:
                break
            await asyncio.sleep(0.05)
        stop.set()

    print_ready(provider=args.provider, out=args.out, endpoint=adapter.endpoint())
    watcher = asyncio.ensure_future(watch())
    try:
        await loop.run(stop)
    finally:
        watcher.cancel()
        out.flush()
    log.info("capture finished", provider=args.provider, frames=writer.frames, unwritable=writer.unwritable)
    if writer.unwritable:
        print(f"tickpipe capture: {writer.unwritable} frame(s) were binary or held a line break and were not "
              f"written; use --export to keep them", file=sys.stderr)
        return 1
    return 0
