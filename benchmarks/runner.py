"""Benchmark of the du runner end to end: du lines per second into the events topic.

A local broker (`LocalBroker`), the topics, and a generated tree of directories
(100,000; 5,000 with `--quick`) with `--threshold=0 --max-depth=100`, so every
directory is one du line. One workflow is begun; the clock runs from the Init
reply until the workflow's last event (COMMITTED) can be read from the events
topic. Twice: processor and runner each a process of its own, as deployed
(`lines_per_s`), and both as threads of the benchmark's process, as `duroot-stream
run` has them (`lines_per_s_one_process`; the reader that waits for the result
shares their interpreter).

Figures:

- `lines_per_s`: du lines (DuUpdated events) per second, end to end, with the
  runner's defaults except threshold and depth (`batch_size` in the report);
- `du_alone_lines_per_s`: the same du invocation alone, for scale;
- `lines`, `seconds`, `appends` (Append commands sent).

Run: `python -m benchmarks.runner [--quick] [--batch-size N]`; writes
bench-results/runner.json.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition

from benchmarks.results import RunnerResult
from benchmarks.workload import REGISTRY_ID, write_report
from duroot_stream.cli.main import build_parser
from duroot_stream.cli.runner import settings_from_args
from duroot_stream.client import DuRootClient, DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import PathUsage
from duroot_stream.local.broker import LocalBroker
from duroot_stream.processor import Processor, ProcessorSettings
from duroot_stream.runner import Runner, du
from duroot_stream.wire import Topics, create_topics

HOST = "bench.example.org"
PARTITIONS = 3


def make_tree(root: Path, dirs: int, seed: int = 1) -> None:
    """`dirs` directories below `root`: each new one under a random earlier one
    (or the root), so depths vary like a real tree's (about 2 ln n on average)."""
    rng = random.Random(seed)
    made: list[str] = [str(root)]
    for i in range(dirs):
        path = os.path.join(made[rng.randrange(len(made))], f"d{i:06d}")
        os.mkdir(path)
        made.append(path)


def _wait_for_leaders(kafka: KafkaConfig, timeout: float = 60.0) -> None:
    """Topics just created may not have a leader yet; wait until every partition answers."""
    topics = Topics(kafka.topic_prefix)
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "bench-wait"})
    deadline = time.monotonic() + timeout
    try:
        for topic in (topics.commands, topics.events, topics.index, topics.replies):
            for partition in range(PARTITIONS):
                while True:
                    try:
                        consumer.get_watermark_offsets(TopicPartition(topic, partition), 5)
                        break
                    except KafkaException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
    finally:
        consumer.close()


