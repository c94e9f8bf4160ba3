"""Benchmark: `get` of a finished workflow with 10,000 du lines in a partition
holding 1,000,000 events.

The events are written straight to the topics as the processor writes them
(same keys, headers, Avro bodies, index entries; ULIDs from the processor's
generator), which takes a fraction of the time running them through the
processor would; `get` cannot tell the difference. Two layouts, each in a
partition of its own of the events topic:

- `sequential`: 100 workflows of 10,000 lines, one after another (runners
  that take turns); the measured workflow is in the middle.
- `interleaved`: the same 100 workflows appending concurrently, in batches
  of 1,000 lines in turn; the measured workflow's history spans the whole
  partition, the worst case for `get`.

Figures (seconds, best of several rounds): `get_du` of the measured workflow
in each layout; for comparison, a scan of the whole partition that decodes
only that workflow's events (`DuRootReader.events(workflow_id=…)`), which is
what a `get` without the index-and-timestamp seek would cost.

Run: `python -m benchmarks.get [--quick]` (quick: 10 workflows, so 100,000
events per partition);
uses `DUROOT_BOOTSTRAP_SERVERS` if set, else starts a local broker. Writes
bench-results/get.json.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict

from confluent_kafka import Producer

from benchmarks.results import GetResult
from benchmarks.workload import REGISTRY_ID, bootstrap, write_report
from duroot_stream.client import DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    IndexCompleted,
    IndexStarted,
    WorkflowEvent,
    WorkflowIndexEvent,
)
from duroot_stream.ids import MonotonicUlids, new_ulid
from duroot_stream.wire import Codec, Topics, create_topics, event_headers, partition_for

PARTITIONS = 6
Header = tuple[str, str | bytes | None]


def _ids_in(partition: int, n: int) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        wf = str(uuid.uuid4())
        if partition_for(wf, PARTITIONS) == partition:
            out.append(wf)
    return out


class _Writer:
    """Writes workflow histories as the processor would, one event at a time."""

    def __init__(self, config: KafkaConfig) -> None:
        self.topics = Topics(config.topic_prefix)
        self.codec = Codec()
        self.new_id = MonotonicUlids()
        self.producer = Producer(
            config.client(**{"linger.ms": 50, "batch.size": 1_000_000, "acks": "all"})
        )
        self.heads: dict[str, tuple[str, int]] = {}  # workflow -> (vid, next seq)
        self.count = 0

    def _produce(
        self, topic: str, partition: int, key: str, value: bytes, headers: Sequence[Header]
    ) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key.encode(), partition, headers=[*headers])
                return
            except BufferError:
                self.producer.poll(0.05)

    def event(self, wf: str, payload: EventPayload, command_id: str = "") -> WorkflowEvent:
        vid, seq = self.heads.get(wf, (EVENT_EPOCH, 0))
        event = WorkflowEvent(self.new_id(vid), vid, wf, seq, command_id or new_ulid(), payload)
        self.heads[wf] = (event.event_id, seq + 1)
        self._produce(
            self.topics.events,
            partition_for(wf, PARTITIONS),
            event.key,
            self.codec.encode_event(event),
            event_headers(event),
        )
        self.count += 1
        return event

    def index(
        self, wf: str, mirrored: WorkflowEvent, payload: IndexStarted | IndexCompleted
    ) -> None:
        entry = WorkflowIndexEvent(
            self.new_id(mirrored.event_id), REGISTRY_ID, wf, mirrored.event_id, payload
        )
        self._produce(
            self.topics.index,
            partition_for(wf, PARTITIONS),
            wf,
            self.codec.encode_index_event(entry),
            [],
        )

    def start(self, wf: str) -> None:
        started = self.event(wf, DuRootStarted(REGISTRY_ID, f"/bench/{wf}", "bench", "/srv"))
        self.index(wf, started, IndexStarted(f"/bench/{wf}", "bench", "/srv"))

    def lines(self, wf: str, first: int, n: int, per_command: int = 1000) -> None:
        """Lines as the runner sends them: Append commands of `per_command` lines."""
        for i in range(first, first + n):
            if (i - first) % per_command == 0:
                command_id = new_ulid()
            self.event(wf, DuUpdated(f"dir{i // 1000}/file{i}", i * 4096), command_id)

    def complete(self, wf: str) -> None:
        completed = self.event(wf, DuRootCompleted(0, ""))
        self.index(wf, completed, IndexCompleted(0, ""))
        self.event(wf, DuRootCommitted())

    def flush(self) -> None:
        assert self.producer.flush(120) == 0


def _populate(
    writer: _Writer, sequential: list[str], interleaved: list[str], lines: int, batch: int
) -> None:
    for wf in sequential:  # one after another
        writer.start(wf)
        writer.lines(wf, 0, lines)
        writer.complete(wf)
    for wf in interleaved:  # all at once, taking turns
        writer.start(wf)
    for first in range(0, lines, batch):
        for wf in interleaved:
            writer.lines(wf, first, min(batch, lines - first))
    for wf in interleaved:
        writer.complete(wf)
    writer.flush()


def _best(work: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def run(quick: bool = False) -> GetResult:
    lines, batch = 10_000, 1_000
    workflows = 10 if quick else 100  # per layout (partition)
    rounds = 3 if quick else 5
    with bootstrap() as servers:
        config = KafkaConfig(
            bootstrap_servers=servers, topic_prefix=f"bench{uuid.uuid4().hex[:8]}."
        )
        create_topics(config, partitions=PARTITIONS)
        sequential, interleaved = _ids_in(0, workflows), _ids_in(1, workflows)
        writer = _Writer(config)
        start = time.perf_counter()
        _populate(writer, sequential, interleaved, lines, batch)
        populate_s = time.perf_counter() - start
        reader = DuRootReader(config)
        target_seq, target_int = sequential[workflows // 2], interleaved[workflows // 2]

        for wf in (target_seq, target_int):  # correct before fast
            got = reader.get_du(wf)
            assert got.complete and len(got.lines) == lines, (wf, len(got.lines))
            assert got.lines[-1].path == f"dir{(lines - 1) // 1000}/file{lines - 1}"

        result = GetResult(
            events_per_partition=workflows * (lines + 3),
            lines=lines,
            get_sequential_s=_best(lambda: reader.get_du(target_seq), rounds),
            get_interleaved_s=_best(lambda: reader.get_du(target_int), rounds),
            full_partition_scan_s=_best(
                lambda: sum(1 for _ in reader.events(workflow_id=target_seq)), max(1, rounds - 2)
            ),
            populate_events_per_s=round(2 * workflows * (lines + 3) / populate_s),
        )
    _print_table(result)
    return result


def _print_table(result: GetResult) -> None:
    figures = asdict(result)
    width = max(len(k) for k in figures)
    print(f"{'get benchmark':<{width}}  {'value':>12}")
    for name, value in figures.items():
        shown = f"{value:>12,.0f}" if value >= 100 else f"{value:>12.3f}"
        print(f"{name:<{width}}  {shown}")


def main(argv: Sequence[str] = ()) -> GetResult:
    quick = "--quick" in argv
    result = run(quick=quick)
    print(f"wrote {write_report('get', quick, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
