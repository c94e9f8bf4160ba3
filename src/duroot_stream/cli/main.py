"""`duroot-stream`: one program, one subcommand per role; the parser and `main`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import KafkaException

from duroot_stream import logs
from duroot_stream.compiled import BUILD
from duroot_stream.config import ConfigError
from duroot_stream.version import VERSION
from duroot_stream.wire import (
    DEFAULT_PARTITIONS,
    TopicCheckError,
    check_topics,
    create_topics,
)

from . import begin as begin_commands
from . import dlq as dlq_commands
from . import ops as ops_commands
from . import processor as processor_command
from . import reader as reader_commands
from . import run as run_command
from . import runner as runner_command
from . import web as web_command
from .options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    kafka_config,
    kafka_options,
    wait_for_signal,
)

Handler = Callable[[argparse.Namespace], int]

# --- broker --------------------------------------------------------------------


def cmd_broker(args: argparse.Namespace) -> int:
    from duroot_stream.local.broker import LocalBroker

    if args.nodes != 1:
        return _cluster(args)
    roles = {role: "" for role in ("processor", "runner", "requester", "reader")}
    broker = LocalBroker(
        port=args.port, data_dir=args.data_dir, security=args.security, users=roles
    )
    try:
        broker.start()
        print(f"bootstrap={broker.bootstrap}", flush=True)
        if broker.secured:  # one -F FILE per SCRAM user (admin: the super user)
            for user in ("admin", *roles):
                print(f"config.{user}={broker.client_file(user)}", flush=True)
        wait_for_signal()
    finally:
        broker.stop()
    return EXIT_OK


def _cluster(args: argparse.Namespace) -> int:
    from duroot_stream.local.cluster import LocalCluster

    if args.nodes < 1 or args.port is not None or args.security != "plaintext":
        print(
            f"duroot-stream broker --nodes {args.nodes}: one or more nodes, plaintext, "
            "ports chosen freely (leave out --port and --security)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    cluster = LocalCluster(args.nodes, base_dir=args.data_dir)
    try:
        cluster.start()
        print(f"bootstrap={cluster.bootstrap}", flush=True)
        wait_for_signal()
    finally:
        cluster.stop()
    return EXIT_OK


# --- topics --------------------------------------------------------------------


def cmd_topics(args: argparse.Namespace) -> int:
    config = kafka_config(args)
    replication = {
        "replication_factor": args.replication_factor,
        "min_insync_replicas": args.min_insync_replicas,
    }
    try:
        if args.action == "create":
            partitions = args.partitions or DEFAULT_PARTITIONS
            for name in create_topics(config, partitions=partitions, **replication):
                print(f"created {name}")
            counts = check_topics(config, partitions=partitions, **replication)
        else:
            counts = check_topics(config, partitions=args.partitions, **replication)
    except TopicCheckError as exc:
        print(f"duroot-stream topics {args.action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KafkaException as exc:
        print(
            f"duroot-stream topics {args.action}: Kafka at {config.bootstrap_servers} did not "
            f"answer: {exc.args[0] if exc.args else exc} (check --bootstrap-servers)",
            file=sys.stderr,
        )
        return EXIT_UNAVAILABLE
    for name, count in sorted(counts.items()):
        print(f"ok {name} partitions={count}")
    return EXIT_OK


# --- the parser ----------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duroot-stream",
        description="du on registered file-system roots as an event-sourced workflow on Kafka",
    )
    parser.add_argument(
        "--version", action="version", version=f"duroot-stream {VERSION} ({BUILD} build)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="run a local Kafka broker or cluster (KRaft)")
    p.add_argument("--port", type=int, help="listener port (default: a free one)")
    p.add_argument("--data-dir", type=Path, help="keep the broker's data here (default: temporary)")
    p.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="3: a cluster of combined broker+controller nodes on loopback, one quorum, "
        "replication 3 and min.insync.replicas 2 (plaintext; prints all nodes' addresses)",
    )
    p.add_argument(
        "--security",
        default="plaintext",
        choices=["plaintext", "sasl_ssl"],
        help="sasl_ssl: TLS, SCRAM-SHA-512 users admin, processor, runner, requester, reader "
        "and the StandardAuthorizer; prints config.USER=FILE, each user's -F FILE",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-format", default="text", choices=["text", "json"])
    p.set_defaults(handler=cmd_broker)

    p = sub.add_parser("topics", help="create or check the topics")
    p.add_argument("action", choices=["create", "check"])
    p.add_argument(
        "--partitions",
        type=int,
        help=f"partitions of commands/events/index (create: default {DEFAULT_PARTITIONS}; "
        "check: that they have this many); it can never change once workflows exist",
    )
    p.add_argument(
        "--replication-factor",
        type=int,
        help="replicas per partition (default: 3 with three or more brokers, else their count)",
    )
    p.add_argument(
        "--min-insync-replicas",
        type=int,
        help="min.insync.replicas (default: 2 with three or more replicas, else 1)",
    )
    kafka_options(p)
    p.set_defaults(handler=cmd_topics)

    p = sub.add_parser("processor", help="run the command processor (exactly-once)")
    kafka_options(p)
    processor_command.add_arguments(p)
    p.set_defaults(handler=processor_command.cli_main)

    p = sub.add_parser("runner", help="run du for one host's workflows (nogfsostad's role)")
    kafka_options(p)
    runner_command.add_arguments(p)
    p.set_defaults(handler=runner_command.cli_main)

    begin_commands.add_commands(sub)  # begin, send
    reader_commands.add_commands(sub)  # get, status, index, events
    dlq_commands.add_commands(sub)  # list, show, replay

    p = sub.add_parser("serve", help="the web view: workflows, du results, live progress")
    kafka_options(p)
    web_command.add_arguments(p)
    p.set_defaults(handler=web_command.cli_main)

    ops_commands.add_commands(sub)  # acls print, acls apply

    p = sub.add_parser(
        "run", help="the whole pipeline end to end: local broker, processor, runner, du of PATH"
    )
    kafka_options(p)
    run_command.add_arguments(p)
    # Progress lines tell the story; the services' own logs only when something is wrong.
    p.set_defaults(handler=run_command.cli_main, log_level="warning")

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
