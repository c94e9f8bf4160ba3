"""The compiled build against the pure one, side by side, taking turns on the same machine.

Each figure is measured in a process of its own, alternately on the two builds of the
same source: the compiled one (the source tree, its compiled modules beside the sources,
as `make` builds them) and the pure one (`DUROOT_PURE_PYTHON=1`, installed apart into a
temporary directory that comes first on the path). Figures (microseconds of CPU):

- from `benchmarks.handler`: `us_append_1_path`, `us_per_path` (of a 10,000-path Append);
- `us_fold_event`: the restore's fold per event without Kafka (`fold.PartitionFold`:
  `Codec.event_facts`, the STARTED payload decoded, `WorkflowReplay`) over records of
  2,000 workflows of ten events each, made in memory.

Per figure: each run's value, the best of each build and pure/compiled (the speed-up).

Run: `python -m benchmarks.compiled [--quick] [--rounds N]`; writes
bench-results/compiled.json. `python -m benchmarks.compiled fold` prints the fold figure
of the build it runs on (what the comparison runs in each process).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.workload import REPO, HistoryShape, log, write_report

BUILDS = ("compiled", "pure")
FIGURES = ("us_append_1_path", "us_per_path", "us_fold_event")
# With the development environment's build tools: no network.
PIP_INSTALL = (sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation")


@dataclass(frozen=True)
class Figure:
    """One figure, measured `rounds` times on each build, taking turns."""

    name: str
    compiled: tuple[float, ...]
    pure: tuple[float, ...]

    @property
    def speedup(self) -> float:
        """How many times faster compiled is (best against best)."""
        return round(min(self.pure) / min(self.compiled), 2)


@dataclass(frozen=True)
class Comparison:
    figures: tuple[Figure, ...]

    def to_json(self) -> dict[str, object]:
        return {
            f.name: {
                **asdict(f),
                "speedup": f.speedup,
                "best": {b: min(getattr(f, b)) for b in BUILDS},
            }
            for f in self.figures
        }

    def table(self) -> str:
        lines = [f"{'figure (us of CPU)':<20} {'compiled':>10} {'pure':>10} {'speed-up':>9}"]
        for f in self.figures:
            lines.append(
                f"{f.name:<20} {min(f.compiled):>10.3f} {min(f.pure):>10.3f} {f.speedup:>8.2f}x"
            )
        return "\n".join(lines)


def fold_us_per_event(workflows: int = 2_000) -> float:
    """CPU microseconds per event of the restore's fold (see the module docstring)."""
    from confluent_kafka import Message

    from duroot_stream.domain import EVENT_EPOCH, WorkflowEvent
    from duroot_stream.ids import MonotonicUlids, new_ulid
    from duroot_stream.processor.fold import PartitionFold
    from duroot_stream.wire import Codec

    codec, new_id, shape = Codec(), MonotonicUlids(), HistoryShape(10, 7)
    records: list[Message] = []
    for i in range(workflows):
        workflow_id = f"{i:08x}-0000-4000-8000-000000000000"
        history = shape.payloads(i)
        commands = [new_ulid() for _ in range(history[-1][0] + 1)]
        head = EVENT_EPOCH
        for seq, (number, payload) in enumerate(history):
            vid = new_id(head)
            event = WorkflowEvent(vid, head, workflow_id, seq, commands[number], payload)
            value = codec.encode_event(event, validate=False)
            key = event.key.encode()
            records.append(Message(topic="events", partition=0, key=key, value=value))
            head = vid
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        fold = PartitionFold()  # what restore_partitions runs per record
        for record in records:
            fold.add(record, codec)
        states = fold.finish(codec)
        best = min(best, time.process_time() - started)
        assert len(states) == workflows
    return round(best / len(records) * 1e6, 3)


def _pure_copy(into: Path) -> None:
    """The pure build of this source, installed into `into` (nothing else)."""
    subprocess.run(
        [*PIP_INSTALL, "--target", str(into), str(REPO)],
        env={**os.environ, "DUROOT_PURE_PYTHON": "1"},
        check=True,
        capture_output=True,
    )


def _measure(build: str, pure_path: Path, quick: bool) -> dict[str, float]:
    """The figures of one build, each in a fresh process."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(([str(pure_path)] if build == "pure" else []) + [str(REPO)])
    handler_argv = ["--json"] + (["--quick"] if quick else [])
    figures: dict[str, float] = {}
    for argv in (["benchmarks.handler", *handler_argv], ["benchmarks.compiled", "fold"]):
        out = subprocess.run(
            [sys.executable, "-m", *argv], env=env, cwd=REPO, capture_output=True, text=True
        )
        if out.returncode:
            raise RuntimeError(f"{build} build, {' '.join(argv)}: {out.stderr[-2000:]}")
        figures.update(json.loads(out.stdout.strip().splitlines()[-1]))
        if figures.get("build", build) != build:
            raise RuntimeError(f"ran the {figures['build']} build, not the {build} one")
    return figures


def run(quick: bool = False, rounds: int = 2) -> Comparison:
    """`rounds` of each build, taking turns (compiled, pure, compiled, pure, ...)."""
    found: dict[str, dict[str, list[float]]] = {f: {b: [] for b in BUILDS} for f in FIGURES}
    with tempfile.TemporaryDirectory(prefix="duroot-pure-") as temp:
        pure_path = Path(temp)
        _pure_copy(pure_path)
        for round_ in range(rounds):
            for build in BUILDS:
                log(f"compiled vs pure: round {round_ + 1}, the {build} build")
                figures = _measure(build, pure_path, quick)
                for name in FIGURES:
                    found[name][build].append(figures[name])
    return Comparison(
        tuple(Figure(n, tuple(found[n]["compiled"]), tuple(found[n]["pure"])) for n in FIGURES)
    )


def main(argv: Sequence[str] = ()) -> None:
    args = list(argv)
    if args[:1] == ["fold"]:  # one figure of the build this process runs
        from duroot_stream.compiled import BUILD

        print(json.dumps({"us_fold_event": fold_us_per_event(), "build": BUILD}))
        return
    quick = "--quick" in args
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 2
    comparison = run(quick, rounds)
    print(comparison.table())
    print(f"wrote {write_report('compiled', quick, comparison.to_json())}")


if __name__ == "__main__":
    main(sys.argv[1:])
