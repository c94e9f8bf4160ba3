"""Before and after, side by side: this tree's processor against an earlier commit's,
on one broker, taking turns (issue 17's "before and after from the same machine").

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
bench-results/baseline.json (with REV and the load average seen).
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
from benchmarks.workload import (
    REPO,
    ProcessSet,
    append_commands,
    bootstrap,
    log,
    machine_load,
    workflow_ids,
    write_report,
)

Results = dict[str, float]
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


def throughput(servers: str, quick: bool, trees: Trees) -> Results:
    n = 30_000 if quick else 100_000
    rounds = 1 if quick else 2
    workflows = workflow_ids(processor.WORKFLOWS)
    commands = append_commands(workflows, n)

    def passthrough(p: ProcessSet) -> None:
        p.start_passthrough(processor.PARTITIONS)

    def one(p: ProcessSet) -> None:
        p.start_processors(1)

    processor.drain(servers, commands[:10_000], workflows, passthrough, "warm-up")
    best: Results = {"passthrough": 0.0, "before": 0.0, "after": 0.0}
    for _ in range(rounds):  # taking turns
        rate = processor.drain(servers, commands, workflows, passthrough, "pass-through")
        best["passthrough"] = max(best["passthrough"], rate)
        for tree, env in trees.items():
            rate = processor.drain(servers, commands, workflows, one, f"processor {tree}", env=env)
            best[tree] = max(best[tree], rate)
    return {
        "passthrough_per_s": round(best["passthrough"]),
        "before_processor_per_s": round(best["before"]),
        "after_processor_per_s": round(best["after"]),
        "before_processor_to_passthrough": round(best["before"] / best["passthrough"], 3),
        "after_processor_to_passthrough": round(best["after"] / best["passthrough"], 3),
    }


def latencies(servers: str, quick: bool, trees: Trees) -> Results:
    seconds = 5.0 if quick else 15.0
    rounds = 1 if quick else 3
    out: Results = {}
    with ExitStack() as stack:
        setups = {
            tree: stack.enter_context(latency.setup(servers, (), seed=20 + i, env=env))
            for i, (tree, env) in enumerate(trees.items())
        }
        for rate in LATENCY_RATES:
            best: dict[str, Results] = {}
            for _ in range(rounds):  # taking turns
                for tree, where in setups.items():
                    result = latency.measure(where, rate, seconds)
                    log(latency.line(f"{rate:.0f}/s {tree}", result))
                    if tree not in best or result["visible_p99_ms"] < best[tree]["visible_p99_ms"]:
                        best[tree] = result
            for tree, result in best.items():
                for key in ("visible_p50_ms", "visible_p99_ms", "missing_replies"):
                    out[f"at_{rate:.0f}_{tree}_{key}"] = result[key]
    return out


def memory(servers: str, quick: bool, trees: Trees) -> Results:
    rounds = 1 if quick else 2
    best: dict[str, Results] = {}
    for _ in range(rounds):  # taking turns; the fewest bytes and the fastest restore
        for tree, env in trees.items():
            r = processor.memory(servers, quick, env=env)
            log(f"memory {tree}: {r['bytes_per_workflow']:,.0f} B per workflow, "
                f"restored {r['restore_events_per_s']:,.0f} events/s")  # fmt: skip
            kept = best.setdefault(tree, r)
            for key, pick in (("bytes_per_workflow", min), ("restore_events_per_s", max)):
                kept[key] = pick(kept[key], r[key])
    keys = ("bytes_per_workflow", "live_bytes_per_workflow", "restore_events_per_s")
    return {f"{tree}_{k}": best[tree][k] for tree in trees for k in keys}


def handler(trees: Trees) -> Results:
    """The processor's Python per command (`benchmarks.handler`, CPU time, no Kafka)
    with each tree's code, taking turns, best of three: what the throughput drain's
    difference is made of. It runs the engine on its port's in-memory adapter: a
    tree from before the port is not compared."""
    for tree, env in trees.items():
        source = Path(env.get("PYTHONPATH", REPO / "src"))
        if not (source / "duroot_stream/processor/port.py").exists():
            log(f"handler: the {tree} tree has no engine port; not compared")
            return {}
    best: dict[str, Results] = {}
    for _ in range(3):
        for tree, env in trees.items():
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.handler", "--quick", "--json"],
                cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            figures: Results = json.loads(out.splitlines()[-1])
            kept = best.setdefault(tree, figures)
            for key, value in figures.items():
                kept[key] = min(kept[key], value)
            log(f"handler {tree}: {figures['us_append_1_path']:.1f} us per 1-path Append, "
                f"{figures['us_per_path']:.2f} us per path of a 10,000-path one")  # fmt: skip
    keys = ("us_append_1_path", "us_per_path")
    return {f"{tree}_{k}": best[tree][k] for tree in trees for k in keys}


def table(results: Mapping[str, Results]) -> str:
    """One row per figure found as before_X / after_X (or X with before/after in it)."""
    rows = [f"{'figure':<40} {'before':>11} {'after':>11} {'after/before':>14}"]
    for section, figures in results.items():
        for key, before in figures.items():
            if "before" not in key:
                continue
            after = figures.get(key.replace("before", "after"))
            if after is None:
                continue
            name = f"{section}.{key.replace('before_', '').replace('_before', '')}"
            ratio = f"{after / before:.2f}" if before else "-"
            rows.append(f"{name:<40} {before:>11,.1f} {after:>11,.1f} {ratio:>14}")
    return "\n".join(rows)


def main(argv: Sequence[str] = ()) -> None:
    args = [a for a in argv if a != "--quick"]
    if len(args) != 1:
        raise SystemExit("usage: python -m benchmarks.baseline REV [--quick]")
    rev, quick = args[0], "--quick" in argv
    with tempfile.TemporaryDirectory(prefix="duroot-baseline-") as tmp:
        trees: Trees = {"before": extract(rev, Path(tmp)), "after": {}}
        log(f"baseline: {rev} from {tmp}, against this tree ({REPO})")
        load = machine_load("the baseline comparison")
        results: dict[str, Results] = {}
        with bootstrap() as servers:
            results["throughput"] = throughput(servers, quick, trees)
            results["latency"] = latencies(servers, quick, trees)
            results["memory"] = memory(servers, quick, trees)
        results["handler"] = handler(trees)
    print(table(results))
    write_report("baseline", quick, {**results, "run": {"rev": rev, "load_before": load}})


if __name__ == "__main__":
    main(sys.argv[1:])
