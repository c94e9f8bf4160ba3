"""`duroot-stream processor`: settings from arguments, metrics, signals, the hung-call watchdog."""

from __future__ import annotations

import argparse
import logging
import re
import socket

from duroot_stream.config import ConfigError
from duroot_stream.processor import (
    FENCE_AFTER_S,
    GC_CHUNK_RECORDS,
    HUNG_CALL_S,
    Faults,
    Processor,
    ProcessorConfigError,
    ProcessorFatal,
    ProcessorSettings,
    exit_when_hung,
)
from duroot_stream.wire import TopicCheckError

from .daemon import probes, start_service
from .options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Subcommands, kafka_config, kafka_options

log = logging.getLogger("duroot.processor")


def add_commands(sub: Subcommands) -> None:
    """Register `processor` on `duroot-stream`'s parser."""
    parser = sub.add_parser("processor", help="run the command processor (exactly-once)")
    kafka_options(parser)
    parser.add_argument(
        "--instance-id",
        default=socket.gethostname(),
        help="stable id of this instance (transactional.id suffix)",
    )
    parser.add_argument("--group", default="duroot-processor", help="consumer group id")
    parser.add_argument(
        "--batch-size", type=int, default=1000, help="commands per transaction, at most"
    )
    parser.add_argument(
        "--commit-interval-ms",
        type=int,
        default=100,
        help="a transaction commits at the latest this long after its first command",
    )
    parser.add_argument(
        "--gc-interval", type=float, default=60.0, help="seconds between garbage-collection passes"
    )
    parser.add_argument(
        "--max-active",
        type=float,
        default=24 * 3600.0,
        help="seconds a workflow may stay active before AbortExpired",
    )
    parser.add_argument(
        "--delete-after",
        type=float,
        default=5 * 24 * 3600.0,
        help="seconds after completion before Delete",
    )
    parser.add_argument(
        "--gc-chunk-records",
        type=int,
        default=GC_CHUNK_RECORDS,
        help="records garbage collection puts into one transaction, at most (one command's "
        "own records are never split)",
    )
    parser.add_argument(
        "--restore-wait",
        type=float,
        help="seconds a restore waits for an open transaction of a previous owner before it "
        "stops as hanging (default: 70, or -X transaction.timeout.ms plus 30)",
    )
    parser.add_argument(
        "--fence-after",
        type=_seconds_or_off,
        default=FENCE_AFTER_S,
        metavar="SECONDS|off",
        help="a restore that still finds a previous owner's transaction open after this long "
        "ends it, if that owner has left the group, instead of waiting for the broker's "
        f"transaction timeout (default {FENCE_AFTER_S}; off: wait)",
    )
    parser.add_argument(
        "--standbys",
        type=_not_negative,
        default=0,
        metavar="N",
        help="keep the state of N other instances' partitions current, so that taking them "
        "over reads only what they wrote last (default 0: a takeover reads their state)",
    )
    parser.add_argument(
        "--reply-topics",
        metavar="REGEX",
        help="topics a command's reply-topic header may name, matched in full (default: the "
        "replies topic and <prefix>replies.*); never the commands, events, index or dlq topic",
    )
    parser.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    parser.add_argument("--metrics-addr", default="127.0.0.1", help="address for /metrics")
    parser.set_defaults(handler=cli_main)


def cli_main(
    args: argparse.Namespace, faults: Faults | None = None, hung_call_s: float = HUNG_CALL_S
) -> int:
    """Run the processor until SIGTERM or SIGINT. `faults` and a shorter `hung_call_s`
    are for tests (tests/reliability/faulty_processor.py)."""
    settings = ProcessorSettings(
        kafka=kafka_config(args),
        instance_id=args.instance_id,
        group_id=args.group,
        batch_size=args.batch_size,
        commit_interval_s=args.commit_interval_ms / 1000,
        gc_interval_s=args.gc_interval,
        max_active_s=args.max_active,
        delete_after_s=args.delete_after,
        gc_chunk_records=args.gc_chunk_records,
        restore_wait_s=args.restore_wait,
        fence_after_s=args.fence_after,
        standbys=args.standbys,
        metrics_port=args.metrics_port,
        reply_topics=_pattern(args.reply_topics),
    )
    processor = Processor(settings, faults=faults)

    def failed() -> str | None:
        if processor.failed:
            return "processor failed (see its log)"
        hung = processor.hung_call(2 * PROBE_HUNG_S)
        return None if hung is None else f"Kafka call {hung[0]} hung for {hung[1]:.0f} s"

    def ready() -> str | None:
        return None if processor.ready.is_set() else "partitions not assigned and restored yet"

    start_service(
        log,
        processor.metrics.registry,
        settings.metrics_port,
        args.metrics_addr,
        processor.stop,
        probes(settings.kafka, failed, ready),
    )
    exit_when_hung(processor.hung_call, hung_call_s)
    try:
        processor.run()
    except ProcessorConfigError as exc:
        log.error("processor stopped: %s", exc)
        return EXIT_USAGE
    except (ProcessorFatal, TopicCheckError) as exc:
        log.error("processor stopped: %s", exc)
        return EXIT_FAILED
    return EXIT_OK


PROBE_HUNG_S = 15.0  # a Kafka call this much past its usual time is a health problem


def _pattern(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        re.compile(text)
    except re.error as exc:
        raise ConfigError(f"--reply-topics {text!r}: not a regular expression ({exc})") from None
    return text


def _seconds_or_off(text: str) -> float | None:
    if text == "off":
        return None
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither seconds nor 'off'") from None
    if seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds cannot be negative")
    return seconds


def _not_negative(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if count < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot be negative")
    return count
