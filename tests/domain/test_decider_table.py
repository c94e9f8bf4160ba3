"""The du-root decider, cell by cell: given events, when a command, then events or a
rejection. docs/contract.md "The state machine" is the specification; `TABLE` below
is that table."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from duroot_stream.domain import (
    EVENT_EPOCH,
    STATUS_CODE_EXPIRED,
    AbortExpired,
    Accepted,
    CommandBody,
    Commit,
    Delete,
    DuRootCompleted,
    DuUpdated,
    End,
    ErrorCode,
    EventPayload,
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexPayload,
    IndexStarted,
    StateCode,
    decide,
    initial_state,
)
from tests.domain.decider_cases import (
    APPEND,
    COMMITTED,
    COMPLETED_OK,
    HISTORIES,
    INIT,
    REGISTRY,
    STARTED,
    WF,
    Ids,
    accepted,
    cmd,
    given,
    rejected,
)

# --- the table ----------------------------------------------------------------


@dataclass(frozen=True)
class Emits:
    payloads: tuple[EventPayload, ...]
    index: IndexPayload | None
    then: StateCode


@dataclass(frozen=True)
class NoOp:
    pass


@dataclass(frozen=True)
class Deleted:
    pass


@dataclass(frozen=True)
class Rejects:
    code: ErrorCode


Outcome = Emits | NoOp | Deleted | Rejects

STARTS = Emits(
    (STARTED,), IndexStarted(INIT.global_root, INIT.host, INIT.host_root), StateCode.INITIALIZED
)
UPDATES = Emits((DuUpdated("a", 4096), DuUpdated("a/b", 1024)), None, StateCode.APPENDING)
COMMITS = Emits((COMPLETED_OK, COMMITTED), IndexCompleted(0, ""), StateCode.TERMINATED)
FAILS = Emits(
    (DuRootCompleted(3, "boom"), COMMITTED), IndexCompleted(3, "boom"), StateCode.TERMINATED
)
EXPIRES = Emits(
    (DuRootCompleted(STATUS_CODE_EXPIRED, "expired"), COMMITTED),
    IndexCompleted(STATUS_CODE_EXPIRED, "expired"),
    StateCode.TERMINATED,
)
ENDS = Emits((COMMITTED,), None, StateCode.TERMINATED)
STATE = Rejects(ErrorCode.CONFLICT_STATE)
ADVANCED = Rejects(ErrorCode.CONFLICT_STATE_ADVANCED)

COMMANDS: dict[str, CommandBody] = {
    "Init": INIT,
    "Append": APPEND,
    "Commit": Commit(),
    "Fail": Fail(3, "boom"),
    "AbortExpired": AbortExpired(),
    "End": End(),
    "Delete": Delete(),
}
COLUMNS = (
    StateCode.UNINITIALIZED,
    StateCode.INITIALIZED,
    StateCode.APPENDING,
    StateCode.COMPLETED,
    StateCode.TERMINATED,
)
# fmt: off
TABLE: dict[str, tuple[Outcome, Outcome, Outcome, Outcome, Outcome]] = {
    #               UNINIT     INIT      APPENDING  COMPLETED  TERMINATED
    "Init":         (STARTS,   NoOp(),   ADVANCED,  ADVANCED,  ADVANCED),
    "Append":       (STATE,    UPDATES,  UPDATES,   STATE,     STATE),
    "Commit":       (STATE,    COMMITS,  COMMITS,   NoOp(),    STATE),
    "Fail":         (STATE,    FAILS,    FAILS,     NoOp(),    STATE),
    "AbortExpired": (STATE,    EXPIRES,  EXPIRES,   NoOp(),    NoOp()),
    "End":          (STATE,    STATE,    STATE,     ENDS,      NoOp()),
    "Delete":       (NoOp(),   STATE,    STATE,     Deleted(), Deleted()),
}
# fmt: on

CELLS = [
    pytest.param(name, column, TABLE[name][i], id=f"{name}-in-{column.name}")
    for name in TABLE
    for i, column in enumerate(COLUMNS)
]


def test_table_has_every_cell() -> None:
    assert len(CELLS) == 7 * 5
    assert set(TABLE) == set(COMMANDS)


@pytest.mark.parametrize(("name", "column", "outcome"), CELLS)
def test_cell(name: str, column: StateCode, outcome: Outcome) -> None:
    ids = Ids()
    state = given(*HISTORIES[column], ids=ids)
    assert state.code is column
    command = cmd(COMMANDS[name], expected_vid=state.vid)

    decision = decide(state, command, ids)

    match outcome:
        case Emits(payloads, index, then):
            d = accepted(decision)
            assert [e.payload for e in d.events] == list(payloads)
            parent = state.vid
            for i, event in enumerate(d.events):
                assert event.parent == parent
                assert event.event_id > parent
                assert event.seq == state.seq + i
                assert event.workflow_id == WF
                assert event.command_id == command.command_id
                parent = event.event_id
            if index is None:
                assert d.index_events == ()
            else:
                (ix,) = d.index_events
                assert ix.payload == index
                assert ix.workflow_event_id == d.events[0].event_id  # mirrors STARTED/COMPLETED
                assert ix.registry_id == REGISTRY
                assert ix.workflow_id == WF
                assert ix.event_id > d.events[-1].event_id  # a fresh id
            assert d.deleted_keys == ()
            assert d.index_tombstone is False
            assert d.state.code is then
            assert d.vid == d.state.vid == d.events[-1].event_id
            assert d.duplicate is False
        case NoOp():
            d = accepted(decision)
            assert d == Accepted(state=state, vid=state.vid)
        case Deleted():
            d = accepted(decision)
            assert d.events == ()
            assert d.deleted_keys == tuple(f"{WF}/{seq}" for seq in range(len(HISTORIES[column])))
            (ix,) = d.index_events
            assert ix.payload == IndexDeleted()
            assert ix.workflow_event_id == state.vid
            assert ix.registry_id == REGISTRY
            assert ix.event_id > state.vid
            assert d.index_tombstone is True
            assert d.state == initial_state(WF)
            assert d.vid == EVENT_EPOCH
        case Rejects(code):
            r = rejected(decision)
            assert r.code is code
            assert name in r.message
            assert column.name in r.message
