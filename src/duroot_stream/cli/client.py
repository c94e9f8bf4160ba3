"""The requester and reader subcommands: begin, send, get, status, index, events.

Each handler parses nothing and decides nothing: it calls `DuRootClient` or
`DuRootReader` and prints. Output is for people by default (aligned columns,
`--human` sizes) and one JSON object per line with `--json`. Errors map to the
exit codes in `cli` (and the README): a rejected command, a failed or missing
workflow 1, bad arguments 2, Kafka or the processor not answering 3, a
workflow not complete yet 4.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, TextIO

from duroot_stream.client import (
    CommandRejected,
    DuResult,
    DuRootClient,
    DuRootError,
    DuRootReader,
    IndexEntry,
    Progress,
    StoredEvent,
    Unavailable,
    WaitTimeout,
    WorkflowStatus,
    make_command,
)
from duroot_stream.client.requester import DEFAULT_BATCH_SIZE, DEFAULT_TIMEOUT_S
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    AbortExpired,
    CommandBody,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    End,
    Fail,
    PathUsage,
    WorkflowEvent,
)

from . import options
from .options import kafka_config, kafka_options


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register the subcommands on `duroot-stream`'s parser."""
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
        vc.add_argument("--no-vc", action="store_true", help="no version check (the default)")
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

    p = sub.add_parser("get", help="print the du result of a workflow")
    p.add_argument("workflow", help="workflow UUID")
    p.add_argument(
        "--wait",
        nargs="?",
        type=float,
        const=-1.0,
        metavar="TIMEOUT",
        help="follow until the workflow completes (at most TIMEOUT seconds)",
    )
    p.add_argument("--verbose", "-v", action="store_true", help="print `# workflowVid:` first")
    _output_options(p, human=True)
    p.add_argument("-0", "--null", action="store_true", help="end lines with NUL, like du -0")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    kafka_options(p)
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("status", help="state, vid, counts and times of a workflow")
    p.add_argument("workflow", help="workflow UUID")
    _output_options(p)
    kafka_options(p)
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("index", help="list workflows from the index table")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--active", action="store_true", help="only running workflows")
    which.add_argument("--completed", action="store_true", help="only completed workflows")
    p.add_argument("--registry", help="only this registry (UUID)")
    _output_options(p)
    kafka_options(p)
    p.set_defaults(handler=cmd_index)

    p = sub.add_parser("events", help="print the workflow event stream")
    p.add_argument("--follow", "-f", action="store_true", help="wait for new events (Ctrl-C)")
    p.add_argument("--from-now", action="store_true", help="start at the end, not the beginning")
    p.add_argument("--workflow", help="only this workflow (reads only its partition)")
    _output_options(p)
    kafka_options(p)
    p.set_defaults(handler=cmd_events)


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


def _output_options(p: argparse.ArgumentParser, human: bool = False) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    if human:
        p.add_argument("--human", "-H", action="store_true", help="sizes like 1.2G")


# --- running a handler ------------------------------------------------------------


def _run(name: str, args: argparse.Namespace, body: Callable[[], int]) -> int:
    """Run a handler body; map errors to exit codes and one line on stderr."""
    try:
        return body()
    except CommandRejected as exc:
        code = exc.error_code.value if exc.error_code else "REJECTED"
        _error(name, f"{code}: {exc}")
        return options.EXIT_FAILED
    except WaitTimeout as exc:
        _error(name, str(exc))
        return options.EXIT_INCOMPLETE
    except Unavailable as exc:
        _error(name, str(exc))
        return options.EXIT_UNAVAILABLE
    except DuRootError as exc:
        _error(name, str(exc))
        return options.EXIT_FAILED
    except (ValueError, OSError) as exc:
        _error(name, str(exc))
        return options.EXIT_USAGE


def _error(name: str, message: str) -> None:
    print(f"duroot-stream {name}: {message}", file=sys.stderr)


def _config(args: argparse.Namespace) -> KafkaConfig:
    return kafka_config(args)


