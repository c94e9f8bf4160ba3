"""`make bench`: every benchmark in one run, one table of figures and targets.

    python -m benchmarks [--quick]

Runs, in order, `core` (the pure core on one core), `handler` (the
processor's Python per command, CPU time, no Kafka), `txn_floor` (a bare
transaction, default vs tuned retry backoff), `processor` (throughput
against the pass-through, scale-out, latency in its own set-up, restore
against raw consume, memory; one local broker), `get` and `runner` (a
broker each). The table (`benchmarks.targets`): each figure, its target, met or not.
Each module writes its own `bench-results/<name>.json`; this writes
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
from dataclasses import asdict, replace
from typing import Any

from benchmarks import compiled, core, get, handler, processor, runner, targets, txn_floor
from benchmarks.results import HandlerResult
from benchmarks.targets import Results, Row
from benchmarks.workload import REPO

RESULTS = REPO / "bench-results"


def run_handler(argv: Sequence[str]) -> HandlerResult:
    """`benchmarks.handler` writes its figures to handler.json; read them as its result."""
    handler.main(argv)
    report = json.loads((RESULTS / "handler.json").read_text(encoding="utf-8"))
    return HandlerResult(**report["results"])


def run_compiled(results: Results, argv: Sequence[str]) -> Results:
    """The compiled build against the pure one, taking turns (its own compiled.json)."""
    compiled.main(argv)
    return results


# In the order they run: each writes RESULTS/<name>.json and puts its result into
# the run's `Results`.
Step = Callable[[Results, Sequence[str]], Results]
MODULES: list[tuple[str, Step]] = [
    ("core", lambda r, args: replace(r, core=core.main(args))),
    ("handler", lambda r, args: replace(r, handler=run_handler(args))),
    ("compiled", run_compiled),
    ("txn_floor", lambda r, args: replace(r, txn_floor=txn_floor.main(args))),
    ("processor", lambda r, args: replace(r, processor=processor.main(args))),
    ("get", lambda r, args: replace(r, get=get.main(args))),
    ("runner", lambda r, args: replace(r, runner=runner.main(args))),
]


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def show(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:#.3g}" if value < 10 else f"{value:,.1f}"


def main(argv: Sequence[str]) -> int:
    quick = "--quick" in argv
    args = ["--quick"] if quick else []
    results = Results()
    durations: dict[str, float] = {}
    failed: dict[str, str] = {}
    started = time.monotonic()
    load_before = os.getloadavg()
    for n, (name, step) in enumerate(MODULES, 1):
        log(f"[{n}/{len(MODULES)}] {name}{' (quick)' if quick else ''}")
        t0 = time.monotonic()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout is for the table
                results = step(results, args)
        except Exception:  # report it, run the others
            failed[name] = traceback.format_exc(limit=3)
            log(f"{name} FAILED:\n{failed[name]}")
        durations[name] = round(time.monotonic() - t0, 1)
        log(f"{name} done in {durations[name]:.0f} s")

    rows = targets.rows(results)
    print_table(rows)
    load_after = os.getloadavg()
    busy = max(load_before[0], load_after[0]) > (os.cpu_count() or 1)
    print(
        f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f} "
        f"on {os.cpu_count()} cores"
        + (": WARNING, the machine was busy, figures are low and noisy" if busy else "")
    )
    summary: dict[str, Any] = {
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
        "figures": [asdict(row) for row in rows],
        "results": asdict(results),
    }
    out = RESULTS / "summary.json"
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log(f"all done in {summary['seconds']:.0f} s; wrote {out}")
    return 1 if failed else 0


def print_table(rows: list[Row]) -> None:
    header = ("figure", "value", "unit", "target", "met?")
    lines = [
        (
            row.label,
            "—" if row.value is None else show(row.value),
            row.unit,
            row.target,
            {True: "yes", False: "NO", None: "—"}[row.met],
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
