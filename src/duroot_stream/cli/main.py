"""`duroot-stream`: one program, one subcommand per role; the parser and `main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from duroot_stream import logs
from duroot_stream.compiled import BUILD
from duroot_stream.config import ConfigError
from duroot_stream.version import VERSION

from . import (
    begin,
    diff,
    dlq,
    exporter,
    local,
    ops,
    processor,
    reader,
    run,
    runner,
    schedule,
    topic_setup,
    web,
)
from .options import EXIT_USAGE

Handler = Callable[[argparse.Namespace], int]

# Every subcommand group, in the order `--help` lists them; each module's
# `add_commands(sub)` registers its own.
COMMAND_MODULES = (
    local,  # broker
    topic_setup,  # topics
    processor,  # processor
    runner,  # runner
    begin,  # begin, send
    reader,  # get, status, index, events
    dlq,  # dlq list, show, replay
    diff,  # diff
    web,  # serve
    exporter,  # exporter
    schedule,  # schedule
    ops,  # acls, transactions
    run,  # run
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duroot-stream",
        description="du on registered file-system roots as an event-sourced workflow on Kafka",
    )
    parser.add_argument(
        "--version", action="version", version=f"duroot-stream {VERSION} ({BUILD} build)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logs.setup(args.log_level, args.log_format)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"duroot-stream: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
