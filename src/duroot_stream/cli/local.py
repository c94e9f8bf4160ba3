"""`duroot-stream broker`: a local Kafka broker or cluster (KRaft) for development
and tests, from the cached jars (`duroot_stream.local`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .options import EXIT_OK, EXIT_USAGE, Subcommands, wait_for_signal


def add_commands(sub: Subcommands) -> None:
    """Register `broker` on `duroot-stream`'s parser."""
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


def cmd_broker(args: argparse.Namespace) -> int:
    from duroot_stream.local.broker import LocalBroker

    if args.nodes != 1:
        return _cluster(args)
    from duroot_stream.ops.acls import Role

    roles = {role.value: "" for role in Role}  # a SCRAM user per role of the ACL table
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
