"""`get`, `status`, `index` and `events`: read with `DuRootReader` and print.

Output is for people by default (aligned columns, `--human` sizes) and one
JSON object per line with `--json`; errors end as `output.run_handler` says.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from duroot_stream.client import (
    DuRootError,
    DuRootReader,
    IndexEntry,
    Progress,
    StoredEvent,
    WorkflowStatus,
)
from duroot_stream.domain import DuRootCompleted, DuRootStarted, DuUpdated, WorkflowEvent
from duroot_stream.wire import EVENT_TYPES

from .options import EXIT_INCOMPLETE, EXIT_OK, Subcommands, kafka_config, kafka_options
from .output import (
    error,
    iso_time,
    print_du,
    print_fields,
    print_json,
    print_table,
    printable,
    run_handler,
)
from .values import duration_s


def add_commands(sub: Subcommands) -> None:
    """Register get, status, index and events on `duroot-stream`'s parser."""
    p = sub.add_parser("get", help="print the du result of a workflow")
    p.add_argument("workflow", help="workflow UUID")
    p.add_argument(
        "--wait",
        nargs="?",
        type=duration_s,
        const=-1.0,
        metavar="DURATION",
        help="follow until the workflow completes (at most DURATION: seconds, 90s, 5m, 1h30m)",
    )
    p.add_argument(
        "--verbose", "-v", action="store_true", help="print `# workflowVid: <vid>` after the lines"
    )
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
    p.add_argument(
        "--follow", "-f", "--watch", action="store_true", help="wait for new events (Ctrl-C)"
    )
    p.add_argument(
        "--from-now",
        "--after-now",
        action="store_true",
        help="start at the end, not the beginning",
    )
    p.add_argument("--workflow", help="only this workflow (reads only its partition)")
    p.add_argument("--after", metavar="VID", help="with --workflow: only events after this vid")
    _output_options(p)
    kafka_options(p)
    p.set_defaults(handler=cmd_events)


def _output_options(p: argparse.ArgumentParser, human: bool = False) -> None:
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    if human:
        p.add_argument("--human", "-H", action="store_true", help="sizes like 1.2G")


# --- get ---------------------------------------------------------------------------


def cmd_get(args: argparse.Namespace) -> int:
    def body() -> int:
        wait = args.wait is not None
        timeout = args.wait if wait and args.wait >= 0 else None
        progress = None if args.quiet or not wait else _progress_printer(sys.stderr)
        with DuRootReader(kafka_config(args)) as reader:
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
            error(
                "get",
                f"workflow {result.workflow_id} is still running (state {result.state.name}, "
                f"{len(result.lines)} lines so far); use --wait to wait for it",
            )
            return EXIT_INCOMPLETE
        return EXIT_OK

    return run_handler("get", body)


def _progress_printer(err: TextIO) -> Callable[[Progress], None]:
    def show(p: Progress) -> None:
        print(
            f"waiting for workflow {p.workflow_id}: {p.state.name}, {p.lines} lines so far",
            file=err,
            flush=True,
        )

    return show


# --- status and index ---------------------------------------------------------------


def cmd_status(args: argparse.Namespace) -> int:
    def body() -> int:
        with DuRootReader(kafka_config(args)) as reader:
            status = reader.status(args.workflow)
        if args.json:
            print_json(status_json(status))
        else:
            print_fields(status_rows(status), sys.stdout)
        return 0

    return run_handler("status", body)


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


def cmd_index(args: argparse.Namespace) -> int:
    def body() -> int:
        with DuRootReader(kafka_config(args)) as reader:
            entries = list(reader.index(registry_id=args.registry).values())
        if args.active:
            entries = [e for e in entries if e.state == "active"]
        elif args.completed:
            entries = [e for e in entries if e.state == "completed"]
        if args.json:
            for e in entries:
                print_json(index_json(e))
        else:
            print_table(
                ["WORKFLOW", "STATE", "STATUS", "STARTED", "GLOBAL ROOT", "HOST", "HOST ROOT"],
                [index_row(e) for e in entries],
                sys.stdout,
            )
        return 0

    return run_handler("index", body)


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


# --- events ---------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> int:
    def body() -> int:
        if args.after is not None and args.workflow is None:
            raise ValueError("--after VID needs --workflow (a vid is a position in one history)")
        stop = threading.Event()
        if args.follow:
            where = f"workflow {args.workflow}" if args.workflow else "all workflows"
            print(f"following the events of {where} (Ctrl-C to stop)", file=sys.stderr)
        out = sys.stdout
        if not args.json:
            out.write(f"{'PARTITION@OFFSET':<17} {'TIME':<24} {'EVENT':<40} TYPE       DETAIL\n")
        after: str | None = args.after
        with DuRootReader(kafka_config(args)) as reader:
            try:
                for stored in reader.events(
                    from_beginning=not args.from_now,
                    follow=args.follow,
                    workflow_id=args.workflow,
                    stop=stop,
                ):
                    if after is not None:
                        # Skip the history up to and including the vid asked for.
                        if stored.event is not None and stored.event.event_id == after:
                            after = None
                        continue
                    if args.json:
                        print_json(event_json(stored), out)
                    else:
                        out.write(event_line(stored) + "\n")
                    if args.follow:
                        out.flush()
            except KeyboardInterrupt:
                stop.set()
        if after is not None and not args.follow:
            raise DuRootError(f"vid {after} is not in the history of workflow {args.workflow}")
        return 0

    return run_handler("events", body)


def event_type(event: WorkflowEvent | None) -> str:
    """The event's type as its `event-type` header names it; DELETED for a tombstone."""
    return "DELETED" if event is None else EVENT_TYPES[type(event.payload)]


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
