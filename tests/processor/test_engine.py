"""The engine, one command at a time, on the in-memory Kafka (no broker): what an
accepted command writes (events, index, reply: keys, partitions, headers), what a
refused one is answered, and what becomes of records that cannot be applied (dead
letters with their reason, cut to fit when too large)."""

from __future__ import annotations

import uuid

import pytest

from duroot_stream.domain import (
    EVENT_EPOCH,
    AbortExpired,
    Append,
    CommandBody,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    End,
    ErrorCode,
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexStarted,
    Init,
    PathUsage,
)
from duroot_stream.wire import (
    CORRELATION_ID,
    parse_event_headers,
    partition_for,
    reply_route_headers,
)
from tests.processor.memory import MemoryProcessor
from tests.processor_harness import command, new_workflow_id

REGISTRY = str(uuid.UUID(int=7))
INIT = Init(REGISTRY, "/g/root", "files1", "/data/root")
# The contract's limits (docs/contract.md), as numbers: not imported from the code.
CONTRACT_COMMAND_MAX_BYTES = 990_000
CONTRACT_DEAD_LETTER_MAX_BYTES = 990_000

Headers = list[tuple[str, str | bytes | None]]


def completions(p: MemoryProcessor, wf: str) -> list[DuRootCompleted]:
    payloads = [p.codec.decode_event(r.value).payload for r in p.events_of(wf) if r.value]
    return [e for e in payloads if isinstance(e, DuRootCompleted)]


def test_an_accepted_command_writes_its_events_index_and_reply() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    home = partition_for(wf, 3)
    init = command(wf, INIT)
    append = command(wf, Append((PathUsage("a", 1024), PathUsage("b", 2048))))
    commit = command(wf, Commit())
    replies = [p.routed(c) for c in (init, append, commit)]
    assert p.run_batch()
    answers = [p.reply(c) for c in replies]
    assert all(a.ok and a.error is None and a.workflow_id == wf for a in answers)
    assert [a.command_id for a in answers] == [
        init.command_id,
        append.command_id,
        commit.command_id,
    ]

    records = p.events_of(wf)
    events = [p.codec.decode_event(r.value) for r in records]
    assert [e.payload for e in events] == [
        DuRootStarted(REGISTRY, "/g/root", "files1", "/data/root"),
        DuUpdated("a", 1024),
        DuUpdated("b", 2048),
        DuRootCompleted(0, ""),
        DuRootCommitted(),
    ]
    assert [r.key for r in records] == [f"{wf}/{seq}".encode() for seq in range(5)]
    assert {r.partition for r in records} == {home}, "events are co-partitioned with commands"
    headers = [parse_event_headers(r.headers) for r in records]
    assert [(h.vid, h.parent, h.seq) for h in headers] == [
        (e.event_id, e.parent, e.seq) for e in events
    ]
    assert [h.command_id for h in headers] == [init.command_id] + [append.command_id] * 2 + [
        commit.command_id
    ] * 2
    assert [e.parent for e in events] == [EVENT_EPOCH] + [e.event_id for e in events[:-1]]
    assert answers[-1].vid == events[-1].event_id, "the reply names the head after the End"

    index = p.kafka.records(p.topics.index)
    assert {(r.key, r.partition) for r in index} == {(wf.encode(), partition_for(wf, 3))}
    entries = [p.codec.decode_index_event(r.value) for r in index]
    assert [type(i.payload) for i in entries] == [IndexStarted, IndexCompleted]
    assert [i.workflow_event_id for i in entries] == [events[0].event_id, events[3].event_id]

    written = p.kafka.records(p.topics.replies)
    assert [(r.partition, r.key, r.header(CORRELATION_ID)) for r in written] == [
        (0, c.encode(), c.encode()) for c in replies
    ]
    state = p.state(wf)
    assert state is not None and state.vid == events[-1].event_id and state.seq == len(events)
    assert p.counted("commands", {"command": "Append", "outcome": "ok"}) == 1
    assert p.counted("events", {"event_type": "DuUpdated"}) == 2
    assert p.counted("index_events", {"event_type": "IndexCompleted"}) == 1


