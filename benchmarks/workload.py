"""Workloads for the benchmarks: histories, commands, and the reports of what they measured.

- `write_histories`: workflow histories written straight to events topics as
  the processor writes them (keys `<wf>/<seq>`, the codec's Avro bodies and
  `event_headers`, vids from `MonotonicUlids`), encoded once and produced to
  every topic given, much faster than running commands through a processor.
- `append_commands`: `Append` commands with one path each, round robin over
  workflows, encoded once (`benchmarks.drain` holds them back and times their drain).
- `write_report`, `machine_load`: each benchmark's JSON report, and the load it saw.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from benchmarks.results import Load
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

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

REPO = Path(__file__).resolve().parents[1]
REGISTRY_ID = "0b0c8d4e-1111-4222-8333-444455556666"
# Records as (topic, partition, key, value, headers).
Record = tuple[str, int, bytes, bytes, list[tuple[str, bytes]]]


def log(message: str) -> None:
    """A progress line on stderr."""
    print(f"  {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def write_report(name: str, quick: bool, result: DataclassInstance | Mapping[str, object]) -> Path:
    """bench-results/<name>.json: the figures, the machine, its load now."""
    out = REPO / "bench-results" / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "benchmark": name,
        "quick": quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_after": asdict(machine_load()),
        "results": result if isinstance(result, Mapping) else asdict(result),
    }
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return out


def machine_load(what: str = "") -> Load:
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
    return Load(round(one, 2), round(five, 2), round(fifteen, 2))


@contextmanager
def bootstrap(
    log_file: Path | None = None, settings: Mapping[str, str] | None = None
) -> Iterator[str]:
    """`DUROOT_BOOTSTRAP_SERVERS` if set, else a local broker of its own (with
    `settings` on top of its server properties)."""
    external = os.environ.get("DUROOT_BOOTSTRAP_SERVERS")
    if external:
        if settings:
            raise RuntimeError(
                f"broker settings {dict(settings)} need a local broker: unset "
                "DUROOT_BOOTSTRAP_SERVERS or set them on the broker itself"
            )
        yield external
        return
    from duroot_stream.local.broker import LocalBroker

    started = time.monotonic()
    with LocalBroker(log_file=log_file, settings=settings) as broker:
        log(f"broker {broker.bootstrap} up in {time.monotonic() - started:.0f} s")
        yield broker.bootstrap


def fresh_topics(bootstrap_servers: str, partitions: int) -> KafkaConfig:
    """A new topic prefix with its topics created, every partition led."""
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


def new_producer(config: KafkaConfig, **extra: object) -> Producer:
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


def produce_all(producer: Producer, records: Iterable[Record]) -> int:
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
    producer = new_producer(config, acks="all")
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
            produce_all(producer, records)
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
