"""The operator tools: `duroot-stream acls print|apply`, the minimal ACLs of each
principal (see `ops.acls`); `duroot-stream transactions ...`, open and hanging
transactions (see `ops.transactions`)."""

from __future__ import annotations

import argparse
import sys

from duroot_stream.local import BrokerError
from duroot_stream.ops import transactions
from duroot_stream.ops.acls import (
    PROCESSOR_GROUP,
    AclError,
    Role,
    apply_acls,
    kafka_acls_command,
    required_acls,
)
from duroot_stream.ops.transactions import TransactionToolError
from duroot_stream.wire import Topics

from .options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Subcommands, kafka_config, kafka_options


def add_commands(sub: Subcommands) -> None:
    """Register `acls` and `transactions` on `duroot-stream`'s parser."""
    _add_acls(sub)
    _add_transactions(sub)


def cmd_acls(args: argparse.Namespace) -> int:
    config = kafka_config(args, probe=args.action == "apply")
    principals = {role: getattr(args, role.value) or [] for role in Role}
    if not any(principals.values()):
        print(
            "duroot-stream acls: name at least one principal "
            f"({', '.join('--' + role.value for role in Role)})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    acls = required_acls(config.topic_prefix, principals, args.processor_group)
    if args.action == "print":
        for acl in acls:
            print(kafka_acls_command(acl, config.bootstrap_servers))
        return EXIT_OK
    try:
        count = apply_acls(config, acls)
    except AclError as exc:
        print(f"duroot-stream acls apply: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"applied {count} ACLs for prefix {config.topic_prefix!r}")
    return EXIT_OK


def _add_acls(sub: Subcommands) -> None:
    p = sub.add_parser(
        "acls",
        help="the minimal ACLs of each principal: print them for kafka-acls.sh, or apply them",
    )
    p.add_argument("action", choices=["print", "apply"])
    for role in Role:
        p.add_argument(
            f"--{role.value}",
            action="append",
            metavar="PRINCIPAL",
            help=f"principal of a {role.value} (User:NAME or NAME; repeatable)",
        )
    p.add_argument(
        "--processor-group",
        default=PROCESSOR_GROUP,
        help="the processors' --group (also their transactional id prefix)",
    )
    kafka_options(p)
    p.set_defaults(handler=cmd_acls)


# --- transactions ---------------------------------------------------------------------

HANGING_AFTER_S = 50.0  # the processor's transaction timeout (40 s) + the abort check (10 s)


def cmd_transactions(args: argparse.Namespace) -> int:
    action, cc = args.action, args.command_config
    topic = args.topic[0] if args.topic else None
    needs = {"abort": ("topic", "partition", "start_offset"), "describe": ("transactional_id",)}
    needs["fence"] = ("transactional_id",)
    needs["describe-producers"] = ("topic", "partition")
    missing = [n for n in needs.get(action, ()) if getattr(args, n) is None]
    if missing:
        flags = ", ".join("--" + n.replace("_", "-") for n in missing)
        print(f"duroot-stream transactions {action}: give {flags}", file=sys.stderr)
        return EXIT_USAGE
    config = kafka_config(args)
    try:
        if action == "find-open":
            t = Topics(config.topic_prefix)
            names = args.topic or [t.events, t.index, t.replies, t.dlq]
            _print_open(transactions.open_transactions(config, names, args.older_than, cc), args)
        elif action == "find-hanging":
            rows = transactions.find_hanging(
                config, topic, args.partition, args.broker_id, args.max_transaction_timeout, cc
            )
            print("\n".join("\t".join(row) for row in rows))
            if len(rows) <= 1:
                print("no hanging transactions (open, and unknown to their coordinator)")
        elif action == "fence":
            transactions.fence(config, args.transactional_id)
            print(f"ended the open transaction of {args.transactional_id!r} (if any): aborted")
        elif action == "abort":
            assert topic is not None
            transactions.abort(config, topic, args.partition, args.start_offset, cc)
            print(f"aborted the transaction at {topic} [{args.partition}] @ {args.start_offset}")
        else:  # list, describe, describe-producers: Kafka's tool as it is
            extra = {
                "describe": ["--transactional-id", str(args.transactional_id)],
                "describe-producers": ["--topic", str(topic), "--partition", str(args.partition)],
            }.get(action, [])
            print(transactions.run_tool(config, [action, *extra], cc), end="")
    except (TransactionToolError, BrokerError) as exc:
        print(f"duroot-stream transactions {action}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _print_open(found: list[transactions.OpenTransaction], args: argparse.Namespace) -> None:
    if not found:
        print(f"no open transactions older than {args.older_than:.0f} s")
        return
    print("topic\tpartition\tlast-stable\thigh-watermark\tproducer-id\tstart-offset\tage-s\tid")
    for t in found:
        p = t.producer
        print(
            f"{t.topic}\t{t.partition}\t{t.stable}\t{t.high}\t{p.producer_id}\t"
            f"{p.transaction_start}\t{t.age_s:.0f}\t{t.transactional_id or '(none: hanging)'}"
        )
    # fence aborts a known transaction everywhere at once (a processor's events, index,
    # replies and consumed offsets together); abort only one partition's share of it.
    # A hanging one may have committed on its other partitions (a lost commit marker):
    # an abort then drops committed records, so it is named, not recommended.
    print("\nto end them (what they wrote is dropped; a processor redoes its commands;")
    print("for one without id, abort drops its records here even if it committed elsewhere:")
    print("see docs/operations.md before running it):")
    prefix = (
        f"duroot-stream transactions -b {args.bootstrap_servers or '$DUROOT_BOOTSTRAP_SERVERS'}"
    )
    for line in dict.fromkeys(" ".join(t.ending_args()) for t in found):
        print(f"  {prefix} {line}")


def _add_transactions(sub: Subcommands) -> None:
    p = sub.add_parser(
        "transactions",
        help="open and hanging Kafka transactions: find them, abort one "
        "(Kafka's kafka-transactions.sh from the cached jars; needs Java 17+)",
    )
    p.add_argument(
        "action",
        choices=[
            "find-open",
            "find-hanging",
            "fence",
            "abort",
            "list",
            "describe",
            "describe-producers",
        ],
        help="find-open: partitions of the pipeline's topics whose last stable offset is held "
        "back, the producers holding them and how to end each; find-hanging: KIP-664's "
        "hanging transactions (open, unknown to their coordinator); fence: abort the open "
        "transaction of --transactional-id on every partition (and fence its producer); "
        "abort: write an abort marker for the transaction at --start-offset of one partition "
        "(for a hanging one; it drops those records, committed elsewhere or not)",
    )
    p.add_argument(
        "--topic",
        action="append",
        help="find-open: topics to look at (repeatable; default: the events, index, replies "
        "and dead-letter topics); the others: the topic",
    )
    p.add_argument("--partition", type=int)
    p.add_argument("--start-offset", type=int, help="abort: where the transaction starts")
    p.add_argument("--broker-id", type=int, help="find-hanging: only this broker's partitions")
    p.add_argument(
        "--max-transaction-timeout",
        type=int,
        default=1,
        metavar="MINUTES",
        help="find-hanging: only transactions open longer than this (Kafka's default: 15)",
    )
    p.add_argument(
        "--older-than",
        type=float,
        default=HANGING_AFTER_S,
        metavar="SECONDS",
        help="find-open: only transactions whose producer last wrote longer ago "
        f"(default {HANGING_AFTER_S:.0f}: the processor's transaction timeout + the abort check)",
    )
    p.add_argument("--transactional-id", help="describe, fence: the transactional id")
    p.add_argument(
        "--command-config",
        metavar="FILE",
        help="Java client properties for the tool (TLS, SASL), as for kafka-transactions.sh",
    )
    kafka_options(p)
    p.set_defaults(handler=cmd_transactions)
