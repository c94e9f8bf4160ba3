"""Properties of the du-root decider over random command sequences.

Several workflows, random commands (valid or not, fresh or re-sent, with
every kind of expected vid). After every step the live history (what a
restore from the compacted event topic sees) must rebuild the state exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import hypothesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duroot_stream.domain import (
    EVENT_EPOCH,
    NO_VC,
    RECENT_COMMANDS,
    RETRY_NO_VC,
    AbortExpired,
    Accepted,
    Append,
    Command,
    CommandBody,
    Commit,
    Decision,
    Delete,
    DuRootStarted,
    End,
    Fail,
    Init,
    PathUsage,
    Reply,
    StateCode,
    WorkflowDeleted,
    WorkflowEvent,
    WorkflowState,
    decide,
    event_key,
    evolve,
    initial_state,
    reply_for,
)

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
WORKFLOWS = (
    "11111111-1111-4111-8111-111111111111",
    "22222222-2222-4222-8222-222222222222",
    "33333333-3333-4333-8333-333333333333",
)
REGISTRIES = (
    "aaaaaaaa-0000-4000-8000-000000000001",
    "aaaaaaaa-0000-4000-8000-000000000002",
    "00000000-0000-0000-0000-000000000000",  # nil: invalid
    "not-a-uuid",
)


def ulid(ms: int, entropy: int) -> str:
    value = (ms << 80) | entropy
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


class Ids:
    """A deterministic, monotonic IdSource whose clock the test moves forward."""

    def __init__(self) -> None:
        self.ms = 1_700_000_000_000
        self.count = 0

    def __call__(self, previous: str) -> str:
        self.count += 1
        new = ulid(self.ms, self.count)
        assert new > previous
        return new


@dataclass
class Workflow:
    state: WorkflowState
    history: list[WorkflowEvent] = field(default_factory=list)  # live events
    sent: list[Command] = field(default_factory=list)
    first_replies: dict[str, Reply] = field(default_factory=dict)
    last_id: str = EVENT_EPOCH  # the greatest event id ever written, deleted or not


def _bodies() -> st.SearchStrategy[CommandBody]:
    roots = st.sampled_from(["/g/a", "/g/b", ""])
    hosts = st.sampled_from(["h1", "h2", ""])
    paths = st.builds(PathUsage, st.text(max_size=8), st.integers(min_value=-1, max_value=2**40))
    return st.one_of(
        st.builds(Init, st.sampled_from(REGISTRIES), roots, hosts, roots),
        st.builds(Init, st.just(REGISTRIES[0]), st.just("/g/a"), st.just("h1"), st.just("/g/a")),
        st.builds(Append, st.lists(paths, min_size=0, max_size=4).map(tuple)),
        st.just(Commit()),
        st.builds(Fail, st.integers(min_value=-2, max_value=2), st.text(max_size=8)),
        st.just(AbortExpired()),
        st.just(End()),
        st.just(Delete()),
    )


BODIES = _bodies()


def replay(workflow_id: str, history: list[WorkflowEvent]) -> WorkflowState:
    state = initial_state(workflow_id)
    for event in history:
        state = evolve(state, event)
    return state


def last_commands(history: list[WorkflowEvent]) -> tuple[tuple[str, str], ...]:
    """The model of `recent_commands`: last vid per command id, by last appearance."""
    last: dict[str, str] = {}
    for event in history:
        last.pop(event.command_id, None)
        last[event.command_id] = event.event_id
    return tuple(last.items())[-RECENT_COMMANDS:]


def check_history(wf: Workflow) -> None:
    parent = EVENT_EPOCH
    for seq, event in enumerate(wf.history):
        assert event.seq == seq  # no gaps
        assert event.parent == parent  # chained
        assert event.event_id > parent  # strictly increasing
        parent = event.event_id
    replayed = replay(wf.state.workflow_id, wf.history)
    assert replayed == wf.state  # ignoring nothing
    assert wf.state.recent_commands == last_commands(wf.history)


def check_step(wf: Workflow, before: WorkflowState, command: Command, d: Decision) -> None:
    if not isinstance(d, Accepted):
        assert wf.state == before
        return
    if d.duplicate:  # the reply of the first time, which may be an older vid
        assert (d.events, d.index_events, d.deleted_keys, d.index_tombstone) == ((), (), (), False)
        assert d.state == before
        assert reply_for(command, d) == wf.first_replies[command.command_id]
        return
    assert d.vid == d.state.vid
    if not d.events and not d.deleted_keys:  # a no-op
        assert d.state == before
        assert d.index_events == ()
    for event in d.events:
        assert event.workflow_id == before.workflow_id
        assert event.command_id == command.command_id
        assert event.event_id > wf.last_id  # vids increase, even across Delete
        wf.last_id = event.event_id
    for ix in d.index_events:
        assert ix.workflow_id == before.workflow_id
        mirrored = {e.event_id for e in d.events} | {before.vid}
        assert ix.workflow_event_id in mirrored
    if d.deleted_keys:
        assert d.deleted_keys == tuple(e.key for e in wf.history)
        assert all(k.startswith(before.workflow_id + "/") for k in d.deleted_keys)
        assert d.index_tombstone
        assert d.state == initial_state(before.workflow_id)
        assert d.vid == EVENT_EPOCH
    else:
        assert not d.index_tombstone


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_random_command_sequences(data: st.DataObject) -> None:
    ids = Ids()
    workflows = {w: Workflow(initial_state(w)) for w in WORKFLOWS}
    steps = data.draw(st.integers(min_value=1, max_value=50), label="steps")
    for _ in range(steps):
        wf = workflows[data.draw(st.sampled_from(WORKFLOWS), label="workflow")]
        ids.ms += data.draw(st.integers(min_value=0, max_value=10**9), label="elapsed ms")
        command = draw_command(data, wf, ids)
        before = wf.state

        d = decide(before, command, ids)
        hypothesis.event(outcome(d))

        check_step(wf, before, command, d)
        if isinstance(d, Accepted) and not d.duplicate:
            if d.deleted_keys:
                wf.history.clear()
            wf.history.extend(d.events)
            wf.state = d.state
            if d.events:
                wf.first_replies[command.command_id] = reply_for(command, d)
            check_idempotent(wf, command, d, ids)
            if d.deleted_keys:
                check_init_after_delete(wf, ids)
        wf.sent.append(command)
        check_history(wf)


def outcome(d: Decision) -> str:
    if isinstance(d, Accepted):
        if d.duplicate:
            return "duplicate"
        return "deleted" if d.deleted_keys else f"{len(d.events)} events"
    return d.code.name


def draw_command(data: st.DataObject, wf: Workflow, ids: Ids) -> Command:
    if wf.sent and data.draw(st.integers(0, 4), label="resend?") == 0:
        return data.draw(st.sampled_from(wf.sent), label="resent command")
    stale = [e.parent for e in wf.history] + [EVENT_EPOCH, ulid(1, 1)]
    expected_vid = data.draw(
        st.one_of(
            st.sampled_from([NO_VC, RETRY_NO_VC, wf.state.vid, wf.state.vid]),
            st.sampled_from(stale),
        ),
        label="expected vid",
    )
    ids.count += 1
    return Command(
        command_id=ulid(0, ids.count),
        workflow_id=wf.state.workflow_id,
        expected_vid=expected_vid,
        issued_at=ids.ms,
        body=data.draw(BODIES, label="body"),
    )


def check_idempotent(wf: Workflow, command: Command, first: Accepted, ids: Ids) -> None:
    """Re-sending an accepted command emits nothing and gets the same reply."""
    again = decide(wf.state, command, ids)
    assert isinstance(again, Accepted) or _is_checked_delete(command, first)
    if isinstance(again, Accepted):
        assert again.events == ()
        assert again.state == wf.state
        assert reply_for(command, again) == reply_for(command, first)
    # The commands idempotent by the table are so under a new command id, too.
    if isinstance(command.body, Init | AbortExpired | End | Delete):
        ids.count += 1
        fresh = Command(ulid(0, ids.count), command.workflow_id, NO_VC, ids.ms, command.body)
        repeated = decide(wf.state, fresh, ids)
        assert isinstance(repeated, Accepted)
        assert repeated.events == ()
        assert repeated.vid == wf.state.vid


def _is_checked_delete(command: Command, first: Accepted) -> bool:
    # Delete forgets the command ids with the history; the head it named is gone.
    return bool(first.deleted_keys) and command.expected_vid not in (NO_VC, RETRY_NO_VC)


def check_init_after_delete(wf: Workflow, ids: Ids) -> None:
    assert wf.history == []
    assert wf.state == initial_state(wf.state.workflow_id)
    init = Init(REGISTRIES[1], "/g/b", "h2", "/g/b")
    ids.count += 1
    command = Command(ulid(0, ids.count), wf.state.workflow_id, EVENT_EPOCH, ids.ms, init)
    d = decide(wf.state, command, ids)
    assert isinstance(d, Accepted)
    (started,) = d.events
    assert started.seq == 0
    assert started.parent == EVENT_EPOCH
    assert started.key == event_key(wf.state.workflow_id, 0)
    assert started.payload == DuRootStarted(REGISTRIES[1], "/g/b", "h2", "/g/b")
    assert d.state.code is StateCode.INITIALIZED


# ULIDs (the binary form of recent.py), a few that repeat, and arbitrary text (the text form).
RECENT_IDS = (
    st.sampled_from([ulid(9, n) for n in range(5)])
    | st.sampled_from(["a", "b", "c", "d", "e"])
    | st.text(max_size=3)
)


@given(st.lists(RECENT_IDS, max_size=80))
def test_recent_commands_are_the_last_distinct_command_ids(command_ids: list[str]) -> None:
    ids = Ids()
    state = initial_state(WORKFLOWS[0])
    history: list[WorkflowEvent] = []
    for seq, command_id in enumerate(command_ids):
        payload = DuRootStarted(REGISTRIES[0], "/g", "h", "/r")
        event = WorkflowEvent(
            ids(state.vid), state.vid, state.workflow_id, seq, command_id, payload
        )
        history.append(event)
        state = evolve(state, event)
        assert len(state.recent_commands) <= RECENT_COMMANDS
    assert state.recent_commands == last_commands(history)
    assert evolve(state, WorkflowDeleted(state.workflow_id)) == initial_state(state.workflow_id)
