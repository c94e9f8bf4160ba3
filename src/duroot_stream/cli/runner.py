"""`duroot-stream runner`: settings from arguments, metrics, signals."""

from __future__ import annotations

import argparse
import logging
import shlex
import time

from duroot_stream.client import DuRootError
from duroot_stream.config import ConfigError
from duroot_stream.runner import DEFAULT_BATCH_BYTES, DEFAULT_BATCH_SIZE, Runner, RunnerSettings, du

from .daemon import probes, start_service
from .options import Subcommands, kafka_config, kafka_options

log = logging.getLogger("duroot.runner")


def add_commands(sub: Subcommands) -> None:
    """Register `runner` on `duroot-stream`'s parser."""
    parser = sub.add_parser("runner", help="run du for one host's workflows (nogfsostad's role)")
    kafka_options(parser)
    parser.add_argument("--host", required=True, help="the host name this runner serves")
    parser.add_argument(
        "--root",
        action="append",
        required=True,
        metavar="PATH",
        help="run du only inside this directory (repeatable; real paths are compared)",
    )
    parser.add_argument("--group", default="", help="consumer group id [duroot-runner-HOST]")
    parser.add_argument(
        "--du-command",
        default="du",
        help="the du executable, possibly behind a wrapper, split like a shell would but "
        "never run by one (e.g. 'setpriv --reuid=nobody --regid=nogroup --clear-groups du')",
    )
    parser.add_argument("--threshold", default=du.DEFAULT_THRESHOLD, help="du --threshold")
    parser.add_argument(
        "--max-depth", type=int, default=du.DEFAULT_MAX_DEPTH, help="du --max-depth"
    )
    parser.add_argument(
        "--one-file-system",
        action="store_true",
        help="du -x: do not count directories on other file systems (mounts) below the root",
    )
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds a du run may take before it fails"
    )
    parser.add_argument("--concurrency", type=int, default=2, help="du runs at once")
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="paths per Append, at most"
    )
    parser.add_argument(
        "--batch-bytes",
        type=int,
        default=DEFAULT_BATCH_BYTES,
        help="about this many bytes of paths per Append, at most",
    )
    parser.add_argument(
        "--stderr-limit", type=int, default=du.DEFAULT_STDERR_LIMIT, help="stderr bytes kept"
    )
    parser.add_argument(
        "--command-timeout", type=float, default=30.0, help="seconds to wait for a reply"
    )
    parser.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    parser.add_argument("--metrics-addr", default="127.0.0.1", help="address of that port")
    parser.set_defaults(handler=cli_main)


def settings_from_args(args: argparse.Namespace) -> RunnerSettings:
    try:
        du_command = tuple(shlex.split(args.du_command))
    except ValueError as exc:
        raise ConfigError(f"--du-command: {exc}") from None
    return RunnerSettings(
        kafka=kafka_config(args),
        host=args.host,
        roots=tuple(args.root),
        group_id=args.group,
        du_command=du_command,
        threshold=args.threshold,
        max_depth=args.max_depth,
        one_file_system=args.one_file_system,
        timeout_s=args.timeout,
        concurrency=args.concurrency,
        batch_size=args.batch_size,
        batch_bytes=args.batch_bytes,
        stderr_limit=args.stderr_limit,
        command_timeout_s=args.command_timeout,
        metrics_port=args.metrics_port,
    )


def cli_main(args: argparse.Namespace) -> int:
    runner = Runner(settings_from_args(args))
    failure: list[str] = []

    def ready() -> str | None:
        return None if runner.ready.is_set() else "waiting for the index partitions"

    start_service(
        log,
        runner.metrics.registry,
        runner.settings.metrics_port,
        args.metrics_addr,
        runner.stop,
        probes(runner.settings.kafka, lambda: failure[0] if failure else None, ready),
    )
    started = time.monotonic()
    try:
        runner.run()
    except DuRootError as exc:
        failure.append(f"runner stopped: {exc}")
        log.error("runner stopped: %s", exc)
        return 1
    log.debug("runner ran", extra={"seconds": round(time.monotonic() - started, 1)})
    return 0
