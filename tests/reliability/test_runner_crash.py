"""Runner crashes: a real `duroot-stream runner` process SIGKILLed (a) while du runs,
before it printed anything (the workflow still INITIALIZED), and (b) between Append
batches (APPENDING, after N lines are in the events topic), then started again.

Each kill comes at a point of progress, never of time: in every round three
workflows start at once, du behind a gate script that does what each root asks:

- `block`: du is started (the script says so through a file) and never prints;
- `chunk N`: du prints its first N lines, then blocks;
- `free`: du runs and the workflow completes (the control).

Once the first has signalled, the second's N lines are all appended and the third
is TERMINATED, the runner is SIGKILLed (the gate scripts, their own process groups,
are killed too) and started again. Expected, nog's semantics with this project's
promise: both interrupted workflows end failed `du was interrupted` exactly once,
du never runs twice for any workflow, the control's result is du's. The live
reader checks the events topic throughout; the topics are replayed at the end.

The SIGTERM variant (as many rounds) shows that a clean stop ends the same way: the
runner kills its du runs and exits 0, the next one fails both as interrupted.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from duroot_stream.client import DuResult, DuRootClient, DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootCompleted, DuUpdated, StateCode
from duroot_stream.runner import INTERRUPTED
from duroot_stream.wire import Codec, Topics
from tests.kafka_helpers import wait_until
from tests.reliability.harness import PARTITIONS, RESULTS_DIR, Scale, settle_s
from tests.reliability.live import LiveReader
from tests.reliability.supervisor import CLI, Supervisor
from tests.reliability.topic_reads import open_transactions, read_topic
from tests.reliability.verify import replay

pytestmark = [pytest.mark.slow, pytest.mark.broker, pytest.mark.timeout(3600)]

REGISTRY = str(uuid.UUID(int=42))
BATCH = 5  # paths per Append
CHUNK = 3 * BATCH + 2  # lines du prints before it blocks: four Appends
WAIT_S = 240.0  # generous: 2 cores shared by several test runs

GATE = """#!/bin/sh
# du behind a gate: log the start, then do what the root's mode file says.
name=$(basename "$(pwd -P)")
again=$(grep -c " $name$" {log} 2>/dev/null)
echo "$$ $name" >> {log}
[ "${{again:-0}}" = 0 ] || exit 3  # a second start: the test fails on it, du does not block
read mode n < {gates}/$name.mode
case $mode in
block) touch {gates}/$name.started; exec sleep 3600 ;;
chunk) du "$@" > {gates}/$name.out; head -z -n "$n" {gates}/$name.out
       touch {gates}/$name.started; exec sleep 3600 ;;
*) exec du "$@" ;;
esac
"""


@dataclass
class RunnerProcess:
    """One `duroot-stream runner` process at a time; SIGKILLed and started again."""

    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _log: IO[bytes] | None = None

    def start(self) -> None:
        if self._log is None:
            self._log = open(self.log_path, "ab")  # noqa: SIM115 (closed in close())
        self._log.write(f"--- start {self.starts + 1} at {time.strftime('%X')}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.starts += 1

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def terminate(self) -> int:
        """SIGTERM: the runner kills its du runs, commits what is settled, exits 0."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(90)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("the runner did not stop within 90 s of SIGTERM") from None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def close(self) -> None:
        self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class Gates:
    """The gate script's files: a mode per root, the start log, the started flags."""

    where: Path

    def __post_init__(self) -> None:
        self.where.mkdir()
        self.log = self.where / "du-starts.log"
        self.script = self.where / "gate-du"
        self.script.write_text(GATE.format(log=self.log, gates=self.where))
        self.script.chmod(0o755)

    def root(self, roots: Path, name: str, mode: str) -> Path:
        root = roots / name
        for i in range(CHUNK + 5):  # more du lines than a chunk
            (root / f"d{i % 4}" / f"e{i}").mkdir(parents=True)
        (self.where / f"{name}.mode").write_text(mode + "\n")
        return root

    def started(self, name: str) -> bool:
        return (self.where / f"{name}.started").exists()

    def starts(self) -> list[tuple[int, str]]:
        lines = self.log.read_text().split("\n") if self.log.exists() else []
        return [(int(pid), name) for pid, name in (ln.split() for ln in lines if ln)]

    def assert_once(self) -> None:
        names = [name for _, name in self.starts()]
        twice = sorted({name for name in names if names.count(name) > 1})
        assert not twice, f"du ran twice for {twice}"

    def kill_all(self) -> None:
        """du outlives a SIGKILLed runner (its own process group): end the blocked ones."""
        for pid, _ in self.starts():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def du_lines(root: Path) -> list[tuple[str, int]]:
    """What du prints for `root` with the runner's arguments (its README: `du -0
    --threshold=T --max-depth=D .` in the root): (path without `./`, KiB x 1024)."""
    argv = ["du", "-0", "--threshold=0", "--max-depth=100", "."]
    env = {"LC_ALL": "C.UTF-8", "PATH": os.environ["PATH"]}
    out = subprocess.run(argv, cwd=root, env=env, capture_output=True, check=True).stdout
    records = [r.decode() for r in out.split(b"\0") if r]
    pairs = [r.split("\t", 1) for r in records]
    return [(path.removeprefix("./"), int(kib) * 1024) for kib, path in pairs]


