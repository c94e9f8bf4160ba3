"""`duroot-stream topics create|check`: the pipeline's topics, made or checked
(`wire.create_topics`, `wire.check_topics`)."""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaException

from duroot_stream.wire import DEFAULT_PARTITIONS, TopicCheckError, check_topics, create_topics

from .options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    Subcommands,
    kafka_config,
    kafka_options,
)


def add_commands(sub: Subcommands) -> None:
    """Register `topics` on `duroot-stream`'s parser."""
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
