"""The restore's events fold (`PartitionFold`) gives every workflow of a partition the
state `evolve` gives it, whatever the interleaving of their events: a run of one
command's UPDATED events is folded by its last event alone."""

from __future__ import annotations

from confluent_kafka import KafkaError, Message
from hypothesis import example, given, settings
from hypothesis import strategies as st

from duroot_stream.domain import (
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    WorkflowDeleted,
    WorkflowEvent,
    WorkflowState,
    encode_ulid,
    evolve,
    initial_state,
)
from duroot_stream.processor.fold import PartitionFold, feed
from duroot_stream.wire import Codec

WORKFLOWS = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
)
PAYLOADS = st.one_of(
    st.builds(
        DuRootStarted,
        st.sampled_from(["aaaaaaaa-0000-4000-8000-000000000001"]),
        st.sampled_from(["/g/a", "/g/b"]),
        st.sampled_from(["h1", "h2"]),
        st.sampled_from(["/a", "/b"]),
    ),
    st.builds(DuUpdated, st.sampled_from(["", "d", "dir/x"]), st.integers(0, 10)),
    st.builds(DuUpdated, st.sampled_from(["", "d", "dir/x"]), st.integers(0, 10)),
    st.just(DuRootCompleted(0, "")),
    st.just(DuRootCommitted()),
)
# Few command ids, so that runs of one command's events come often.
COMMAND_IDS = st.sampled_from([encode_ulid((7 << 80) | n) for n in range(3)])
STEPS = st.lists(
    st.tuples(
        st.integers(0, len(WORKFLOWS) - 1),
        st.one_of(st.tuples(PAYLOADS, COMMAND_IDS), st.just("deleted")),
    ),
    max_size=150,
)


def message(key: bytes, value: bytes | None, offset: int) -> Message:
    return Message(topic="events", partition=0, offset=offset, key=key, value=value)


C1, C2 = encode_ulid(7 << 80), encode_ulid((7 << 80) | 1)
STARTED = DuRootStarted("aaaaaaaa-0000-4000-8000-000000000001", "/g/a", "h1", "/a")


@settings(max_examples=300, deadline=None)
@given(STEPS, st.booleans())
# An UPDATED of another command after one of C1: a new run, not C1's.
@example([(0, (STARTED, C1)), (0, (DuUpdated("d", 1), C2)), (0, (DuUpdated("e", 1), C1))], False)
def test_the_fold_of_a_partition_equals_evolve_per_workflow(
    steps: list[tuple[int, tuple[EventPayload, str] | str]], registry: bool
) -> None:
    codec = Codec("mock://fold" if registry else None)
    states = {w: initial_state(w) for w in WORKFLOWS}
    messages: list[Message] = []
    for n, (w, step) in enumerate(steps):
        workflow_id, state = WORKFLOWS[w], states[WORKFLOWS[w]]
        if step == "deleted":
            states[workflow_id] = evolve(state, WorkflowDeleted(workflow_id))
            messages.append(message(f"{workflow_id}/{state.seq}".encode(), None, n))
            continue
        assert not isinstance(step, str)
        payload, command_id = step
        vid = encode_ulid(((1_700_000_000_000 + n) << 80) | n)
        event = WorkflowEvent(vid, state.vid, workflow_id, state.seq, command_id, payload)
        states[workflow_id] = evolve(state, event)
        value = codec.encode_event(event, validate=False)
        messages.append(message(event.key.encode(), value, n))
    fold = PartitionFold()
    assert feed(messages, {0: fold}, codec) == []
    folded = fold.finish(codec)
    expected: dict[str, WorkflowState] = {w: s for w, s in states.items() if _present(w, messages)}
    assert folded == expected
    for workflow_id, state in folded.items():
        assert state.recent_commands == expected[workflow_id].recent_commands
    assert fold.records == len(messages)


def _present(workflow_id: str, messages: list[Message]) -> bool:
    """Whether the workflow's last record is an event (not the tombstone of a delete)."""
    mine = [m for m in messages if (m.key() or b"").split(b"/")[0] == workflow_id.encode()]
    return bool(mine) and mine[-1].value() is not None


def test_feed_gives_records_to_their_partitions_sinks_and_returns_the_rest() -> None:
    codec = Codec()
    event = WorkflowEvent(
        encode_ulid(1 << 80),
        encode_ulid(0),
        WORKFLOWS[0],
        0,
        encode_ulid(2 << 80),
        DuUpdated("d", 1),
    )
    value = codec.encode_event(event, validate=False)
    eof = Message(
        topic="events", partition=1, offset=1, error=KafkaError(KafkaError._PARTITION_EOF)
    )
    records = [
        Message(topic="events", partition=p, offset=0, key=event.key.encode(), value=value)
        for p in (0, 1)
    ]
    folds = {0: PartitionFold(), 1: PartitionFold()}
    assert feed([records[0], eof, records[1]], folds, codec) == [eof]
    assert [f.records for f in folds.values()] == [1, 1]
