"""`duroot-stream diff BEFORE AFTER`: two du runs compared path by path, as the web
view's compare page shows them."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

from duroot_stream.client import (
    Comparison,
    DuRootReader,
    PathChange,
    Run,
    by_change,
    compare_workflows,
)

from .options import EXIT_OK, kafka_config, kafka_options
from .output import human_size, iso_time, print_json, print_table, run_handler


def add_commands(sub: Any) -> None:
    """Register `diff` on `duroot-stream`'s parser."""
    p = sub.add_parser("diff", help="compare two du runs path by path: before, after, change")
    p.add_argument("before", metavar="WORKFLOW", help="the earlier run (workflow UUID)")
    p.add_argument("after", metavar="WORKFLOW", help="the later run (workflow UUID)")
    p.add_argument("--changed", action="store_true", help="only paths whose usage changed")
    p.add_argument("--human", "-H", action="store_true", help="sizes like 1.2G")
    p.add_argument("--json", action="store_true", help="one JSON object: both runs and the paths")
    kafka_options(p)
    p.set_defaults(handler=cmd_diff)


def cmd_diff(args: argparse.Namespace) -> int:
    def body() -> int:
        with DuRootReader(kafka_config(args)) as reader:
            comparison = compare_workflows(reader, args.before, args.after)
        rows = by_change(comparison.paths)
        if args.changed:
            rows = [r for r in rows if r.change or r.before is None or r.after is None]
        if args.json:
            print_json(as_json(comparison, rows))
        else:
            print_diff(comparison, rows, sys.stdout, human=args.human)
        return EXIT_OK

    return run_handler("diff", body)


def as_json(comparison: Comparison, rows: list[PathChange]) -> dict[str, Any]:
    return {
        "before": _run_json(comparison.before),
        "after": _run_json(comparison.after),
        "paths": [
            {"path": r.path, "before": r.before, "after": r.after, "change": r.change} for r in rows
        ],
    }


def _run_json(run: Run) -> dict[str, Any]:
    s = run.status
    return {
        "workflow_id": s.workflow_id,
        "global_root": s.global_root,
        "host": s.host,
        "state": run.result.state.name,
        "status_code": run.result.status_code,
        "started_at": iso_time(s.started_at_ms),
        "completed_at": iso_time(s.completed_at_ms),
        "lines": len(run.result.lines),
    }


def print_diff(
    comparison: Comparison, rows: list[PathChange], out: TextIO, *, human: bool = False
) -> None:
    """A header line per run, then `before after change path`, largest change first."""
    for name, run in (("before", comparison.before), ("after", comparison.after)):
        s = run.status
        when = iso_time(s.completed_at_ms) or f"{run.result.state.name.lower()}, not completed"
        out.write(f"# {name}: {s.workflow_id} {s.global_root} on {s.host}, {when}\n")

    def size(n: int | None) -> str:
        if n is None:
            return "-"
        return human_size(n) if human else str(n)

    def change(r: PathChange) -> str:
        magnitude = human_size(abs(r.change)) if human else str(abs(r.change))
        return "0" if r.change == 0 else ("+" if r.change > 0 else "-") + magnitude

    table = [[size(r.before), size(r.after), change(r), r.path] for r in rows]
    print_table(["before", "after", "change", "path"], table, out)
