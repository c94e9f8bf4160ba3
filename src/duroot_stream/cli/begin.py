"""`begin` and `send`: publish commands with `DuRootClient` and print the new vid.

Each handler parses nothing and decides nothing: it calls the client and
prints, one JSON object with `--json`; errors end as `output.run_handler` says.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from duroot_stream.client import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_TIMEOUT_S,
    DuRootClient,
    Root,
    load_roots,
    make_command,
)
from duroot_stream.domain import (
    NO_VC,
    AbortExpired,
    CommandBody,
    Commit,
    Delete,
    End,
    Fail,
    PathUsage,
)

from .options import Subcommands, kafka_config, kafka_options
from .output import print_json, run_handler


def add_commands(sub: Subcommands) -> None:
    """Register begin and send on `duroot-stream`'s parser."""
    p = sub.add_parser("begin", help="begin a du of a root (publish Init)")
    p.add_argument("--global-root", required=True, help="the root's global path")
    p.add_argument("--registry-id", help="registry UUID")
    p.add_argument("--host", help="file server that runs du")
    p.add_argument("--host-root", help="the root's path on that host")
    p.add_argument(
        "--roots-file",
        type=Path,
        help='TOML: [roots."<global root>"] registry_id, host, host_root',
    )
    p.add_argument("--workflow", help="workflow UUID (default: a new random one)")
    p.add_argument(
        "--no-vid",
        action="store_true",
        help="accepted for nogfsoctl's sake: an Init never checks a version",
    )
    _command_options(p)
    kafka_options(p)
    p.set_defaults(handler=cmd_begin)

    p = sub.add_parser("send", help="publish one command (for scripts)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, help_text in _SEND_ACTIONS.items():
        a = actions.add_parser(action, help=help_text)
        a.add_argument("workflow", help="workflow UUID")
        vc = a.add_mutually_exclusive_group()
        vc.add_argument("--vid", help="expected vid: fail unless the workflow is at it")
        vc.add_argument(
            "--no-vc", "--no-vid", action="store_true", help="no version check (the default)"
        )
        if action == "append":
            a.add_argument(
                "--file",
                type=argparse.FileType("rb"),
                default="-",
                help="lines `<usage> <path>` (bytes; `get` prints them), default stdin",
            )
            a.add_argument(
                "-0", "--null", action="store_true", help="lines end with NUL, not newline"
            )
            a.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
        if action == "fail":
            a.add_argument("--code", type=int, default=1, help="status code, not 0 (default 1)")
            a.add_argument("--message", required=True, help="status message")
        _command_options(a)
        kafka_options(a)
        a.set_defaults(handler=cmd_send)


_SEND_ACTIONS = {
    "append": "append du lines (`<usage> <path>` per line)",
    "commit": "complete the workflow successfully",
    "fail": "complete the workflow as failed",
    "abort-expired": "complete an active workflow as expired (status 104)",
    "end": "end a completed workflow",
    "delete": "delete a completed workflow's history",
}


def _command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        help=f"seconds to wait for the processor's reply (default {DEFAULT_TIMEOUT_S:g})",
    )
    p.add_argument("--json", action="store_true", help="print a JSON object")


def cmd_begin(args: argparse.Namespace) -> int:
    def body() -> int:
        root = _root_for(args)
        with DuRootClient(kafka_config(args), timeout=args.timeout) as client:
            begun = client.begin(
                root.registry_id,
                args.global_root,
                root.host,
                root.host_root,
                workflow_id=args.workflow,
            )
        if args.json:
            print_json({"workflow_id": begun.workflow_id, "vid": begun.vid})
        else:
            print(f"workflowId: {begun.workflow_id}")
            print(f"workflowVid: {begun.vid}")
        return 0

    return run_handler("begin", body)


def _root_for(args: argparse.Namespace) -> Root:
    """Registry, host and host root: from the flags, else from the roots file."""
    known = None
    if args.roots_file is not None:
        known = load_roots(args.roots_file).get(args.global_root)
        if known is None:
            raise ValueError(f"global root {args.global_root!r} is not in {args.roots_file}")
    fields = {
        "registry_id": args.registry_id or (known.registry_id if known else None),
        "host": args.host or (known.host if known else None),
        "host_root": args.host_root or (known.host_root if known else None),
    }
    missing = [f"--{k.replace('_', '-')}" for k, v in fields.items() if not v]
    if missing:
        raise ValueError(f"missing {', '.join(missing)} (or give --roots-file)")
    return Root(**{k: str(v) for k, v in fields.items()})


def cmd_send(args: argparse.Namespace) -> int:
    name = f"send {args.action}"

    def body() -> int:
        expected = args.vid or NO_VC
        with DuRootClient(kafka_config(args), timeout=args.timeout) as client:
            if args.action == "append":
                paths = list(read_lines(args.file, b"\0" if args.null else b"\n"))
                vid = client.append_many(
                    args.workflow, paths, batch_size=args.batch_size, expected_vid=expected
                )
            else:
                command = make_command(args.workflow, _body(args), expected)
                vid = client.send(command)
        if args.json:
            print_json({"workflow_id": args.workflow, "vid": vid})
        else:
            print(f"workflowVid: {vid}")
        return 0

    return run_handler(name, body)


def _body(args: argparse.Namespace) -> CommandBody:
    match args.action:
        case "commit":
            return Commit()
        case "fail":
            return Fail(args.code, args.message)
        case "abort-expired":
            return AbortExpired()
        case "end":
            return End()
        case "delete":
            return Delete()
    raise ValueError(f"unknown action {args.action}")


def read_lines(stream: IO[bytes], end: bytes = b"\n") -> Iterator[PathUsage]:
    """`<usage> <path>` records (what `get` prints): usage in bytes, one space or
    tab, the path as is (UTF-8, as stored). Empty records are skipped."""
    data = stream.read()
    for number, record in enumerate(data.split(end), 1):
        if end == b"\n":
            record = record.removesuffix(b"\r")
        if not record:
            continue
        usage, sep, path = record.partition(b" ")
        if not sep:
            usage, sep, path = record.partition(b"\t")
        if not sep or not usage.isdigit():
            raise ValueError(f"line {number}: expected `<usage> <path>`, got {record[:80]!r}")
        try:
            text = path.decode()
        except UnicodeDecodeError:
            raise ValueError(
                f"line {number}: the path is not UTF-8 (paths are stored as UTF-8 text; "
                "the runner escapes other bytes with duroot_stream.runner.paths.escape_path)"
            ) from None
        yield PathUsage(text, int(usage))