def _print_json(obj: dict[str, Any], out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(obj, ensure_ascii=False) + "\n")


# --- begin and send -------------------------------------------------------------------


@dataclass(frozen=True)
class Root:
    """Where a global root lives (what nog's registry knows)."""

    registry_id: str
    host: str
    host_root: str


def load_roots(path: Path) -> dict[str, Root]:
    """A roots file: `[roots."<global root>"]` tables with `registry_id`, `host` and
    `host_root`. ValueError naming the file and the entry when something is wrong."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"roots file {path}: {exc}") from None
    roots = data.get("roots")
    if not isinstance(roots, dict):
        raise ValueError(f'roots file {path}: no [roots."<global root>"] tables')
    out = {}
    for global_root, entry in roots.items():
        fields = {}
        for name in ("registry_id", "host", "host_root"):
            value = entry.get(name) if isinstance(entry, dict) else None
            if not isinstance(value, str) or not value:
                raise ValueError(f'roots file {path}: [roots."{global_root}"] needs {name}')
            fields[name] = value
        out[global_root] = Root(**fields)
    return out


def cmd_begin(args: argparse.Namespace) -> int:
    def body() -> int:
        root = _root_for(args)
        with DuRootClient(_config(args), timeout=args.timeout) as client:
            begun = client.begin(
                root.registry_id,
                args.global_root,
                root.host,
                root.host_root,
                workflow_id=args.workflow,
            )
        if args.json:
            _print_json({"workflow_id": begun.workflow_id, "vid": begun.vid})
        else:
            print(f"workflowId: {begun.workflow_id}")
            print(f"workflowVid: {begun.vid}")
        return 0

    return _run("begin", args, body)


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
        with DuRootClient(_config(args), timeout=args.timeout) as client:
            if args.action == "append":
                paths = list(read_lines(args.file, b"\0" if args.null else b"\n"))
                vid = client.append_many(
                    args.workflow, paths, batch_size=args.batch_size, expected_vid=expected
                )
            else:
                command = make_command(args.workflow, _body(args), expected)
                vid = client.send(command)
        if args.json:
            _print_json({"workflow_id": args.workflow, "vid": vid})
        else:
            print(f"workflowVid: {vid}")
        return 0

    return _run(name, args, body)


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
                "the runner escapes other bytes with duroot_stream.runner.du.escape_path)"
            ) from None
        yield PathUsage(text, int(usage))


# --- get ------------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace) -> int:
    def body() -> int:
        wait = args.wait is not None
        timeout = args.wait if wait and args.wait >= 0 else None
        progress = None if args.quiet or not wait else _progress_printer(sys.stderr)
        with DuRootReader(_config(args)) as reader:
            result = reader.get_du(args.workflow, wait=wait, timeout=timeout, progress=progress)
        if result.failed:
            result.raise_for_status()
        print_du(
            result,
            sys.stdout,
            verbose=args.verbose,
            as_json=args.json,
            human=args.human,
            end="\0" if args.null else "\n",
        )
        if not result.complete:
            _error(
                "get",
                f"workflow {result.workflow_id} is still running (state {result.state.name}, "
                f"{len(result.lines)} lines so far); use --wait to wait for it",
            )
            return options.EXIT_INCOMPLETE
        return options.EXIT_OK

    return _run("get", args, body)


def _progress_printer(err: TextIO) -> Callable[[Progress], None]:
    def show(p: Progress) -> None:
        print(
            f"waiting for workflow {p.workflow_id}: {p.state.name}, {p.lines} lines so far",
            file=err,
            flush=True,
        )

    return show


def print_du(
    result: DuResult,
    out: TextIO,
    *,
    verbose: bool = False,
    as_json: bool = False,
    human: bool = False,
    end: str = "\n",
) -> None:
    """`<usage> <path>` per line, as nog's `nogfsoctl du get root` prints them."""
    if as_json:
        if verbose:
            _print_json(
                {
                    "workflow_id": result.workflow_id,
                    "vid": result.vid,
                    "complete": result.complete,
                    "status_code": result.status_code,
                    "status_message": result.status_message,
                },
                out,
            )
        for line in result.lines:
            _print_json({"usage": line.usage, "path": line.path}, out)
        return
    if verbose:
        out.write(f"# workflowVid: {result.vid}{end}")
    if human:
        sizes = [human_size(line.usage) for line in result.lines]
        width = max(map(len, sizes), default=0)
        out.writelines(
            f"{size:>{width}} {line.path}{end}"
            for size, line in zip(sizes, result.lines, strict=True)
        )
    else:
        out.writelines(f"{line.usage} {line.path}{end}" for line in result.lines)


