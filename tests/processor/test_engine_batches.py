"""The engine a transaction at a time, on the in-memory Kafka (no broker): an aborted
batch leaves the workflows exactly as they were and its commands are consumed again;
a batch aborted (or lost to a timed-out commit) and then redone is applied and
counted once; garbage collection expires and deletes old workflows in bounded
chunks, fences a chunk without commands, and redoes an aborted chunk at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    Append,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    IndexDeleted,
    Init,
    PathUsage,
    StateCode,
)
from duroot_stream.ids import now_ms
from duroot_stream.processor import collector
from duroot_stream.processor.settings import ProcessorSettings
from duroot_stream.wire import partition_for
from tests.processor.memory import MemoryProcessor
from tests.processor_harness import command, new_workflow_id

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
DAY_S = 24 * 3600.0


def batch_of_every_kind(p: MemoryProcessor) -> tuple[list[str], list[str]]:
    """Workflows a, b, c committed; then one batch that changes, completes, deletes,
    creates, refuses and dead-letters: its correlation ids, and the workflows."""
    a, b, c, d = (new_workflow_id() for _ in range(4))
    for wf in (a, b, c):
        assert p.request(command(wf, INIT)).ok
    assert p.request(command(c, Commit())).ok
    batch = [
        command(a, Append((PathUsage("x", 1), PathUsage("y", 2)))),
        command(b, Commit()),
        command(c, Delete()),
        command(d, INIT),
        command(d, Append((PathUsage("z", 3),))),
        command(a, Init(str(uuid.UUID(int=8)), "/other", "h", "/r")),  # refused
    ]
    correlations = [p.routed(cmd) for cmd in batch]
    undecodable = command(b, INIT)
    correlations.append(p.routed(undecodable, value=b"not a command"))  # dead-lettered
    return correlations, [a, b, c, d]


def test_an_aborted_batch_leaves_every_workflow_as_it_was_and_is_consumed_again() -> None:
    p = MemoryProcessor()
    correlations, _ = batch_of_every_kind(p)
    before = p.snapshot()
    identities = {(part, wf): id(s) for part, ws in before.items() for wf, s in ws.items()}
    written = {t: len(p.kafka.records(t)) for t in p.kafka.partitions}
    gauges = p.workflows.counts.copy()
    positions = dict(p.kafka.position)
    pending = {part for part, log in p.kafka.commands.items() if len(log) > positions[part]}
    p.kafka.abort_commits = 1
    assert not p.run_batch()
    assert p.snapshot() == before
    after = {(part, wf): id(s) for part, ws in p.snapshot().items() for wf, s in ws.items()}
    assert after == identities, "the very states from before are back"
    assert p.workflows.counts == gauges
    assert {t: len(p.kafka.records(t)) for t in p.kafka.partitions} == written
    assert p.kafka.rewinds == [{part: positions[part] for part in pending}]
    assert p.kafka.position == positions, "its commands come again"
    assert p.run_batch(), "redone"
    assert [p.reply(c).ok for c in correlations] == [True] * 5 + [False] * 2


def test_a_batch_aborted_then_redone_is_applied_and_counted_once() -> None:
    aborted, straight = MemoryProcessor(), MemoryProcessor()
    for p, aborts in ((aborted, 1), (straight, 0)):
        batch_of_every_kind(p)
        p.kafka.abort_commits = aborts
        assert p.run_batch() is (aborts == 0)
        if aborts:
            assert p.run_batch()
    for name in ("commands", "events", "index_events", "tombstones", "dead_letters"):
        samples = {
            tuple(sorted(s.labels.items())): s.value
            for m in straight.metrics.registry.collect()
            if m.name == f"duroot_processor_{name}"
            for s in m.samples
            if s.name.endswith("_total")
        }
        assert samples, name
        for labels, value in samples.items():
            assert aborted.counted(name, dict(labels)) == value, (name, labels)
    assert aborted.counted("transactions", {"result": "aborted"}) == 1
    assert aborted.counted("transactions", {"result": "committed"}) == straight.counted(
        "transactions", {"result": "committed"}
    )
    sum_of = aborted.metrics.registry.get_sample_value
    assert sum_of("duroot_processor_batch_size_commands_count") == aborted.kafka.commits
    for p in (aborted, straight):
        payloads = sorted(
            type(p.codec.decode_event(r.value).payload).__name__
            for r in p.kafka.records(p.topics.events)
            if r.value is not None
        )
        assert payloads == sorted(
            type(straight.codec.decode_event(r.value).payload).__name__
            for r in straight.kafka.records(straight.topics.events)
            if r.value is not None
        )


def test_a_commit_lost_to_a_timeout_is_undone_and_redone_once() -> None:
    p = MemoryProcessor()
    correlations, (a, *_) = batch_of_every_kind(p)
    before = p.snapshot()
    p.kafka.lose_commits = 1
    assert not p.run_batch()
    assert p.snapshot() == before and p.kafka.aborts == [], "over without an abort call"
    assert p.run_batch()
    assert [p.reply(c).ok for c in correlations] == [True] * 5 + [False] * 2
    assert p.counted("commands", {"command": "Append", "outcome": "ok"}) == 2
    assert len([r for r in p.events_of(a) if r.value is not None]) == 3


class Clock:
    """The garbage collector's clocks, `offset_s` ahead of the real ones."""

    def __init__(self) -> None:
        self.offset_s = 0.0

    def monotonic(self) -> float:
        return time.monotonic() + self.offset_s

    def now_ms(self) -> int:
        return now_ms() + int(self.offset_s * 1000)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Clock]:
    made = Clock()
    monkeypatch.setattr(collector, "time", SimpleNamespace(monotonic=made.monotonic))
    monkeypatch.setattr(collector, "now_ms", made.now_ms)
    yield made


