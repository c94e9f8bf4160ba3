"""`duroot-stream`: one program, one subcommand per role (DESIGN.md, "Command line")."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from duroot_stream import logs
from duroot_stream.config import ConfigError, KafkaConfig, parse_overrides

# Exit codes scripts can rely on (also in the README).
EXIT_OK = 0
EXIT_FAILED = 1  # the thing asked for failed (e.g. a failed workflow, a rejected command)
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_UNAVAILABLE = 3  # Kafka or the processor did not answer in time
EXIT_INCOMPLETE = 4  # `get`: the workflow has not completed (yet, or within --wait TIMEOUT)

Handler = Callable[[argparse.Namespace], int]


def kafka_config(args: argparse.Namespace) -> KafkaConfig:
    return KafkaConfig.from_env(
        bootstrap_servers=args.bootstrap_servers,
        topic_prefix=args.topic_prefix,
        schema_registry_url=args.schema_registry_url,
        overrides=parse_overrides(args.X or []),
    )


def _kafka_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Kafka")
    group.add_argument(
        "--bootstrap-servers", "-b", help="Kafka bootstrap servers [$DUROOT_BOOTSTRAP_SERVERS]"
    )
    group.add_argument("--topic-prefix", help="topic name prefix [$DUROOT_TOPIC_PREFIX]")
    group.add_argument(
        "--schema-registry-url", help="Confluent Schema Registry [$DUROOT_SCHEMA_REGISTRY_URL]"
    )
    group.add_argument(
        "-X", action="append", metavar="KEY=VALUE", help="librdkafka setting (repeatable)"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    parser.add_argument("--log-format", default="text", choices=["text", "json"])


def wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


# --- broker --------------------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
    from duroot_stream.broker import LocalBroker

    broker = LocalBroker(port=args.port, data_dir=args.data_dir)
    try:
        broker.start()
        print(f"bootstrap={broker.bootstrap}", flush=True)
        wait_for_signal()
    finally:
        broker.stop()
    return EXIT_OK


# --- topics --------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    from duroot_stream import topics

    config = kafka_config(args)
    if args.action == "create":
        created = topics.create_topics(config, partitions=args.partitions)
        for name in created:
            print(f"created {name}")
        counts = topics.check_topics(config)
    else:
        try:
            counts = topics.check_topics(config)
        except topics.TopicCheckError as exc:
            print(f"duroot-stream topics check: {exc}", file=sys.stderr)
            return EXIT_FAILED
    for name, count in sorted(counts.items()):
        print(f"ok {name} partitions={count}")
    return EXIT_OK


# --- the parser ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duroot-stream",
        description="du on registered file-system roots as an event-sourced workflow on Kafka",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="run a local single-node Kafka broker (KRaft)")
    p.add_argument("--port", type=int, help="listener port (default: a free one)")
    p.add_argument("--data-dir", type=Path, help="keep the broker's data here (default: temporary)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.set_defaults(handler=cmd_broker)

    p = sub.add_parser("topics", help="create or check the topics")
    p.add_argument("action", choices=["create", "check"])
    p.add_argument("--partitions", type=int, default=6, help="partitions of commands/events/index")
    _kafka_options(p)
    p.set_defaults(handler=cmd_topics)

    p = sub.add_parser("processor", help="run the command processor (exactly-once)")
    _kafka_options(p)
    from duroot_stream import processor

    processor.add_arguments(p)
    p.set_defaults(handler=processor.cli_main)

    p = sub.add_parser("runner", help="run du for one host's workflows (nogfsostad's role)")
    _kafka_options(p)
    from duroot_stream import runner

    runner.add_arguments(p)
    p.set_defaults(handler=runner.cli_main)

    from duroot_stream import client_cli  # begin, send, get, status, index, events

    client_cli.add_commands(sub)

    p = sub.add_parser(
        "run", help="the whole pipeline end to end: local broker, processor, runner, du of PATH"
    )
    _kafka_options(p)
    from duroot_stream import run

    run.add_arguments(p)
    # Progress lines tell the story; the services' own logs only when something is wrong.
    p.set_defaults(handler=run.cli_main, log_level="warning")

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
