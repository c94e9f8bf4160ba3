"""`duroot-stream acls print|apply`: the minimal ACLs of each principal (see `acls`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from duroot_stream.acls import (
    PROCESSOR_GROUP,
    AclError,
    Role,
    apply_acls,
    kafka_acls_command,
    required_acls,
)

from .options import EXIT_FAILED, EXIT_OK, EXIT_USAGE, kafka_config, kafka_options


def cmd_acls(args: argparse.Namespace) -> int:
    config = kafka_config(args, probe=args.action == "apply")
    principals = {role: getattr(args, role.value) or [] for role in Role}
    if not any(principals.values()):
        print(
            "duroot-stream acls: name at least one principal "
            "(--processor, --runner, --requester, --reader)",
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


def add_commands(sub: Any) -> None:
    """Register `acls` on `duroot-stream`'s parser."""
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
