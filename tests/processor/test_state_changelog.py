"""The state topic on the in-memory Kafka (no broker): one state record per workflow a
transaction changed, a tombstone for a deleted one, nothing for an aborted batch; the
snapshot of a partition restored from its events, marker last; and, over random
histories with deletes and garbage collection, the compacted state records read back
(`StateRead`) are the full fold of the events (`PartitionFold`)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from confluent_kafka import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    Append,
    CommandBody,
    Commit,
    Delete,
    End,
    Fail,
    Init,
    PathUsage,
    WorkflowState,
)
from duroot_stream.processor import collector
from duroot_stream.processor.fold import PartitionFold
from duroot_stream.processor.settings import ProcessorSettings
from duroot_stream.processor.state_store import (
    FoldedStates,
    Snapshot,
    StateRead,
    last_event_problem,
)
from duroot_stream.wire import MARKER_KEY, decode_marker, decode_state, partition_for
from tests.processor.memory import PARTITIONS, MemoryProcessor, Written
from tests.processor.test_engine_batches import Clock
from tests.processor_harness import command, new_workflow_id

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
DAY_S = 24 * 3600
GC_STEPS = {"commit": 0, "expire": DAY_S + 1, "delete": 6 * DAY_S + 1}  # clock jumps


def state_records(p: MemoryProcessor) -> list[Written]:
    return p.kafka.records(p.topics.state)


def as_message(record: Written, offset: int) -> Message:
    return Message(
        topic=record.topic,
        partition=record.partition,
        offset=offset,
        key=record.key,
        value=record.value,
    )


def test_one_state_record_per_changed_workflow_per_transaction() -> None:
    p = MemoryProcessor()
    a, b, untouched = new_workflow_id(), new_workflow_id(), new_workflow_id()
    assert p.request(command(untouched, INIT)).ok
    before = len(state_records(p))
    for wf in (a, b):
        for body in (INIT, Append((PathUsage("x", 1),)), Append((PathUsage("y", 2),))):
            p.send(command(wf, body))
    assert p.run_batch()
    written = state_records(p)[before:]
    assert sorted(r.key or b"" for r in written) == sorted([a.encode(), b.encode()])
    for record in written:
        assert record.value is not None
        wf = record.key.decode()  # type: ignore[union-attr]
        assert record.partition == partition_for(wf, PARTITIONS)
        assert decode_state(record.value) == p.state(wf)
    assert p.counted("state_records", {"kind": "state"}) == before + 2


def test_a_rejected_or_duplicate_command_writes_no_state() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    init = command(wf, INIT)
    assert p.request(init).ok
    before = len(state_records(p))
    p.send(init)  # a duplicate
    assert p.run_batch() and p.counted("commands", {"command": "Init", "outcome": "duplicate"})
    assert not p.request(command(new_workflow_id(), Commit())).ok, "not initialized"
    assert len(state_records(p)) == before


def test_a_deleted_workflow_gets_a_tombstone() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    for body in (INIT, Commit()):
        assert p.request(command(wf, body)).ok
    assert p.request(command(wf, Delete())).ok
    last = state_records(p)[-1]
    assert (last.key, last.value) == (wf.encode(), None)
    assert p.counted("state_records", {"kind": "tombstone"}) == 1


def test_an_aborted_batch_writes_no_state_and_its_redo_writes_it_once() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    p.send(command(wf, INIT))
    p.kafka.abort_commits = 1
    assert not p.run_batch()
    assert state_records(p) == []
    assert p.run_batch()
    assert [r.key for r in state_records(p)] == [wf.encode()]


def test_a_partition_restored_from_its_events_is_snapshotted_marker_last() -> None:
    p = MemoryProcessor()
    held = {wf: _initialized(wf) for wf in _ids(4, partition=1)}
    p.workflows.restored(1, FoldedStates(held, Snapshot(42)))
    assert p.workflows.snapshots == {1: Snapshot(42)}
    assert p.run_batch()  # no command: the collector begins a transaction for it
    written = [r for r in state_records(p) if r.partition == 1]
    assert written[-1].key == MARKER_KEY
    assert written[-1].value is not None
    marker = decode_marker(written[-1].value)
    assert (marker.events_end, marker.written_by) == (42, "memory-processor")
    assert sorted(r.key or b"" for r in written[:-1]) == sorted(wf.encode() for wf in held)
    assert p.kafka.commit_offsets[-1] == {1: 0}, "sent offsets: a zombie's snapshot is fenced"
    assert p.workflows.snapshots == {}
    count = len(state_records(p))
    assert p.run_batch() and len(state_records(p)) == count, "once"


def test_a_snapshot_whose_transaction_aborts_is_written_again() -> None:
    p = MemoryProcessor()
    p.workflows.restored(2, FoldedStates({}, Snapshot(0)))
    p.kafka.abort_commits = 1
    assert not p.run_batch()
    assert p.workflows.snapshots == {2: Snapshot(0)}
    assert p.run_batch()
    assert [r.key for r in state_records(p)] == [MARKER_KEY]


def test_a_snapshot_tombstones_the_records_the_fold_did_not_find() -> None:
    p = MemoryProcessor()
    kept, gone = _ids(2, partition=0)
    stale = (gone.encode(), b"not-a-workflow", kept.encode())
    p.workflows.restored(0, FoldedStates({kept: _initialized(kept)}, Snapshot(3, stale)))
    assert p.run_batch()
    written = [(r.key, r.value is None) for r in state_records(p)]
    assert written == [
        (gone.encode(), True),
        (b"not-a-workflow", True),
        (kept.encode(), False),
        (MARKER_KEY, False),
    ]


def _ids(n: int, partition: int) -> list[str]:
    """`n` workflow ids of `partition`."""
    found: list[str] = []
    while len(found) < n:
        wf = new_workflow_id()
        if partition_for(wf, PARTITIONS) == partition:
            found.append(wf)
    return found


def _initialized(wf: str) -> WorkflowState:
    """`wf` initialized on a scratch processor: a state to restore."""
    scratch = MemoryProcessor()
    assert scratch.request(command(wf, INIT)).ok
    state = scratch.state(wf)
    assert state is not None
    return state


# --- the property: the compacted state is the fold of the events ---------------------

BODIES: list[CommandBody] = [  # Init twice: most commands need it first
    INIT,
    INIT,
    Append((PathUsage("a", 1), PathUsage("b", 2))),
    Append((PathUsage("c", 3),)),
    Commit(),
    Fail(1, "failed"),
    End(),
    Delete(),
]
# (workflow, body index); "commit" a transaction; a clock jump past max_active
# ("expire": AbortExpired) or past delete_after too ("delete"), garbage collection's
Step = tuple[int, int] | str
_command_step = st.tuples(st.integers(0, 5), st.integers(0, len(BODIES) - 1))
steps = st.lists(
    st.one_of(_command_step, _command_step, _command_step, st.sampled_from(list(GC_STEPS))),
    min_size=5,
    max_size=80,
)


@contextmanager
def _gc_clock() -> Iterator[Clock]:
    """The garbage collector's clocks, as test_engine_batches' fixture sets them (a
    fixture is not reset between the examples of a property test)."""
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(collector, "time", SimpleNamespace(monotonic=clock.monotonic))
        patch.setattr(collector, "now_ms", clock.now_ms)
        yield clock


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps, st.integers(0, 2**32))
def test_the_compacted_state_is_the_fold_of_the_events(run: list[Step], seed: int) -> None:
    workflows = [str(uuid.UUID(int=(seed << 8) + i + 1, version=4)) for i in range(6)]
    with _gc_clock() as clock:
        p = MemoryProcessor(ProcessorSettings(KafkaConfig(topic_prefix="mem.")))
        for partition in range(PARTITIONS):  # as restored from (empty) events
            p.workflows.restored(partition, FoldedStates({}, Snapshot(0)))
        for step in run:
            if isinstance(step, tuple):
                p.send(command(workflows[step[0]], BODIES[step[1]]))
            else:
                clock.offset_s += GC_STEPS[step]
                assert p.run_batch()
        assert p.run_batch()
    for partition in range(PARTITIONS):
        read, fold = StateRead(), PartitionFold()
        state = [r for r in state_records(p) if r.partition == partition]
        for offset, record in enumerate(state):
            read.add(as_message(record, offset), p.codec)
        events = [r for r in p.kafka.records(p.topics.events) if r.partition == partition]
        for offset, record in enumerate(events):
            fold.add(as_message(record, offset), p.codec)
        from_state, reason, detail = read.states(len(events))
        assert from_state is not None, (reason, detail)
        assert from_state == fold.finish(p.codec) == p.workflows.of(partition)
        if events:
            last = events[-1]
            assert last_event_problem(from_state, last.key or b"", last.value, p.codec) is None


def test_a_last_event_that_is_not_in_the_state_is_found() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    assert p.request(command(wf, INIT)).ok
    (started,) = p.events_of(wf)
    key, value = started.key or b"", started.value
    held = {wf: _initialized(wf)}  # another history of the same workflow: another head
    assert last_event_problem(p.workflows.of(started.partition), key, value, p.codec) is None
    problem = last_event_problem(held, key, value, p.codec)
    assert problem is not None and "not in the state" in problem
    assert last_event_problem({}, key, value, p.codec) is not None, "a workflow the state lacks"
    deleted = last_event_problem(held, f"{wf}/0".encode(), None, p.codec)
    assert deleted is not None and "deletes" in deleted
    assert last_event_problem({}, f"{wf}/0".encode(), None, p.codec) is None