def _start(target: object, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


@contextmanager
def _service(argv: list[str], ready: str) -> Iterator[subprocess.Popen[str]]:
    """A `duroot-stream` service in a process of its own, once its stderr says `ready`."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "duroot_stream.cli.main", *argv], stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    try:
        for line in proc.stderr:  # wait until ready, then keep the pipe drained
            if ready in line:
                break
        else:
            raise RuntimeError(f"{argv[0]} exited ({proc.wait()}) before {ready!r}")
        _start(proc.stderr.read, f"{argv[0]}-stderr")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def _measure(
    kafka: KafkaConfig, host: str, tree: Path, du_lines: list[PathUsage]
) -> tuple[int, float]:
    """Begin a du of `tree` on `host`: (lines, seconds from the Init reply until the
    workflow's last event is readable from the events topic)."""
    with DuRootClient(kafka) as client:
        workflow_id = str(uuid.uuid4())
        client.init(workflow_id, REGISTRY_ID, "/bench/tree", host, str(tree))
        t0 = time.monotonic()
        result = DuRootReader(kafka).get_du(workflow_id, wait=True, timeout=1800)
        seconds = time.monotonic() - t0
    result.raise_for_status()
    if sorted((p.path, p.usage) for p in result.lines) != sorted(
        (p.path, p.usage) for p in du_lines
    ):
        raise RuntimeError("the published lines differ from what du prints")
    print(f"{host}: {len(result.lines):,} lines in {seconds:.1f} s", file=sys.stderr)
    return len(result.lines), seconds


def run(quick: bool = False, batch_size: int | None = None) -> RunnerResult:
    dirs = 5_000 if quick else 100_000
    work = Path(tempfile.mkdtemp(prefix="duroot-bench-"))
    tree = work / "tree"
    tree.mkdir()
    try:
        t0 = time.monotonic()
        make_tree(tree, dirs)
        print(f"made {dirs:,} directories in {time.monotonic() - t0:.1f} s", file=sys.stderr)

        argv = du.du_argv(["du"], "0", 100)
        t0 = time.monotonic()
        du_lines, outcome = du.run_to_end(argv, str(tree), timeout=600)
        du_seconds = time.monotonic() - t0
        assert outcome.ok, outcome

        with LocalBroker(log_file=work / "broker.log") as broker:
            kafka = KafkaConfig(bootstrap_servers=broker.bootstrap, topic_prefix="bench.")
            create_topics(kafka, partitions=PARTITIONS)
            _wait_for_leaders(kafka)
            options = ["--threshold", "0", "--max-depth", "100"]
            if batch_size is not None:
                options += ["--batch-size", str(batch_size)]
            where = ["--bootstrap-servers", kafka.bootstrap_servers]
            where += ["--topic-prefix", kafka.topic_prefix]
            # As deployed: processor and runner are programs of their own (the runner on
            # the file server), and the reader that times them is not in either.
            with (
                _service(["processor", *where, "--instance-id", "bench"], "processor ready"),
                _service(
                    ["runner", *where, "--host", "bench-process", "--root", str(work), *options],
                    "index partitions assigned",
                ),
            ):
                process = _measure(kafka, "bench-process", tree, du_lines)
            processor = Processor(ProcessorSettings(kafka=kafka, instance_id="bench"))
            processor_thread = _start(processor.run, "processor")
            try:
                if not processor.ready.wait(60):
                    raise RuntimeError("the processor did not start")
                # As `duroot-stream run` has it: runner, processor and the reader that
                # waits for the result share one process.
                settings = settings_from_args(
                    build_parser().parse_args(
                        ["runner", "--bootstrap-servers", kafka.bootstrap_servers,
                         "--topic-prefix", kafka.topic_prefix, "--host", "bench-thread",
                         "--root", str(work), *options]
                    )
                )  # fmt: skip
                runner = Runner(settings)
                runner_thread = _start(runner.run, "runner")
                try:
                    if not runner.ready.wait(60):
                        raise RuntimeError("the runner did not start")
                    thread = _measure(kafka, "bench-thread", tree, du_lines)
                finally:
                    runner.stop()
                    runner_thread.join(60)
            finally:
                processor.stop()
                processor_thread.join(60)
        lines, seconds = process
        du_alone = round(len(du_lines) / du_seconds, 1)
        result = RunnerResult(
            directories=dirs,
            lines=lines,
            seconds=round(seconds, 3),
            lines_per_s=round(lines / seconds, 1),
            lines_per_s_one_process=round(thread[0] / thread[1], 1),
            du_alone_lines_per_s=du_alone,
            to_du_alone=round(lines / seconds / du_alone, 3),
            batch_size=settings.batch_size,
            batch_bytes=settings.batch_bytes,
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, value in asdict(result).items():
        print(f"{name:<24} {value:>14,.1f}")
    return result


def main(argv: Sequence[str] = ()) -> RunnerResult:
    args = list(argv)
    quick = "--quick" in args
    batch_size = int(args[args.index("--batch-size") + 1]) if "--batch-size" in args else None
    result = run(quick=quick, batch_size=batch_size)
    print(f"wrote {write_report('runner', quick, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