def kill_point(gates: Gates, reader: DuRootReader, r: int, started: dict[str, str]) -> bool:
    gates.assert_once()
    return (
        gates.started(f"block{r}")
        and reader.status(started["chunk"]).lines == CHUNK
        and reader.status(started["free"]).state == StateCode.TERMINATED
    )


# SIGKILL is the crash; SIGTERM shows a clean stop ends the same way.
@pytest.mark.parametrize("stop", ["SIGKILL", "SIGTERM"])
def test_runner_crash(
    stop: str,
    reliability_kafka: KafkaConfig,
    scale: Scale,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    kafka = reliability_kafka
    # A host (so a consumer group and static instance id) per test: a static member
    # of an earlier test's group, killed, would hand its stale assignment over.
    host = f"files-crash-{uuid.uuid4().hex[:8]}"
    killing = stop == "SIGKILL"
    rounds = max(scale.min_faults, 3 if scale.name == "small" else 8)
    began = time.monotonic()
    roots, gates = tmp_path / "roots", Gates(tmp_path / "gates")
    roots.mkdir()
    sup = Supervisor(
        kafka.bootstrap_servers,
        kafka.topic_prefix,
        tmp_path,
        random.Random(scale.seed),
        lambda: 0.0,
    )
    live = LiveReader(kafka, PARTITIONS)
    sup.cleanups.append(live.stop)
    argv = [
        CLI, "runner", "-b", kafka.bootstrap_servers, "--topic-prefix", kafka.topic_prefix,
        "--host", host, "--root", str(roots), "--du-command", str(gates.script),
        "--threshold", "0", "--max-depth", "100", "--batch-size", str(BATCH),
        "--concurrency", "3",
    ]  # fmt: skip
    runner = RunnerProcess(argv, tmp_path / "runner.log")
    client = DuRootClient(kafka)
    reader = DuRootReader(kafka)
    interrupted: list[str] = []
    results: dict[str, DuResult] = {}
    recovery: list[float] = []
    controls: list[str] = []
    names: dict[str, str] = {}  # workflow id -> root name
    kills = 0
    try:
        sup.start("a")
        live.start()
        runner.start()
        for r in range(rounds):
            started = {}
            for kind, mode in (("block", "block"), ("chunk", f"chunk {CHUNK}"), ("free", "free")):
                name = f"{kind}{r}"
                root = gates.root(roots, name, mode)
                wf = client.begin(REGISTRY, f"/g/{name}", host, str(root)).workflow_id
                started[kind], names[wf] = wf, name
            # The kill point: du started for one (nothing printed), CHUNK lines appended
            # for the other, the control done.
            wait_until(
                functools.partial(kill_point, gates, reader, r, started),
                timeout=WAIT_S,
                interval=0.2,
                what=f"round {r}: du blocked, {CHUNK} lines appended, the control done",
            )
            assert runner.alive(), f"the runner exited: {runner.process}"
            assert reader.status(started["block"]).state == StateCode.INITIALIZED
            assert reader.status(started["chunk"]).state == StateCode.APPENDING
            if killing:
                runner.kill()
            else:
                assert runner.terminate() == 0, "SIGTERM: a clean exit"
            kills += 1
            gates.kill_all()
            runner.start()
            restarted = time.monotonic()
            for kind in ("block", "chunk"):  # failed by the new runner, not run again
                results[started[kind]] = reader.get_du(started[kind], wait=True, timeout=WAIT_S)
                interrupted.append(started[kind])
            recovery.append(round(time.monotonic() - restarted, 1))  # restart -> both failed
            gates.assert_once()
            controls.append(started["free"])
        runner.kill()
        sup.stop_all()
        topics = Topics(kafka.topic_prefix)
        names_all = [topics.commands, topics.events, topics.index, topics.replies]
        settle = settle_s(sup.transaction_timeout_s())
        wait_until(lambda: not open_transactions(kafka, names_all), settle, 1, "no open txn")
        events = read_topic(kafka, topics.events)
        live.finish(events)
        report = replay(kafka, events=events)
    finally:
        client.close()
        runner.close()
        gates.kill_all()
        sup.close()
    seconds = time.monotonic() - began

    # Every workflow's history, from the final read: its lines and COMPLETED events.
    codec = Codec()
    completed: dict[str, list[DuRootCompleted]] = {wf: [] for wf in names}
    lines: dict[str, list[tuple[str, int]]] = {wf: [] for wf in names}
    for records in events.values():
        for rec in records:
            e = codec.decode_event(rec.value) if rec.value is not None else None
            if e is not None and isinstance(e.payload, DuRootCompleted):
                completed[e.workflow_id].append(e.payload)
            if e is not None and isinstance(e.payload, DuUpdated):
                lines[e.workflow_id].append((e.payload.path, e.payload.usage))
    du_runs = {name: 0 for name in names.values()}
    for _, name in gates.starts():
        du_runs[name] += 1
    figures = {
        "scenario": f"runner-crash-{stop}",
        "scale": scale.name,
        "seed": scale.seed,
        "seconds": round(seconds, 1),
        "rounds": rounds,
        "kills": kills,
        "runner_starts": runner.starts,
        "recovery_s": recovery,
        "workflows": len(names),
        "interrupted": len(interrupted),
        "du_runs": sum(du_runs.values()),
        "commands": report.commands,
        "events": report.events_found,
        "lost": report.lost,
        "duplicated": report.duplicated,
        **live.figures(),
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    name = f"reliability-runner-crash{'' if killing else '-sigterm'}.json"
    (RESULTS_DIR / name).write_text(json.dumps(figures, indent=2))
    with capsys.disabled():
        print(
            f"\n[reliability runner-crash {stop}] seed={scale.seed} {seconds:.0f} s "
            f"commands={report.commands} faults={kills} (runner {stop}s) "
            f"events={report.events_found} lost={report.lost} duplicated={report.duplicated} "
            f"recovery (restart to both failed) {recovery} s\n  {figures}\n  {report.summary()}"
        )

    assert kills == rounds, f"{kills} runner {stop}s in {rounds} rounds"
    assert kills >= scale.min_faults, f"{kills} runner {stop}s"
    assert not sup.unexpected_exits, f"the processor exited unasked: {sup.unexpected_exits}"
    for wf in interrupted:
        assert (results[wf].status_code, results[wf].status_message) == (1, INTERRUPTED), wf
        assert completed[wf] == [DuRootCompleted(1, INTERRUPTED)], f"{names[wf]}: {completed[wf]}"
        if names[wf].startswith("chunk"):
            assert len(results[wf].lines) == CHUNK, "the lines appended before the kill stay"
    for wf in controls:
        assert completed[wf] == [DuRootCompleted(0, "")], f"{names[wf]}: {completed[wf]}"
        assert lines[wf] == du_lines(roots / names[wf]), f"{names[wf]}: not what du prints"
    twice = {name: n for name, n in du_runs.items() if n != 1}
    assert not twice, f"du must run exactly once per workflow: {twice}"
    assert report.lost == 0 and report.duplicated == 0, report.problems
    assert report.problem_count == 0, "\n".join(report.problems)
    assert not live.problems, "\n".join(live.problems)
    assert live.checker.events > 0, "the live reader read nothing"
