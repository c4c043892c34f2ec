"""``tickpipe emulate <provider>``: a feed emulator on loopback."""

from __future__ import annotations

import sys

from tickpipe.providers import PROVIDERS, section_name


def add_parser(sub) -> None:
    p = sub.add_parser("emulate", help="run a provider's feed emulator (a real server on loopback)",
                       description="Serve a provider's websocket/socket.io/REST protocol with synthetic data, "
                                   "optional fault injection and a ground-truth journal. Prints one JSON "
                                   "'ready' line with the port once it serves; stops on SIGTERM or Ctrl-C.")
    p.add_argument("provider", choices=PROVIDERS)
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="listen port (default 0: any free port)")
    p.add_argument("--seed", type=int, default=1, help="seed for data and fault schedule (default 1)")
    p.add_argument("--rate", type=float, default=10.0, metavar="MSGS_PER_S",
                   help="data messages per second per connection (default 10; 0 = as fast as possible)")
    p.add_argument("--symbols", nargs="+", metavar="SYMBOL", help="instruments to generate (default: the provider's own list)")
    p.add_argument("--faults", metavar="SPEC", help="e.g. drop=0.01,reorder=0.01,duplicate=0.01,disconnect_every=30 "
                                                    "(see tickpipe.emulators.faults for every name)")
    p.add_argument("--journal", metavar="FILE", help="write the ground-truth journal (JSON lines) here")
    p.add_argument("--ops-port", type=int, default=None, help="port of /metrics, /healthz, /readyz (default TICKPIPE_OPS_PORT; -1 off)")
    p.set_defaults(func=run)


def run(args, ctx) -> int:
    from tickpipe.emulators import load
    from tickpipe.emulators.base import EmulatorOptions
    from tickpipe.emulators.faults import FaultPlan, FaultSpecError

    try:
        plan = FaultPlan.parse(args.faults)
    except FaultSpecError as exc:
        print(f"tickpipe emulate: {exc}", file=sys.stderr)
        return 2
    cls = load(args.provider)
    settings_class = getattr(cls, "settings_class", None)
    credentials = ctx.section(settings_class, f"emulator_{section_name(args.provider)}") if settings_class else None
    options = EmulatorOptions(host=args.host, port=args.port, seed=args.seed, rate=args.rate,
                              symbols=tuple(args.symbols or ()), faults=plan, journal=args.journal,
                              credentials=credentials)
    from tickpipe.service import OpsServer, OpsSettings, run_service
    from tickpipe.children import print_ready

    ops_settings = ctx.section(OpsSettings, "ops", port=args.ops_port)

    async def main(stop) -> int:
        emulator = cls(options)
        ops = OpsServer(ops_settings.host, ops_settings.port) if ops_settings.port >= 0 else None
        await emulator.start()
        try:
            if ops:
                ops.add_readiness("emulator", lambda: emulator.port > 0)
                await ops.start()
            print_ready(provider=args.provider, host=args.host, port=emulator.port,
                        url=emulator.http_url(""), ops_port=ops.port if ops else None)
            await stop.wait()
        finally:
            await emulator.stop()
            if ops:
                await ops.stop()
        return 0

    return run_service(main, grace_s=ops_settings.shutdown_grace_s)