def human_size(n: int) -> str:
    """Bytes as `du -h` shows them: 512, 1.2K, 34M, 1.0G (powers of 1024)."""
    if n < 1024:
        return str(n)
    value = float(n)
    for unit in "KMGTPE":
        value /= 1024
        if value < 1024 or unit == "E":
            return f"{value:.1f}{unit}" if value < 10 else f"{value:.0f}{unit}"
    raise AssertionError("unreachable")


# --- status and index ---------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    def body() -> int:
        with DuRootReader(_config(args)) as reader:
            status = reader.status(args.workflow)
        if args.json:
            _print_json(status_json(status))
        else:
            print_fields(status_rows(status), sys.stdout)
        return 0

    return _run("status", args, body)


def status_json(s: WorkflowStatus) -> dict[str, Any]:
    return {
        "workflow_id": s.workflow_id,
        "state": s.state.name,
        "vid": s.vid,
        "events": s.events,
        "lines": s.lines,
        "registry_id": s.registry_id,
        "global_root": s.global_root,
        "host": s.host,
        "host_root": s.host_root,
        "started_at": iso_time(s.started_at_ms),
        "completed_at": iso_time(s.completed_at_ms),
        "status_code": s.status_code,
        "status_message": s.status_message,
        "partition": s.partition,
    }


def status_rows(s: WorkflowStatus) -> list[tuple[str, str]]:
    status = "-" if s.status_code is None else f"{s.status_code} {s.status_message}".rstrip()
    return [
        ("workflow", s.workflow_id),
        ("state", s.state.name),
        ("vid", s.vid),
        ("registry", s.registry_id),
        ("global root", s.global_root),
        ("host", s.host),
        ("host root", s.host_root),
        ("events", str(s.events)),
        ("lines", str(s.lines)),
        ("started", iso_time(s.started_at_ms) or "-"),
        ("completed", iso_time(s.completed_at_ms) or "-"),
        ("status", status),
        ("partition", str(s.partition)),
    ]


def print_fields(rows: Sequence[tuple[str, str]], out: TextIO) -> None:
    width = max(len(k) for k, _ in rows)
    out.writelines(f"{k:<{width}}  {v}\n" for k, v in rows)


def cmd_index(args: argparse.Namespace) -> int:
    def body() -> int:
        with DuRootReader(_config(args)) as reader:
            entries = list(reader.index(registry_id=args.registry).values())
        if args.active:
            entries = [e for e in entries if e.state == "active"]
        elif args.completed:
            entries = [e for e in entries if e.state == "completed"]
        if args.json:
            for e in entries:
                _print_json(index_json(e))
        else:
            print_table(
                ["WORKFLOW", "STATE", "STATUS", "STARTED", "GLOBAL ROOT", "HOST", "HOST ROOT"],
                [index_row(e) for e in entries],
                sys.stdout,
            )
        return 0

    return _run("index", args, body)


def index_json(e: IndexEntry) -> dict[str, Any]:
    return {
        "workflow_id": e.workflow_id,
        "registry_id": e.registry_id,
        "state": e.state,
        "global_root": e.global_root,
        "host": e.host,
        "host_root": e.host_root,
        "started_at": iso_time(e.started_at_ms),
        "completed_at": iso_time(e.completed_at_ms),
        "status_code": e.status_code,
        "status_message": e.status_message,
    }


