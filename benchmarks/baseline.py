"""Before and after, side by side: this tree's processor against an earlier commit's,
on one broker, taking turns, so both are measured on the same machine at the same time.

    python -m benchmarks.baseline REV [--quick]

REV's `src/` and `schemas/` are extracted (`git archive`) into a temporary
directory and its processors run from there (PYTHONPATH), this tree's from
here, on the same topics, workloads and benchmark code:

- throughput: the drain of `benchmarks.processor` (100,000 Appends over 1,000
  workflows) by the pass-through, REV's processor and this tree's, taking
  turns, best of two (one with --quick);
- latency: command -> reply visible from the separate client at 200/s and at
  1,000/s, REV and this tree taking turns, best of three (lowest p99);
- restore and memory: `benchmarks.memory_probe` with each tree's code
  (100,000 restored workflows, 1,000,000 events, six partitions; 20,000 with
  --quick), taking turns, best of two;
- the processor's Python per command: `benchmarks.handler` (CPU time, no
  Kafka) with each tree's code, taking turns, best of three.

Prints each figure before, after and after/before, and writes
bench-results/baseline.json (with REV and the load average seen). REV is any
commit `git archive` takes whose processor reads this tree's topics.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path

from benchmarks import latency, processor
from benchmarks.drain import ProcessSet
from benchmarks.results import BaselineResult, Comparison, HandlerResult, LatencyRun
from benchmarks.workload import (
    REPO,
    append_commands,
    bootstrap,
    log,
    machine_load,
    workflow_ids,
    write_report,
)

Trees = dict[str, Mapping[str, str]]  # "before"/"after" -> the processes' environment
LATENCY_RATES = (200.0, 1_000.0)


def extract(rev: str, into: Path) -> Mapping[str, str]:
    """REV's code in `into`, and the environment that runs it instead of this tree's."""
    archive = subprocess.run(
        ["git", "archive", rev, "src", "schemas"], cwd=REPO, capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    env = {"PYTHONPATH": str(into / "src")}
    where = subprocess.run(
        [sys.executable, "-c", "import duroot_stream; print(duroot_stream.__file__)"],
        cwd=REPO, env=env, capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(into)):
        raise RuntimeError(f"PYTHONPATH={into / 'src'} does not take precedence: {where}")
    return env


def compare(figure: str, best: Mapping[str, float]) -> Comparison:
    return Comparison(figure, before=best["before"], after=best["after"])


def throughput(servers: str, quick: bool, trees: Trees) -> tuple[float, Comparison]:
    """The pass-through's rate, and the one-instance drain of each tree."""
    n = 30_000 if quick else 100_000
    rounds = 1 if quick else 2
    workflows = workflow_ids(processor.WORKFLOWS)
    commands = append_commands(workflows, n)

    def passthrough(p: ProcessSet) -> None:
        p.start_passthrough(processor.PARTITIONS)

    def one(p: ProcessSet) -> None:
        p.start_processors(1)

    processor.drain(servers, commands[:10_000], workflows, passthrough, "warm-up")
    best = {"passthrough": 0.0, "before": 0.0, "after": 0.0}
    for _ in range(rounds):  # taking turns
        rate = processor.drain(
            servers, commands, workflows, passthrough, "pass-through"
        ).sustained_rate
        best["passthrough"] = max(best["passthrough"], rate)
        for tree, env in trees.items():
            rate = processor.drain(
                servers, commands, workflows, one, f"processor {tree}", env=env
            ).sustained_rate
            best[tree] = max(best[tree], rate)
    drain = compare(f"processor, 1 instance, {n:,} Appends (cmd/s)", best)
    return round(best["passthrough"]), drain


def latencies(servers: str, quick: bool, trees: Trees) -> list[Comparison]:
    seconds = 5.0 if quick else 15.0
    rounds = 1 if quick else 3
    out: list[Comparison] = []
    with ExitStack() as stack:
        setups = {
            tree: stack.enter_context(latency.setup(servers, (), seed=20 + i, env=env))
            for i, (tree, env) in enumerate(trees.items())
        }
        for rate in LATENCY_RATES:
            runs: dict[str, list[LatencyRun]] = {tree: [] for tree in setups}
            for _ in range(rounds):  # taking turns
                for tree, where in setups.items():
                    runs[tree].append(latency.measure(where, rate, seconds))
                    log(latency.line(f"{rate:.0f}/s {tree}", runs[tree][-1]))
            best = {tree: latency.lowest_p99(tree_runs) for tree, tree_runs in runs.items()}
            for name, value in (
                ("p50 (ms)", lambda r: r.visible_p50_ms),
                ("p99 (ms)", lambda r: r.visible_p99_ms),
                ("missing replies", lambda r: float(r.missing_replies)),
            ):
                figures = {tree: value(run) for tree, run in best.items()}
                out.append(compare(f"reply visible at {rate:,.0f}/s: {name}", figures))
    return out


