"""`make bench`: every benchmark in one run, one table of figures and targets.

    python -m benchmarks [--quick]

Runs, in order, `core` (the pure core on one core), `handler` (the
processor's Python per command, CPU time, no Kafka), `txn_floor` (a bare
transaction, default vs tuned retry backoff), `processor` (throughput
against the pass-through, scale-out, latency in its own set-up, restore
against raw consume, memory; one local broker), `get` and `runner` (a
broker each). The table is issue 17's: each figure, its target, met or not. Each module
writes its own `bench-results/<name>.json`; this writes
`bench-results/summary.json` and prints the table on stdout. Progress and
the modules' own output go to stderr. A module that fails is reported and
the others still run; the exit status is then 1.

The default run takes about 25-30 minutes on a 2-core machine, `--quick`
about 5-6. The machine's cores are shared with the broker (and, on a
shared host, with whatever else runs): compare the figures measured side
by side in the same run (the ratios), not absolute rates across runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import core, get, handler, processor, runner, txn_floor

RESULTS = Path(__file__).resolve().parents[1] / "bench-results"

# (name, main) in the order they run; each main(argv) writes RESULTS/<name>.json.
MODULES: list[tuple[str, Callable[[Sequence[str]], None]]] = [
    ("core", core.main),
    ("handler", handler.main),
    ("txn_floor", txn_floor.main),
    ("processor", processor.main),
    ("get", get.main),
    ("runner", runner.main),
]


@dataclass(frozen=True)
class Figure:
    """One row of the table: where the value is, what it means, its target."""

    path: str  # "<module>.<key>" or "<module>.<section>.<key>" in the modules' results
    label: str
    unit: str
    target: tuple[str, float] | None = None  # (">=" or "<=", threshold)

    def met(self, value: float) -> bool | None:
        if self.target is None:
            return None
        op, threshold = self.target
        return value >= threshold if op == ">=" else value <= threshold

    def target_text(self) -> str:
        if self.target is None:
            return "report"
        op, threshold = self.target
        shown = f"{threshold:,.0f}" if threshold >= 100 else f"{threshold:g}"
        return f"{'≥' if op == '>=' else '≤'} {shown}"


LAT = "processor.latency"
FIGURES = [
    # Issue 17's table first: each figure's target, then the figures that explain it.
    Figure(f"{LAT}.capacity.knee_per_s", "latency set-up: capacity (knee of bounded lag)",
           "cmd/s"),
    Figure(f"{LAT}.at_50pct_tuned.offered_per_s", "latency at half the capacity: offered",
           "cmd/s"),
    Figure(f"{LAT}.at_50pct_tuned.visible_p50_ms", "  command -> reply visible, p50", "ms"),
    Figure(f"{LAT}.at_50pct_tuned.visible_p99_ms", "  command -> reply visible, p99", "ms",
           ("<=", 80)),
    Figure(f"{LAT}.at_50pct_default.visible_p99_ms",
           "  same, librdkafka's default retry backoff, p99", "ms"),
    Figure(f"{LAT}.at_10pct_tuned.offered_per_s", "latency at a tenth: offered", "cmd/s"),
    Figure(f"{LAT}.at_10pct_tuned.visible_p50_ms", "  command -> reply visible, p50", "ms",
           ("<=", 25)),
    Figure(f"{LAT}.at_10pct_tuned.visible_p99_ms", "  command -> reply visible, p99", "ms",
           ("<=", 50)),
    Figure(f"{LAT}.at_10pct_tuned.queue_p50_ms", "  of which queueing (sent -> produced), p50",
           "ms"),
    Figure(f"{LAT}.at_10pct_tuned.commit_p50_ms", "  of which commit (produced -> visible), p50",
           "ms"),
    Figure(f"{LAT}.at_10pct_default.visible_p50_ms",
           "  same, librdkafka's default retry backoff, p50", "ms"),
    Figure(f"{LAT}.at_10pct_default.visible_p99_ms",
           "  same, librdkafka's default retry backoff, p99", "ms"),
    Figure(f"{LAT}.at_200_tuned.visible_p50_ms", "latency at 200/s, separate client: p50", "ms",
           ("<=", 25)),
    Figure(f"{LAT}.at_200_tuned.visible_p99_ms", "  command -> reply visible, p99", "ms",
           ("<=", 50)),
    Figure(f"{LAT}.at_200_tuned.attr_send_offsets_ms", "  per txn: send_offsets_to_transaction",
           "ms"),
    Figure(f"{LAT}.at_200_tuned.attr_commit_ms", "  per txn: commit_transaction", "ms"),
    Figure(f"{LAT}.at_200_default.visible_p50_ms",
           "  same, librdkafka's default retry backoff, p50", "ms"),
    Figure(f"{LAT}.at_200_default.visible_p99_ms",
           "  same, librdkafka's default retry backoff, p99", "ms"),
    Figure("txn_floor.tuned_total_p50_ms", "bare transaction, tuned retry backoff, p50", "ms"),
    Figure("txn_floor.default_total_p50_ms", "bare transaction, default retry backoff, p50",
           "ms"),
    Figure("txn_floor.tuned_total_p90_ms", "bare transaction, tuned retry backoff, p90", "ms"),
    Figure("txn_floor.default_total_p90_ms", "bare transaction, default retry backoff, p90",
           "ms"),
    Figure("processor.throughput.passthrough_per_s", "pass-through (same EOS loop, no domain)",
           "cmd/s"),
    Figure("processor.throughput.processor_per_s", "processor, exactly-once, 1 instance",
           "cmd/s"),
    Figure("processor.throughput.ratio", "processor / pass-through, 100,000 Appends", "",
           (">=", 0.9)),
    Figure("processor.throughput.processor_2_instances_per_s", "processor, 2 instances",
           "cmd/s"),
    Figure("processor.throughput.scale_out_ratio", "2 instances / 1 instance (2 cores)", "",
           (">=", 1.7)),
    Figure("processor.restore.restore_1p_events_per_s", "restore, 1 partition", "events/s",
           (">=", 300_000)),
    Figure("processor.restore.raw_consume_1p_events_per_s",
           "raw consume, 1 partition, same settings", "events/s"),
    Figure("processor.restore.restore_1p_ratio", "restore / raw consume, 1 partition", "",
           (">=", 0.9)),
    Figure("processor.restore.restore_6p_events_per_s", "restore, 6 partitions", "events/s"),
    Figure("processor.restore.restore_6p_ratio", "restore / raw consume, 6 partitions", "",
           (">=", 0.9)),
    Figure("processor.memory.bytes_per_workflow", "memory per restored workflow (RSS)", "B",
           ("<=", 512)),
    Figure("processor.memory.live_bytes_per_workflow", "of which held by the state objects", "B"),
    Figure("runner.lines_per_s", "runner: du lines/s end to end", "lines/s"),
    Figure("runner.du_alone_lines_per_s", "du alone", "lines/s"),
    Figure("runner.lines_per_s/runner.du_alone_lines_per_s", "runner / du alone", "",
           (">=", 0.8)),
    Figure("runner.lines_per_s_one_process", "runner and processor in one process", "lines/s"),
    Figure("core.decide_evolve_encode_per_s", "decide+evolve+encode, Append of 1 path", "/s",
           (">=", 100_000)),
    Figure("core.command_round_per_s", "per-command core: decode+decide+encode+reply", "/s"),
    Figure("handler.us_append_1_path", "processor's Python per command, Append of 1 path (CPU)",
           "us"),
    Figure("handler.us_per_path", "processor's Python per path, Append of 10,000 paths (CPU)",
           "us"),
    Figure("get.get_sequential_s", "get, 10,000 lines, workflows one after another", "s"),
    Figure("get.get_interleaved_s", "get, 10,000 lines, workflows interleaved", "s"),
]  # fmt: skip


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def lookup(results: dict[str, Any], path: str) -> float | None:
    """The figure at `path` ("a.b.c"), or the ratio of two ("a.b/c.d")."""
    if "/" in path:
        over, under = (lookup(results, part) for part in path.split("/", 1))
        return None if over is None or not under else round(over / under, 3)
    value: Any = results
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value) if isinstance(value, int | float) else None


def show(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:#.3g}" if value < 10 else f"{value:,.1f}"


def main(argv: Sequence[str]) -> int:
    quick = "--quick" in argv
    args = ["--quick"] if quick else []
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    durations: dict[str, float] = {}
    failed: dict[str, str] = {}
    started = time.monotonic()
    load_before = os.getloadavg()
    for n, (name, run) in enumerate(MODULES, 1):
        log(f"[{n}/{len(MODULES)}] {name}{' (quick)' if quick else ''}")
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout is for the table
                run(args)
            report = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
            results[name] = report["results"]
        except Exception:  # report it, run the others
            failed[name] = traceback.format_exc(limit=3)
            log(f"{name} FAILED:\n{failed[name]}")
        durations[name] = round(time.monotonic() - t0, 1)
        log(f"{name} done in {durations[name]:.0f} s")

    rows = []
    for figure in FIGURES:
        value = lookup(results, figure.path)
        rows.append(
            {
                "figure": figure.path,
                "label": figure.label,
                "value": value,
                "unit": figure.unit,
                "target": figure.target_text(),
                "met": None if value is None else figure.met(value),
            }
        )
    print_table(rows)
    load_after = os.getloadavg()
    busy = max(load_before[0], load_after[0]) > (os.cpu_count() or 1)
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores"
        + (": WARNING, the machine was busy, figures are low and noisy" if busy else "")
    )
    summary = {
        "quick": quick,
        "seconds": round(time.monotonic() - started, 1),
        "durations_s": durations,
        "failed": failed,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "busy": busy,
        "figures": rows,
        "results": results,
    }
    out = RESULTS / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"all done in {summary['seconds']:.0f} s; wrote {out}")
    return 1 if failed else 0


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("figure", "value", "unit", "target", "met?")
    lines = [
        (
            row["label"],
            "—" if row["value"] is None else show(row["value"]),
            row["unit"],
            row["target"],
            {True: "yes", False: "NO", None: "—"}[row["met"]],
        )
        for row in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
    for line in (header, *lines):
        print(
            f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]:<{widths[2]}}  "
            f"{line[3]:<{widths[3]}}  {line[4]}"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
