"""The du-root decider's dedupe of repeated command ids, `evolve`, the expiry command
of garbage collection, and the replies."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from duroot_stream.domain import (
    NO_VC,
    RECENT_COMMANDS,
    AbortExpired,
    Accepted,
    Append,
    CommandBody,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuUpdated,
    End,
    ErrorCode,
    EventPayload,
    Fail,
    PathUsage,
    Reply,
    StateCode,
    WorkflowDeleted,
    WorkflowEvent,
    decide,
    evolve,
    expiry_command,
    initial_state,
    reply_for,
)
from tests.domain.decider_cases import (
    APPEND,
    HISTORIES,
    INIT,
    STARTED,
    T0,
    UPDATED,
    WF,
    Ids,
    accepted,
    cmd,
    given,
    rejected,
    ulid,
)

# --- dedupe -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "column"),
    [
        (INIT, StateCode.UNINITIALIZED),
        (APPEND, StateCode.APPENDING),
        (Commit(), StateCode.APPENDING),
        (Fail(9, "x"), StateCode.INITIALIZED),
        (AbortExpired(), StateCode.APPENDING),
        (End(), StateCode.COMPLETED),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, StateCode) else v.name,
)
def test_a_repeated_command_id_gets_the_same_reply_and_emits_nothing(
    body: CommandBody, column: StateCode
) -> None:
    ids = Ids()
    state = given(*HISTORIES[column], ids=ids)
    command = cmd(body, expected_vid=state.vid)
    first = accepted(decide(state, command, ids))
    second = decide(first.state, command, ids)
    assert second == Accepted(state=first.state, vid=first.vid, duplicate=True)
    assert reply_for(command, second) == reply_for(command, first)


def test_a_repeated_delete() -> None:
    # Delete forgets the history, and with it the remembered command ids (the
    # state must be what a restore from the compacted topic gives: nothing).
    # Without a version check the retry is the UNINITIALIZED no-op, the same
    # reply; with one, the deleted head it names is stale.
    state = given(*HISTORIES[StateCode.TERMINATED])
    unchecked = cmd(Delete(), expected_vid=NO_VC)
    first = accepted(decide(state, unchecked, Ids()))
    again = decide(first.state, unchecked, Ids())
    assert reply_for(unchecked, again) == reply_for(unchecked, first)

    checked = cmd(Delete(), expected_vid=state.vid)
    first = accepted(decide(state, checked, Ids()))
    assert rejected(decide(first.state, checked, Ids())).code is ErrorCode.VERSION_CONFLICT


def test_dedupe_comes_before_the_version_check() -> None:
    ids = Ids()
    state = given(STARTED, ids=ids)
    command = cmd(APPEND, expected_vid=state.vid)
    first = accepted(decide(state, command, ids))
    later = accepted(decide(first.state, cmd(APPEND), ids)).state
    # The expected vid is stale now, but the retry is recognised.
    retry = accepted(decide(later, command, ids))
    assert retry.duplicate
    assert retry.vid == first.vid
    assert retry.state is later


def test_dedupe_remembers_the_last_recent_commands() -> None:
    ids = Ids()
    state = given(STARTED, ids=ids)
    sent = []
    for _ in range(RECENT_COMMANDS + 1):
        command = cmd(Append((PathUsage("a", 1), PathUsage("b", 2))))
        state = accepted(decide(state, command, ids)).state
        sent.append(command)
    assert len(state.recent_commands) == RECENT_COMMANDS
    assert [c for c, _ in state.recent_commands] == [c.command_id for c in sent[1:]]
    # The oldest is forgotten: sent again, it is a new command.
    assert len(accepted(decide(state, sent[0], ids)).events) == 2
    # The others are remembered.
    for command in sent[1:]:
        assert accepted(decide(state, command, ids)).duplicate


def test_rejections_and_no_ops_are_not_remembered() -> None:
    state = given(STARTED)
    assert accepted(decide(state, cmd(INIT), Ids())).state.recent_commands == state.recent_commands
    conflict = cmd(End())
    rejected(decide(state, conflict, Ids()))
    assert conflict.command_id not in dict(state.recent_commands)


def test_evolve_moves_a_reappearing_command_id_last() -> None:
    state = given(STARTED)
    first_id = state.recent_commands[0][0]
    for i in range(3):
        state = evolve(
            state, WorkflowEvent(ulid(T0, 100 + i), state.vid, WF, state.seq, f"c{i}", UPDATED)
        )
    state = evolve(state, WorkflowEvent(ulid(T0, 200), state.vid, WF, state.seq, first_id, UPDATED))
    assert [c for c, _ in state.recent_commands] == ["c0", "c1", "c2", first_id]
    assert state.recent_commands[-1] == (first_id, ulid(T0, 200))


# --- evolve -------------------------------------------------------------------


def test_evolve_rejects_unknown_events() -> None:
    @dataclass(frozen=True)
    class DuExploded:
        pass

    state = given(STARTED)
    bad = WorkflowEvent(ulid(T0, 99), state.vid, WF, 1, "c", DuExploded())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        evolve(state, bad)
    with pytest.raises(TypeError):
        evolve(state, "STARTED")  # type: ignore[arg-type]


def test_evolve_reads_only_the_type_of_payloads_other_than_started() -> None:
    # The processor's restore relies on this to skip decoding those bodies.
    state = given(STARTED)
    pairs: list[tuple[EventPayload, EventPayload]] = [
        (DuUpdated("a/b", 99), DuUpdated("", 0)),
        (DuRootCompleted(7, "du failed"), DuRootCompleted(0, "")),
        (DuRootCommitted(), DuRootCommitted()),
    ]
    for real, stub in pairs:
        event = WorkflowEvent(ulid(T0, 50), state.vid, WF, state.seq, "c", real)
        assert evolve(state, event) == evolve(state, event._replace(payload=stub))


def test_evolve_deleted_returns_to_the_initial_state() -> None:
    assert evolve(given(*HISTORIES[StateCode.TERMINATED]), WorkflowDeleted(WF)) == initial_state(WF)


# --- garbage collection -------------------------------------------------------

DAY = 86_400_000


@pytest.mark.parametrize(
    ("column", "now", "expected"),
    [
        (StateCode.UNINITIALIZED, T0 + 100 * DAY, None),
        (StateCode.INITIALIZED, T0 + DAY, None),
        (StateCode.INITIALIZED, T0 + DAY + 1, AbortExpired()),
        (StateCode.APPENDING, T0 + DAY, None),
        (StateCode.APPENDING, T0 + DAY + 1, AbortExpired()),
        (StateCode.COMPLETED, T0 + 60_000 + 5 * DAY, None),
        (StateCode.COMPLETED, T0 + 60_000 + 5 * DAY + 1, Delete()),
        (StateCode.TERMINATED, T0 + 60_000 + 5 * DAY, None),
        (StateCode.TERMINATED, T0 + 60_000 + 5 * DAY + 1, Delete()),
        (StateCode.TERMINATED, T0 + 2 * DAY, None),  # started long ago, completed recently
    ],
)
def test_expiry_command(
    column: StateCode, now: int, expected: AbortExpired | Delete | None
) -> None:
    # Started at T0, completed (if at all) a minute later.
    state = given(*HISTORIES[column], completed_ms=T0 + 60_000)
    assert expiry_command(state, now, max_active_ms=DAY, delete_after_ms=5 * DAY) == expected


def test_expiry_command_on_a_long_running_du() -> None:
    ids = Ids()
    state = accepted(decide(initial_state(WF), cmd(INIT), ids)).state
    ids.ms = T0 + 2 * DAY  # still appending two days later: the age counts from STARTED
    state = accepted(decide(state, cmd(APPEND), ids)).state
    assert expiry_command(state, T0 + 2 * DAY, DAY, 5 * DAY) == AbortExpired()


# --- replies ------------------------------------------------------------------


def test_reply_for_rejection() -> None:
    command = cmd(End())
    decision = decide(given(STARTED), command, Ids())
    assert reply_for(command, decision) == Reply(
        command_id=command.command_id,
        workflow_id=WF,
        ok=False,
        vid=None,
        error=ErrorCode.CONFLICT_STATE,
        message="command End conflicts with state INITIALIZED",
    )


def test_reply_for_no_op() -> None:
    state = given(STARTED)
    command = cmd(INIT)
    assert reply_for(command, decide(state, command, Ids())) == Reply(
        command.command_id, WF, True, state.vid, None, ""
    )