def memory(servers: str, quick: bool, trees: Trees) -> list[Comparison]:
    """Taking turns: the fewest bytes and the fastest restore of each tree."""
    rounds = 1 if quick else 2
    rss: dict[str, float] = {}
    live: dict[str, float] = {}
    restore: dict[str, float] = {}
    for _ in range(rounds):
        for tree, env in trees.items():
            r = processor.memory(servers, quick, env=env)
            log(f"memory {tree}: {r.bytes_per_workflow:,.0f} B per workflow, "
                f"restored {r.restore_events_per_s:,.0f} events/s")  # fmt: skip
            rss[tree] = min(rss.get(tree, r.bytes_per_workflow), r.bytes_per_workflow)
            live[tree] = r.live_bytes_per_workflow
            restore[tree] = max(restore.get(tree, 0.0), r.restore_events_per_s)
    return [
        compare("memory per restored workflow, RSS (B)", rss),
        compare("of it held by the state objects (B)", live),
        compare("restore, 6 partitions (events/s)", restore),
    ]


def handler(trees: Trees) -> list[Comparison]:
    """The processor's Python per command (`benchmarks.handler`, CPU time, no Kafka)
    with each tree's code, taking turns, best of three: what the throughput drain's
    difference is made of. It runs the engine on its port's in-memory adapter: a
    tree from before the port is not compared."""
    for tree, env in trees.items():
        source = Path(env.get("PYTHONPATH", REPO / "src"))
        if not (source / "duroot_stream/processor/port.py").exists():
            log(f"handler: the {tree} tree has no engine port; not compared")
            return []
    one: dict[str, float] = {}
    per_path: dict[str, float] = {}
    for _ in range(3):
        for tree, env in trees.items():
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.handler", "--quick", "--json"],
                cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            figures = HandlerResult(**json.loads(out.splitlines()[-1]))
            one[tree] = min(one.get(tree, figures.us_append_1_path), figures.us_append_1_path)
            per_path[tree] = min(per_path.get(tree, figures.us_per_path), figures.us_per_path)
            log(f"handler {tree}: {figures.us_append_1_path:.1f} us per 1-path Append, "
                f"{figures.us_per_path:.2f} us per path of a 10,000-path one")  # fmt: skip
    return [
        compare("Python per 1-path Append (us of CPU)", one),
        compare("Python per path, 10,000-path Append (us)", per_path),
    ]


def table(result: BaselineResult) -> str:
    rows = [f"{'figure':<48} {'before':>11} {'after':>11} {'after/before':>14}"]
    for c in result.comparisons:
        ratio = "-" if c.ratio is None else f"{c.ratio:.2f}"
        rows.append(f"{c.figure:<48} {c.before:>11,.1f} {c.after:>11,.1f} {ratio:>14}")
    rows.append(f"(pass-through beside them: {result.passthrough_per_s:,.0f} cmd/s)")
    return "\n".join(rows)


def main(argv: Sequence[str] = ()) -> BaselineResult:
    args = [a for a in argv if a != "--quick"]
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.baseline REV [--quick]")
    rev, quick = args[0], "--quick" in argv
    with tempfile.TemporaryDirectory(prefix="duroot-baseline-") as tmp:
        trees: Trees = {"before": extract(rev, Path(tmp)), "after": {}}
        log(f"baseline: {rev} from {tmp}, against this tree ({REPO})")
        load = machine_load("the baseline comparison")
        with bootstrap() as servers:
            passthrough, drain = throughput(servers, quick, trees)
            comparisons = [drain, *latencies(servers, quick, trees)]
            comparisons += memory(servers, quick, trees)
        comparisons += handler(trees)
    result = BaselineResult(rev, passthrough, tuple(comparisons), load)
    print(table(result))
    write_report("baseline", quick, result)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
