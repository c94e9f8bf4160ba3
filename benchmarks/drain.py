"""Commands held back and drained: the processor benchmarks' stopwatch.

- `HeldCommands`: commands produced inside a transaction that stays open, so
  a read_committed consumer sees none of them until `release()` commits: the
  consumers join and settle first, and every drain starts at one instant.
- `Drain`: committed offsets of a consumer group, sampled until every
  command is committed; the sustained rate is taken between 10 % and 90 %,
  and so is the CPU spent per command: by the draining processes, and by the
  whole machine (the broker's included), from /proc (Linux).
- `ProcessSet`: `duroot-stream processor` (or the pass-through) instances as
  subprocesses, ready once their group is stable.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.workload import REPO, new_producer, produce_all
from duroot_stream.config import KafkaConfig
from duroot_stream.wire import Topics, partition_for


class HeldCommands:
    """Commands behind an open transaction: invisible to read_committed consumers
    until `release()`."""

    def __init__(self, config: KafkaConfig, partitions: int, commands: list[tuple[str, bytes]]):
        topic = Topics(config.topic_prefix).commands
        self.count = len(commands)
        self.producer = new_producer(
            config,
            **{
                "transactional.id": f"bench-held-{uuid.uuid4().hex[:8]}",
                "transaction.timeout.ms": 600_000,
            },
        )
        self.producer.init_transactions(30)
        self.producer.begin_transaction()
        produce_all(
            self.producer,
            (
                (topic, partition_for(wf, partitions), wf.encode(), value, [])
                for wf, value in commands
            ),
        )
        if self.producer.flush(120):
            raise RuntimeError("held commands not delivered")

    def release(self) -> float:
        """Commit: every command becomes visible at once. Returns the time (monotonic)."""
        self.producer.commit_transaction(60)
        return time.monotonic()


# --- timing drains -------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user and system) that process `pid` has spent; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()  # the name may hold spaces
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_s() -> float:
    """CPU seconds all cores have spent busy (/proc/stat: all but idle and iowait)."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:9]]  # user .. steal
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


class Sample(NamedTuple):
    at: float  # monotonic
    committed: int  # commands
    processes_cpu_s: float  # of the draining processes
    machine_busy_s: float


class CpuPerCommand(NamedTuple):
    """Microseconds of CPU per command over the sustained part of a drain."""

    processes_us: float  # the draining processes'
    machine_us: float  # every core's, the broker's included
    machine_busy: float  # busy share of the machine's cores meanwhile (0..1)


@dataclass
class Drain:
    """Progress of a consumer group through `total` commands, from committed offsets."""

    released: float
    total: int
    samples: list[Sample] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.samples[-1][0] - self.released

    @property
    def rate(self) -> float:
        """Commands per second from release to the last commit seen."""
        return self.total / self.seconds

    def _sustained(self) -> tuple[Sample, Sample]:
        """The samples at 10 % and 90 % committed (no start-up, no tail); the first and
        the last if no time passed between those."""
        low = next(s for s in self.samples if s.committed >= 0.1 * self.total)
        high = next(s for s in self.samples if s.committed >= 0.9 * self.total)
        if high.at <= low.at or high.committed <= low.committed:
            return self.samples[0], self.samples[-1]
        return low, high

    @property
    def sustained_rate(self) -> float:
        """Commands per second between 10 % and 90 % committed."""
        low, high = self._sustained()
        if high.at <= low.at:
            return self.rate
        return (high.committed - low.committed) / (high.at - low.at)

    @property
    def cpu(self) -> CpuPerCommand:
        """CPU per command between 10 % and 90 % committed."""
        low, high = self._sustained()
        commands = max(1, high.committed - low.committed)
        machine = high.machine_busy_s - low.machine_busy_s
        cores_s = max(high.at - low.at, 1e-9) * (os.cpu_count() or 1)
        return CpuPerCommand(
            round((high.processes_cpu_s - low.processes_cpu_s) / commands * 1e6, 2),
            round(machine / commands * 1e6, 2),
            round(min(1.0, machine / cores_s), 3),
        )


