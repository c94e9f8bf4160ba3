"""Workloads for the processor benchmarks, and how their drains are timed.

- `write_histories`: workflow histories written straight to events topics as
  the processor writes them (keys `<wf>/<seq>`, the codec's Avro bodies and
  `event_headers`, vids from `MonotonicUlids`), encoded once and produced to
  every topic given, much faster than running commands through a processor.
- `append_commands`: `Append` commands with one path each, round robin over
  workflows, encoded once.
- `HeldCommands`: commands produced inside a transaction that stays open, so
  a read_committed consumer sees none of them until `release()` commits: the
  consumers join and settle first, and every drain starts at one instant.
- `Drain`: committed offsets of a consumer group, sampled until every
  command is committed; the sustained rate is taken between 10 % and 90 %.
- `ProcessSet`: `duroot-stream processor` (or the pass-through) instances as
  subprocesses, ready once their group is stable.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    NO_VC,
    Append,
    Command,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    PathUsage,
    WorkflowEvent,
)
from duroot_stream.ids import MonotonicUlids, new_ulid, now_ms
from duroot_stream.wire import Codec, Topics, create_topics, event_headers, partition_for

REPO = Path(__file__).resolve().parents[1]
REGISTRY_ID = "0b0c8d4e-1111-4222-8333-444455556666"
# Records as (topic, partition, key, value, headers).
Record = tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def write_report(name: str, quick: bool, results: Mapping[str, object]) -> Path:
    """bench-results/<name>.json: the figures, the machine, its load now."""
    out = REPO / "bench-results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": name,
        "quick": quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_after": machine_load(),
        "results": results,
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def machine_load(what: str = "") -> dict[str, float]:
    """The load averages now, and a warning on stderr when the machine is busy
    (more runnable work than cores over the last minute before this process's own
    load): figures measured then are low and noisy."""
    one, five, fifteen = os.getloadavg()
    cores = os.cpu_count() or 1
    if one > cores:
        log(
            f"WARNING: the machine is busy{' before ' + what if what else ''}: "
            f"load average {one:.1f} / {five:.1f} / {fifteen:.1f} on {cores} cores"
        )
    return {"load_1m": round(one, 2), "load_5m": round(five, 2), "load_15m": round(fifteen, 2)}


@contextmanager
def bootstrap(log_file: Path | None = None) -> Iterator[str]:
    """`DUROOT_BOOTSTRAP_SERVERS` if set, else a local broker of its own."""
    external = os.environ.get("DUROOT_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    from duroot_stream.local.broker import LocalBroker

    started = time.monotonic()
    with LocalBroker(log_file=log_file) as broker:
        log(f"broker {broker.bootstrap} up in {time.monotonic() - started:.0f} s")
        yield broker.bootstrap


def fresh_topics(bootstrap_servers: str, partitions: int) -> KafkaConfig:
    """A new topic prefix with the five topics created, every partition led."""
    config = KafkaConfig(
        bootstrap_servers=bootstrap_servers, topic_prefix=f"b{uuid.uuid4().hex[:8]}."
    )
    create_topics(config, partitions=partitions)
    topics = Topics(config.topic_prefix)
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "group.id": "bench-wait"})
    deadline = time.monotonic() + 60
    try:
        for topic in (topics.commands, topics.events, topics.index, topics.replies):
            for p in range(partitions):
                while True:
                    try:
                        consumer.get_watermark_offsets(TopicPartition(topic, p), 5)
                        break
                    except KafkaException:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.1)
    finally:
        consumer.close()
    return config


def workflow_ids(n: int, seed: int = 0) -> list[str]:
    """`n` workflow ids (random UUIDs, reproducible)."""
    import random

    rng = random.Random(seed)
    return [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]


def _producer(config: KafkaConfig, **extra: object) -> Producer:
    return Producer(
        config.client(
            **{
                "linger.ms": 50,
                "batch.size": 1_000_000,
                "queue.buffering.max.messages": 1_000_000,
                "queue.buffering.max.kbytes": 1_048_576,
                **extra,
            }
        )
    )


def _produce_all(producer: Producer, records: Iterable[Record]) -> int:
    count = 0
    for topic, partition, key, value, headers in records:
        while True:
            try:
                producer.produce(topic, value, key, partition, headers=list(headers))
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
        if count % 10_000 == 0:
            producer.poll(0)
    return count


# --- histories -------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryShape:
    """Each workflow: STARTED (Init), UPDATED lines sent as Appends of
    `paths_per_append`, then COMPLETED and COMMITTED (Commit) if `completed`."""

    events: int  # per workflow
    paths_per_append: int
    completed: bool = True
    roots: int = 20_000  # distinct global roots (workflows of one root repeat over time)
    hosts: int = 10

    def payloads(self, i: int) -> list[tuple[int, EventPayload]]:
        """(command number, payload) of workflow `i`'s history."""
        root = i % self.roots
        started = DuRootStarted(
            REGISTRY_ID,
            f"/example/data/root-{root}",
            f"files{i % self.hosts}.example.org",
            f"/srv/data/root-{root}",
        )
        out: list[tuple[int, EventPayload]] = [(0, started)]
        lines = self.events - 1 - (2 if self.completed else 0)
        for n in range(lines):
            out.append((1 + n // self.paths_per_append, DuUpdated(f"dir{n}", 4096 * (n + 1))))
        if self.completed:
            last = 2 + (lines - 1) // self.paths_per_append
            out += [(last, DuRootCompleted(0, "")), (last, DuRootCommitted())]
        return out


def write_histories(
    targets: Sequence[tuple[str, int]],
    config: KafkaConfig,
    workflows: list[str],
    shape: HistoryShape,
    concurrent: int = 100,
) -> int:
    """Write every workflow's history to each (events topic, partition count).

    Workflows run `concurrent` at a time, their events interleaved, as with
    many runners at once. Returns the number of events per topic.
    """
    codec = Codec()
    new_id = MonotonicUlids()
    producer = _producer(config, acks="all")
    written = 0
    for first in range(0, len(workflows), concurrent):
        group = list(range(first, min(first + concurrent, len(workflows))))
        histories = {i: shape.payloads(i) for i in group}
        commands = {i: [new_ulid() for _ in range(histories[i][-1][0] + 1)] for i in group}
        heads = dict.fromkeys(group, EVENT_EPOCH)
        routes = {i: [(t, partition_for(workflows[i], n)) for t, n in targets] for i in group}
        for seq in range(shape.events):
            records: list[Record] = []
            for i in group:
                wf = workflows[i]
                number, payload = histories[i][seq]
                vid = new_id(heads[i])
                event = WorkflowEvent(vid, heads[i], wf, seq, commands[i][number], payload)
                heads[i] = vid
                key, value, headers = (
                    f"{wf}/{seq}".encode(),
                    codec.encode_event(event, validate=False),
                    event_headers(event),
                )
                for topic, partition in routes[i]:
                    records.append((topic, partition, key, value, headers))
            _produce_all(producer, records)
            written += len(group)
    remaining = producer.flush(300)
    if remaining:
        raise RuntimeError(f"{remaining} events not delivered")
    return written


# --- commands ----------------------------------------------------------------------


def append_commands(workflows: list[str], n: int) -> list[tuple[str, bytes]]:
    """`n` Appends of one path each, round robin over `workflows`: (workflow, bytes)."""
    codec = Codec()
    issued = now_ms()
    out = []
    for i in range(n):
        wf = workflows[i % len(workflows)]
        body = Append((PathUsage(f"dir{i // len(workflows)}/f", 4096 * i),))
        out.append((wf, codec.encode_command(Command(new_ulid(), wf, NO_VC, issued, body))))
    return out


class HeldCommands:
    """Commands behind an open transaction: invisible to read_committed consumers
    until `release()`."""

    def __init__(self, config: KafkaConfig, partitions: int, commands: list[tuple[str, bytes]]):
        topic = Topics(config.topic_prefix).commands
        self.count = len(commands)
        self.producer = _producer(
            config,
            **{
                "transactional.id": f"bench-held-{uuid.uuid4().hex[:8]}",
                "transaction.timeout.ms": 600_000,
            },
        )
        self.producer.init_transactions(30)
        self.producer.begin_transaction()
        _produce_all(
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


@dataclass
class Drain:
    """Progress of a consumer group through `total` commands, from committed offsets."""

    released: float
    total: int
    samples: list[tuple[float, int]] = field(default_factory=list)  # (monotonic, committed)

    @property
    def seconds(self) -> float:
        return self.samples[-1][0] - self.released

    @property
    def rate(self) -> float:
        """Commands per second from release to the last commit seen."""
        return self.total / self.seconds

    @property
    def sustained_rate(self) -> float:
        """Commands per second between 10 % and 90 % committed (no start-up, no tail)."""
        low = next(s for s in self.samples if s[1] >= 0.1 * self.total)
        high = next(s for s in self.samples if s[1] >= 0.9 * self.total)
        if high[0] <= low[0]:
            return self.rate
        return (high[1] - low[1]) / (high[0] - low[0])


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
    config: KafkaConfig, group: str, partitions: int, held: HeldCommands, timeout: float = 900
) -> Drain:
    """Release `held` and sample `group`'s committed offsets until all are committed."""
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
            drain.samples.append((now, done))
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