def gc_processor(**settings: float) -> MemoryProcessor:
    return MemoryProcessor(ProcessorSettings(KafkaConfig(topic_prefix="mem."), **settings))  # type: ignore[arg-type]


def test_garbage_collection_expires_then_deletes_old_workflows_counted_once(clock: Clock) -> None:
    p = gc_processor()
    active, done = new_workflow_id(), new_workflow_id()
    for cmd in (command(active, INIT), command(done, INIT), command(done, Commit())):
        assert p.request(cmd).ok
    clock.offset_s = DAY_S + 1  # past max_active (a day): AbortExpired for the active one
    assert p.run_batch()
    state = p.state(active)
    assert state is not None and state.code is StateCode.TERMINATED
    payloads = [p.codec.decode_event(r.value).payload for r in p.events_of(active)]
    assert payloads[-2:] == [DuRootCompleted(104, "expired"), DuRootCommitted()]
    assert p.counted("gc_commands", {"command": "AbortExpired"}) == 1
    clock.offset_s += 5 * DAY_S + 1  # past delete_after (five days): Delete both
    assert p.run_batch()
    assert p.state(active) is None and p.state(done) is None
    assert p.counted("gc_commands", {"command": "Delete"}) == 2
    for wf in (active, done):
        tombstoned = [r.key for r in p.events_of(wf) if r.value is None]
        assert len(tombstoned) == len({r.key for r in p.events_of(wf)}), wf
        index = [r for r in p.kafka.records(p.topics.index) if r.key == wf.encode()]
        assert index[-1].value is None
        assert isinstance(p.codec.decode_index_event(index[-2].value).payload, IndexDeleted)
    assert p.run_batch() and p.counted("gc_commands", {"command": "Delete"}) == 2


def test_garbage_collection_goes_in_bounded_chunks_and_fences_them(clock: Clock) -> None:
    p = gc_processor(gc_chunk_records=10)
    workflows = [new_workflow_id() for _ in range(12)]
    for wf in workflows:
        p.routed(command(wf, INIT))
    assert p.run_batch()
    positions = dict(p.kafka.position)
    clock.offset_s = DAY_S + 1
    chunks = []
    while p.collector.due():
        written = len(p.kafka.records(p.topics.events)) + len(p.kafka.records(p.topics.index))
        assert p.run_batch()
        chunks.append(
            len(p.kafka.records(p.topics.events)) + len(p.kafka.records(p.topics.index)) - written
        )
        # No command consumed: the chunk commits the positions of its partitions.
        sent = p.kafka.commit_offsets[-1]
        assert sent and sent.items() <= positions.items()
    assert chunks == [9, 9, 9, 9], "three AbortExpired (three records each) per chunk of 10"
    assert p.counted("gc_commands", {"command": "AbortExpired"}) == 12
    homes = {partition_for(wf, 3) for wf in workflows}
    assert set().union(*p.kafka.commit_offsets[-4:]) == homes


def test_an_aborted_chunk_of_garbage_collection_is_redone_at_once_and_counted_once(
    clock: Clock,
) -> None:
    p = gc_processor(gc_interval_s=3600.0)
    wf = new_workflow_id()
    assert p.request(command(wf, INIT)).ok
    state = p.state(wf)
    clock.offset_s = 3600.0 + DAY_S  # the pass is due, and the workflow expired
    p.kafka.abort_commits = 1
    assert not p.run_batch()
    assert p.state(wf) is state and p.batches.gc_aborted
    assert p.collector.due(), "redone in the next batch, not at the next pass an hour on"
    assert p.run_batch()
    assert not p.collector.due()
    assert p.counted("gc_commands", {"command": "AbortExpired"}) == 1
    assert len([r for r in p.events_of(wf) if r.value is not None]) == 3