def wait_drained(config: KafkaConfig, group: str, partitions: int, timeout: float) -> float:
    """Until `group` has committed every command written so far; the seconds waited."""
    topic = Topics(config.topic_prefix).commands
    watcher = Consumer(
        {"bootstrap.servers": config.bootstrap_servers, "group.id": group, "log_level": 0}
    )
    started = time.monotonic()
    try:
        while True:
            ends = [
                watcher.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                for p in range(partitions)
            ]
            tps = [TopicPartition(topic, p) for p in range(partitions)]
            committed = [tp.offset for tp in watcher.committed(tps, timeout=10)]
            # A partition never written to has no committed offset (-1001).
            if all(c >= end or end == 0 for c, end in zip(committed, ends, strict=True)):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"group {group} not caught up after {timeout} s")
            time.sleep(0.1)
    finally:
        watcher.close()


def watch_drain(
    config: KafkaConfig,
    group: str,
    partitions: int,
    held: HeldCommands,
    processes_cpu_s: Callable[[], float],
    timeout: float = 900,
) -> Drain:
    """Release `held` and sample `group`'s committed offsets until all are committed,
    and the CPU spent so far (`processes_cpu_s`: by the draining processes)."""
    topic = Topics(config.topic_prefix).commands
    watcher = Consumer(
        {"bootstrap.servers": config.bootstrap_servers, "group.id": group, "log_level": 0}
    )
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    try:
        drain = Drain(held.release(), held.count)
        while True:
            committed = watcher.committed(tps, timeout=10)
            done = sum(max(tp.offset, 0) for tp in committed)
            now = time.monotonic()
            drain.samples.append(Sample(now, done, processes_cpu_s(), machine_busy_s()))
            if done >= held.count:
                return drain
            if now - drain.released > timeout:
                raise RuntimeError(f"group {group}: {done} of {held.count} after {timeout} s")
            time.sleep(0.05)
    finally:
        watcher.close()


# --- processes -------------------------------------------------------------------------


class ProcessSet:
    """Consumer-group members as subprocesses (`duroot-stream processor` or the
    pass-through), stderr to log files, stopped with SIGTERM."""

    def __init__(self, config: KafkaConfig, group: str, env: Mapping[str, str] = {}) -> None:
        self.config = config
        self.group = group
        self.env = {**os.environ, **env}  # PYTHONPATH: another tree's code (benchmarks.baseline)
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs = Path(tempfile.mkdtemp(prefix="duroot-bench-"))

    def start(self, argv: list[str], name: str) -> None:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as err:
            self.procs.append(
                subprocess.Popen(
                    argv, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO, env=self.env
                )
            )

    def start_processors(self, n: int, *options: str) -> None:
        for i in range(n):
            self.start(
                [
                    sys.executable, "-m", "duroot_stream.cli.main", "processor",
                    "--bootstrap-servers", self.config.bootstrap_servers,
                    "--topic-prefix", self.config.topic_prefix,
                    "--group", self.group, "--instance-id", f"{self.group}-{i}", *options,
                ],
                f"processor-{i}",
            )  # fmt: skip

    def start_passthrough(self, partitions: int) -> None:
        self.start(
            [
                sys.executable, "-m", "benchmarks.passthrough",
                "--bootstrap-servers", self.config.bootstrap_servers,
                "--topic-prefix", self.config.topic_prefix,
                "--group", self.group, "--partitions", str(partitions),
            ],
            "passthrough",
        )  # fmt: skip

    def wait_stable(self, partitions: int, timeout: float = 120) -> None:
        """Until the group is stable with every member holding partitions, all assigned."""
        admin = AdminClient({"bootstrap.servers": self.config.bootstrap_servers})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                desc = admin.describe_consumer_groups([self.group])[self.group].result()
            except KafkaException:
                time.sleep(0.2)
                continue
            owned = [len(m.assignment.topic_partitions) for m in desc.members]
            if (
                str(desc.state).endswith("STABLE")
                and len(owned) == len(self.procs)
                and all(owned)
                and sum(owned) == partitions
            ):
                time.sleep(1.0)  # let on_assign (the restore) finish
                return
            time.sleep(0.2)
        raise RuntimeError(f"group {self.group} not stable after {timeout} s; logs in {self.logs}")

    def cpu_s(self) -> float:
        """CPU seconds the processes have spent so far."""
        return sum(process_cpu_s(proc.pid) for proc in self.procs)

    def _check_alive(self) -> None:
        for proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"a benchmark process exited with {proc.returncode}; logs in {self.logs}"
                )

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