def index_row(e: IndexEntry) -> list[str]:
    status = "" if e.status_code is None else f"{e.status_code} {e.status_message}".rstrip()
    return [
        e.workflow_id,
        e.state,
        status or "-",
        iso_time(e.started_at_ms) or "-",
        e.global_root or "-",
        e.host or "-",
        e.host_root or "-",
    ]


def print_table(header: list[str], rows: list[list[str]], out: TextIO) -> None:
    """Columns aligned to the widest cell; the last column is not padded."""
    cells = [header, *([printable(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        out.write("  ".join([*padded, row[-1]]) + "\n")


# --- events ---------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> int:
    def body() -> int:
        stop = threading.Event()
        if args.follow:
            where = f"workflow {args.workflow}" if args.workflow else "all workflows"
            print(f"following the events of {where} (Ctrl-C to stop)", file=sys.stderr)
        out = sys.stdout
        if not args.json:
            out.write(f"{'PARTITION@OFFSET':<17} {'TIME':<24} {'EVENT':<40} TYPE       DETAIL\n")
        with DuRootReader(_config(args)) as reader:
            try:
                for stored in reader.events(
                    from_beginning=not args.from_now,
                    follow=args.follow,
                    workflow_id=args.workflow,
                    stop=stop,
                ):
                    if args.json:
                        _print_json(event_json(stored), out)
                    else:
                        out.write(event_line(stored) + "\n")
                    if args.follow:
                        out.flush()
            except KeyboardInterrupt:
                stop.set()
        return 0

    return _run("events", args, body)


def event_type(event: WorkflowEvent | None) -> str:
    match event.payload if event else None:
        case DuRootStarted():
            return "STARTED"
        case DuUpdated():
            return "UPDATED"
        case DuRootCompleted():
            return "COMPLETED"
        case DuRootCommitted():
            return "COMMITTED"
    return "DELETED"  # a tombstone


def event_json(s: StoredEvent) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "partition": s.partition,
        "offset": s.offset,
        "timestamp": iso_time(s.timestamp_ms),
        "workflow_id": s.workflow_id,
        "seq": s.seq,
        "type": event_type(s.event),
    }
    if s.event is not None:
        e = s.event
        obj |= {"vid": e.event_id, "parent": e.parent, "command_id": e.command_id}
        match e.payload:
            case DuRootStarted() as p:
                obj |= {
                    "registry_id": p.registry_id,
                    "global_root": p.global_root,
                    "host": p.host,
                    "host_root": p.host_root,
                }
            case DuUpdated() as p:
                obj |= {"path": p.path, "usage": p.usage}
            case DuRootCompleted() as p:
                obj |= {"status_code": p.status_code, "status_message": p.status_message}
    return obj


def event_line(s: StoredEvent) -> str:
    detail = ""
    match s.event.payload if s.event else None:
        case DuRootStarted() as p:
            detail = f"{p.global_root} on {p.host}:{p.host_root} (registry {p.registry_id})"
        case DuUpdated() as p:
            detail = f"{p.usage} {p.path}"
        case DuRootCompleted() as p:
            detail = f"status {p.status_code} {p.status_message}".rstrip()
    where = f"{s.partition}@{s.offset}"
    name = f"{s.workflow_id}/{s.seq}"
    stamp = iso_time(s.timestamp_ms) or "-"
    return f"{where:<17} {stamp:<24} {name:<40} {event_type(s.event):<10} {printable(detail)}"


# --- formatting -----------------------------------------------------------------------


def iso_time(ms: int | None) -> str | None:
    """Milliseconds since the epoch as `2026-01-02T03:04:05.678Z`; None stays None."""
    if ms is None or ms <= 0:
        return None
    t = datetime.fromtimestamp(ms / 1000, UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def printable(text: str) -> str:
    """Control characters escaped, so one value stays on one table line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
