"""`duroot-stream schedule`: a du of every root of a roots file, once per period."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from duroot_stream.client import DEFAULT_TIMEOUT_S, load_roots
from duroot_stream.config import ConfigError
from duroot_stream.scheduler import Scheduler, SchedulerSettings

from .daemon import probes, start_service
from .options import EXIT_OK, kafka_config, kafka_options
from .values import duration_s

log = logging.getLogger("duroot.scheduler")


def add_commands(sub: Any) -> None:
    """Register `schedule` on `duroot-stream`'s parser."""
    p = sub.add_parser("schedule", help="begin a du of every root of a roots file once per period")
    p.add_argument(
        "--roots-file",
        type=Path,
        required=True,
        help='TOML: [roots."<global root>"] registry_id, host, host_root (as begin reads)',
    )
    p.add_argument(
        "--every",
        type=duration_s,
        default=duration_s("24h"),
        metavar="DURATION",
        help="the period: each root once per period (e.g. 6h, 1d; default 24h); periods "
        "count from the Unix epoch, so every scheduler agrees on them",
    )
    p.add_argument(
        "--spread",
        type=duration_s,
        metavar="DURATION",
        help="begin the roots within this first part of each period, each at its own "
        "moment (default: the whole period; 0: all at its start)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the processor's reply (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument(
        "--retry",
        type=duration_s,
        default=duration_s("1m"),
        metavar="DURATION",
        help="after Kafka or the processor did not answer, try again this much later (default 1m)",
    )
    p.add_argument(
        "--metrics-port", type=int, help="serve /metrics, /healthz and /readyz on this port"
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of that port")
    kafka_options(p)
    p.set_defaults(handler=cli_main)


def settings_from_args(args: argparse.Namespace) -> SchedulerSettings:
    try:
        roots = load_roots(args.roots_file)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--roots-file: {exc}") from None
    if not roots:
        raise ConfigError(f"--roots-file: {args.roots_file} names no roots")
    try:
        return SchedulerSettings(
            kafka=kafka_config(args),
            roots=roots,
            every_s=args.every,
            spread_s=args.spread,
            command_timeout_s=args.timeout,
            retry_s=args.retry,
            metrics_port=args.metrics_port,
        )
    except ValueError as exc:
        raise ConfigError(f"--every/--spread: {exc}") from None


def cli_main(args: argparse.Namespace) -> int:
    scheduler = Scheduler(settings_from_args(args))

    def ready() -> str | None:
        return None if scheduler.ready.is_set() else "looking at what is due"

    start_service(
        log,
        scheduler.metrics.registry,
        scheduler.settings.metrics_port,
        args.metrics_addr,
        scheduler.stop,
        probes(scheduler.settings.kafka, lambda: None, ready),
    )
    log.info(
        "scheduling",
        extra={"roots": len(scheduler.settings.roots), "every_s": scheduler.settings.every_s},
    )
    scheduler.run()
    return EXIT_OK