@pytest.mark.parametrize(
    ("setup", "body", "error"),
    [
        ([], Append((PathUsage("x", 1),)), ErrorCode.CONFLICT_STATE),
        ([], Commit(), ErrorCode.CONFLICT_STATE),
        ([INIT], Init(REGISTRY, "/other", "files1", "/data/root"), ErrorCode.CONFLICT_INIT),
        ([INIT], End(), ErrorCode.CONFLICT_STATE),
        ([INIT, Commit()], INIT, ErrorCode.CONFLICT_STATE_ADVANCED),
        ([INIT, Commit()], Append((PathUsage("x", 1),)), ErrorCode.CONFLICT_STATE),
        ([], Init(REGISTRY, "/g", "", "/r"), ErrorCode.INVALID_ARGUMENT),
        ([INIT], Fail(0, "no code"), ErrorCode.INVALID_ARGUMENT),
    ],
    ids=[
        "append-uninit",
        "commit-uninit",
        "init-different",
        "end-initialized",
        "init-terminated",
        "append-terminated",
        "init-empty-host",
        "fail-code-0",
    ],
)
def test_a_rejected_command_is_answered_and_changes_nothing(
    setup: list[CommandBody], body: CommandBody, error: ErrorCode
) -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    for before in setup:
        assert p.request(command(wf, before)).ok
    state, written = p.state(wf), len(p.kafka.records(p.topics.events))
    answer = p.request(command(wf, body))
    assert not answer.ok and answer.error is error and answer.vid is None and answer.message
    assert p.state(wf) is state
    assert len(p.kafka.records(p.topics.events)) == written
    labels = {"command": type(body).__name__, "outcome": error.value.lower()}
    assert p.counted("commands", labels) == 1


def test_idempotent_no_ops_fail_and_abort_expired() -> None:
    p, wf, wf2 = MemoryProcessor(), new_workflow_id(), new_workflow_id()
    first = p.request(command(wf, INIT))
    assert p.request(command(wf, INIT)).vid == first.vid, "the same Init again is a no-op"
    done = p.request(command(wf, Fail(3, "disk on fire")))
    assert p.request(command(wf, AbortExpired())).vid == done.vid
    assert p.request(command(wf, End())).vid == done.vid
    assert p.request(command(wf2, INIT)).ok and p.request(command(wf2, AbortExpired())).ok
    assert completions(p, wf) == [DuRootCompleted(3, "disk on fire")]
    assert completions(p, wf2) == [DuRootCompleted(104, "expired")]


def test_a_version_conflict_names_both_vids() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    v1 = p.request(command(wf, INIT)).vid
    assert v1 is not None
    v2 = p.request(command(wf, Append((PathUsage("a", 1),)), v1)).vid
    assert v2 is not None
    stale = p.request(command(wf, Append((PathUsage("b", 1),)), v1))
    assert stale.error is ErrorCode.VERSION_CONFLICT and v1 in stale.message and v2 in stale.message


def test_a_command_without_a_route_is_answered_on_the_replies_topic_keyed_by_its_id() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    bare = command(wf, INIT)
    p.send(bare)
    assert p.run_batch()
    [written] = p.kafka.records(p.topics.replies)
    assert written.key == bare.command_id.encode()
    assert written.partition == partition_for(bare.command_id, 3)
    assert written.headers is None
    assert p.codec.decode_reply(written.value).command_id == bare.command_id


def test_a_duplicate_command_gets_the_same_reply_and_writes_nothing() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    p.request(command(wf, INIT))
    append = command(wf, Append((PathUsage("a", 1),)))
    first = p.request(append)
    written = len(p.kafka.records(p.topics.events))
    headers: Headers = [*reply_route_headers(p.topics.replies, 0, "again")]
    p.send(append, headers=headers)
    assert p.run_batch()
    assert p.reply("again") == first and first.ok
    assert len(p.kafka.records(p.topics.events)) == written
    assert p.counted("commands", {"command": "Append", "outcome": "duplicate"}) == 1


def test_delete_tombstones_every_event_key_and_the_index_and_forgets_the_workflow() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    for body in (INIT, Append((PathUsage("a", 1), PathUsage("b", 2))), Commit()):
        assert p.request(command(wf, body)).ok
    deleted = p.request(command(wf, Delete()))
    assert deleted.ok and deleted.vid == EVENT_EPOCH
    assert p.state(wf) is None
    tombstones = [r.key for r in p.events_of(wf) if r.value is None]
    assert tombstones == [f"{wf}/{seq}".encode() for seq in range(5)]
    index = [r for r in p.kafka.records(p.topics.index) if r.key == wf.encode()]
    kinds = [
        None if r.value is None else type(p.codec.decode_index_event(r.value).payload)
        for r in index
    ]
    assert kinds == [IndexStarted, IndexCompleted, IndexDeleted, None]
    assert p.counted("tombstones", {"topic": "events"}) == 5
    assert p.counted("tombstones", {"topic": "index"}) == 1
    assert p.request(command(wf, INIT)).ok, "a deleted workflow can be initialized again"
