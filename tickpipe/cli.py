"""The ``tickpipe`` command: one console script, one module per subcommand under ``tickpipe.commands``."""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass, field

from tickpipe import __version__
from tickpipe.config import ConfigError, load_section, read_config_file
from tickpipe.kafka import KafkaSetupError

# Each module defines ``add_parser(subparsers)``; the parser's ``func(args, ctx)`` runs the command.
COMMANDS = ("broker", "topics", "emulate", "produce", "capture", "process", "replay", "tail", "demo")


@dataclass
class Context:
    """What every subcommand gets: the parsed ``--config`` file and a way to load sections."""

    file_data: dict = field(default_factory=dict)

    def section(self, cls, name: str, **overrides):
        return load_section(cls, name, file_data=self.file_data, overrides=overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tickpipe", description="Real-time market data into Kafka, normalized and checked.")
    parser.add_argument("--version", action="version", version=f"tickpipe {__version__}")
    parser.add_argument("--config", metavar="FILE", help="YAML or TOML settings file (environment variables TICKPIPE_* win)")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR (default: TICKPIPE_OPS_LOG_LEVEL or INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"tickpipe.commands.{name.replace('-', '_')}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from tickpipe.logs import setup_logging
    from tickpipe.service import OpsSettings

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        ctx = Context(read_config_file(args.config))
        ops = ctx.section(OpsSettings, "ops", log_level=args.log_level.upper() if args.log_level else None)
        setup_logging(ops.log_level)
        return int(args.func(args, ctx) or 0)
    except ConfigError as exc:
        print(f"tickpipe: configuration error: {exc}", file=sys.stderr)
        return 2
    except KafkaSetupError as exc:
        print(f"tickpipe: kafka: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
