"""`duroot-stream exporter`: the latest du of every root as Prometheus metrics."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from duroot_stream.config import ConfigError
from duroot_stream.exporter import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SERIES, Exporter, ExporterSettings

from .daemon import probes, start_service
from .options import EXIT_OK, kafka_config, kafka_options

log = logging.getLogger("duroot.exporter")

DEFAULT_METRICS_PORT = 9466


def add_commands(sub: Any) -> None:
    """Register `exporter` on `duroot-stream`'s parser."""
    p = sub.add_parser(
        "exporter",
        help="serve the latest du of every root as Prometheus metrics (duroot_usage_*)",
    )
    p.add_argument(
        "--max-depth",
        type=int,
        default=DEFAULT_MAX_DEPTH,
        help=f"deepest path served: 0 the root only, 1 its directories, ... "
        f"(default {DEFAULT_MAX_DEPTH})",
    )
    p.add_argument(
        "--max-series",
        type=int,
        default=DEFAULT_MAX_SERIES,
        help="at most this many duroot_usage_bytes series; paths beyond are dropped and "
        f"counted in duroot_exporter_dropped_series_total (default {DEFAULT_MAX_SERIES})",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help=f"serve /metrics, /healthz and /readyz on this port (default {DEFAULT_METRICS_PORT})",
    )
    p.add_argument("--metrics-addr", default="127.0.0.1", help="address of that port")
    kafka_options(p)
    p.set_defaults(handler=cli_main)


def settings_from_args(args: argparse.Namespace) -> ExporterSettings:
    if args.max_depth < 0:
        raise ConfigError(f"--max-depth must be 0 or more, got {args.max_depth}")
    if args.max_series < 1:
        raise ConfigError(f"--max-series must be 1 or more, got {args.max_series}")
    return ExporterSettings(
        kafka=kafka_config(args),
        max_depth=args.max_depth,
        max_series=args.max_series,
        metrics_port=args.metrics_port,
    )


def cli_main(args: argparse.Namespace) -> int:
    exporter = Exporter(settings_from_args(args))

    def ready() -> str | None:
        return None if exporter.ready.is_set() else "reading the events topic to its end"

    start_service(
        log,
        exporter.metrics.registry,
        exporter.settings.metrics_port,
        args.metrics_addr,
        exporter.stop,
        probes(exporter.settings.kafka, lambda: exporter.problem, ready),
    )
    exporter.run()
    return EXIT_OK
