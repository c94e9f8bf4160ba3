"""The du-root decider, cell by cell: given events, when a command, then events or a rejection.

docs/contract.md "The state machine" is the specification; `TABLE` below is that table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from duroot_stream import compiled
from duroot_stream.domain import (
    EVENT_EPOCH,
    NO_VC,
    RECENT_COMMANDS,
    RETRY_NO_VC,
    STATUS_CODE_EXPIRED,
    AbortExpired,
    Accepted,
    Append,
    Command,
    CommandBody,
    Commit,
    Decision,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    End,
    ErrorCode,
    EventPayload,
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexPayload,
    IndexStarted,
    Init,
    PathUsage,
    Rejected,
    Reply,
    StateCode,
    WorkflowDeleted,
    WorkflowEvent,
    WorkflowState,
    decide,
    decode_ulid,
    encode_ulid,
    event_key,
    evolve,
    expiry_command,
    initial_state,
    reply_for,
)

WF = "7f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
REGISTRY = "0b0c8d4e-1111-4222-8333-444455556666"
T0 = 1_700_000_000_000  # ms; the time of the test ids


def ulid(ms: int, entropy: int) -> str:
    """ULID text: 10 Crockford chars of ms, 16 of entropy (the canonical layout)."""
    return encode_ulid((ms << 80) | entropy)


def successor(ulid_text: str) -> str:
    return encode_ulid(decode_ulid(ulid_text) + 1)


class Ids:
    """A deterministic IdSource: ULIDs at a settable time `ms`, counting up.

    Monotonic like the processor's: never at or below `previous`.
    """

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms
        self.count = 0

    def __call__(self, previous: str) -> str:
        self.count += 1
        new = ulid(self.ms, self.count)
        return new if new > previous else successor(previous)


class CommandIds:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return ulid(T0 - 1000, self.count)


next_command_id = CommandIds()


def cmd(body: CommandBody, expected_vid: str = NO_VC, command_id: str | None = None) -> Command:
    return Command(
        command_id=command_id or next_command_id(),
        workflow_id=WF,
        expected_vid=expected_vid,
        issued_at=T0,
        body=body,
    )


INIT = Init(REGISTRY, "/g/lab", "files.example.org", "/data/lab")
STARTED = DuRootStarted(REGISTRY, "/g/lab", "files.example.org", "/data/lab")
UPDATED = DuUpdated("a", 4096)
APPEND = Append((PathUsage("a", 4096), PathUsage("a/b", 1024)))
COMPLETED_OK = DuRootCompleted(0, "")
COMMITTED = DuRootCommitted()


def given(
    *payloads: EventPayload, ids: Ids | None = None, completed_ms: int | None = None
) -> WorkflowState:
    """The state after a history of `payloads` (written as the processor would).

    The ids are at `ids.ms`; from a DuRootCompleted on at `completed_ms`, if given.
    """
    ids = ids or Ids()
    state = initial_state(WF)
    for payload in payloads:
        if isinstance(payload, DuRootCompleted) and completed_ms is not None:
            ids.ms = completed_ms
        event = WorkflowEvent(
            event_id=ids(state.vid),
            parent=state.vid,
            workflow_id=WF,
            seq=state.seq,
            command_id=next_command_id(),
            payload=payload,
        )
        state = evolve(state, event)
    return state


HISTORIES: dict[StateCode, tuple[EventPayload, ...]] = {
    StateCode.UNINITIALIZED: (),
    StateCode.INITIALIZED: (STARTED,),
    StateCode.APPENDING: (STARTED, UPDATED),
    StateCode.COMPLETED: (STARTED, UPDATED, COMPLETED_OK),  # before the automatic End
    StateCode.TERMINATED: (STARTED, UPDATED, COMPLETED_OK, COMMITTED),
}


def accepted(decision: Decision) -> Accepted:
    assert isinstance(decision, Accepted), decision
    return decision


def rejected(decision: Decision) -> Rejected:
    assert isinstance(decision, Rejected), decision
    return decision


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


# --- Init ---------------------------------------------------------------------


def test_init_starts_and_indexes() -> None:
    ids = Ids(ms=T0 + 5)
    command = cmd(INIT, expected_vid=EVENT_EPOCH)
    d = accepted(decide(initial_state(WF), command, ids))
    (started,) = d.events
    assert started == WorkflowEvent(
        ulid(T0 + 5, 1), EVENT_EPOCH, WF, 0, command.command_id, STARTED
    )
    (ix,) = d.index_events
    assert ix.event_id == ulid(T0 + 5, 2)
    assert ix.registry_id == REGISTRY
    assert ix.workflow_event_id == started.event_id
    assert ix.payload == IndexStarted("/g/lab", "files.example.org", "/data/lab")
    assert d.state == WorkflowState(
        workflow_id=WF,
        code=StateCode.INITIALIZED,
        vid=started.event_id,
        seq=1,
        registry_id=REGISTRY,
        global_root="/g/lab",
        host="files.example.org",
        host_root="/data/lab",
        started_at=T0 + 5,
        completed_at=0,
        recent_commands=((command.command_id, started.event_id),),
    )


def test_init_again_with_the_same_fields_is_a_no_op() -> None:
    state = given(STARTED)
    assert accepted(decide(state, cmd(INIT), Ids())) == Accepted.no_op(state)


@pytest.mark.parametrize(
    "registry_id",
    [
        pytest.param(REGISTRY.upper(), id="upper-case"),
        pytest.param("0b0C8d4e-1111-4222-8333-444455556666", id="mixed-case"),
        pytest.param("{" + REGISTRY + "}", id="braces"),
        pytest.param("urn:uuid:" + REGISTRY, id="urn"),
    ],
)
def test_init_rejects_registry_ids_that_are_not_canonical_lowercase_text(
    registry_id: str,
) -> None:
    # One rule for id text (model.UUID_RE): not rewritten, not compared as a UUID.
    for column in (StateCode.UNINITIALIZED, StateCode.INITIALIZED):
        state = given(*HISTORIES[column])
        r = rejected(decide(state, cmd(replace(INIT, registry_id=registry_id)), Ids()))
        assert r.code is ErrorCode.INVALID_ARGUMENT
        assert "registry id" in r.message
        assert "must be canonical lower-case UUID text" in r.message


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        ("registry_id", "0b0c8d4e-1111-4222-8333-444455556667", "registry id"),
        ("global_root", "/g/other", "global root"),
        ("host", "other.example.org", "host"),
        ("host_root", "/data/other", "host root"),
    ],
)
def test_init_again_with_different_fields_conflicts(field: str, value: str, named: str) -> None:
    state = given(STARTED)
    r = rejected(decide(state, cmd(replace(INIT, **{field: value})), Ids()))
    assert r.code is ErrorCode.CONFLICT_INIT
    assert f"different {named}" in r.message


# --- field validation ---------------------------------------------------------

INVALID = [
    pytest.param(replace(INIT, registry_id=""), "registry id", id="Init-empty-registry"),
    pytest.param(replace(INIT, registry_id="not-a-uuid"), "registry id", id="Init-bad-registry"),
    pytest.param(
        replace(INIT, registry_id=REGISTRY.replace("-", "")), "registry id", id="Init-unhyphenated"
    ),
    pytest.param(replace(INIT, registry_id=REGISTRY + "0"), "registry id", id="Init-long-registry"),
    pytest.param(replace(INIT, registry_id=REGISTRY + "\n"), "registry id", id="Init-newline"),
    pytest.param(
        replace(INIT, registry_id="00000000-0000-0000-0000-000000000000"),
        "nil UUID",
        id="Init-nil-registry",
    ),
    pytest.param(replace(INIT, global_root=""), "global root", id="Init-empty-global-root"),
    pytest.param(replace(INIT, host=""), "host", id="Init-empty-host"),
    pytest.param(replace(INIT, host_root=""), "host root", id="Init-empty-host-root"),
    pytest.param(Fail(0, "nothing failed"), "code", id="Fail-code-0"),
    pytest.param(Fail(2**31, "too big"), "code", id="Fail-code-beyond-int32"),
    pytest.param(Append(()), "no paths", id="Append-no-paths"),
    pytest.param(Append((PathUsage("a", -1),)), "usage", id="Append-negative-usage"),
    pytest.param(Append((PathUsage("a", 2**63),)), "usage", id="Append-usage-beyond-long"),
]
# Fields of the wrong type, made only inside the test: the compiled model refuses them.
WRONG_TYPES = [
    pytest.param(
        lambda: Append((PathUsage("a", 1), PathUsage(b"b", 1))),  # type: ignore[arg-type]
        "path",
        id="Append-bytes-path",
    ),
    pytest.param(lambda: Fail(1.0, "x"), "code", id="Fail-float-code"),  # type: ignore[arg-type]
    pytest.param(lambda: Fail(1, None), "message", id="Fail-no-message"),  # type: ignore[arg-type]
    pytest.param(lambda: replace(INIT, host=None), "host", id="Init-host-None"),  # type: ignore[arg-type]
    # A bool is an int: the compiled model keeps it as the int (True is 1), a valid usage.
    pytest.param(lambda: Append((PathUsage("a", True),)), "usage", id="Append-bool-usage"),
]


@pytest.mark.parametrize(("body", "named"), INVALID)
def test_invalid_fields_are_rejected(body: CommandBody, named: str) -> None:
    for column in (StateCode.UNINITIALIZED, StateCode.APPENDING):
        state = given(*HISTORIES[column])
        # Validation comes before the version check: the expected vid is stale.
        r = rejected(decide(state, cmd(body, expected_vid=ulid(1, 1)), Ids()))
        assert r.code is ErrorCode.INVALID_ARGUMENT
        assert named in r.message


@pytest.mark.parametrize(("make", "named"), WRONG_TYPES)
def test_wrongly_typed_fields_never_get_through(
    make: Callable[[], CommandBody], named: str
) -> None:
    """The pure model takes any value and `decide` rejects it; the compiled model's
    classes check their fields' types, so such a body cannot even be made."""
    try:
        body = make()
    except TypeError:
        assert compiled.BUILD == "compiled"
        return
    if compiled.BUILD == "compiled":
        assert isinstance(body, Append) and type(body.paths[0].usage) is int
        return
    test_invalid_fields_are_rejected(body, named)


def test_valid_edge_values_are_accepted() -> None:
    state = given(STARTED)
    body = Append((PathUsage("", 0), PathUsage("x", 2**63 - 1)))
    assert len(accepted(decide(state, cmd(body), Ids())).events) == 2
    assert accepted(decide(state, cmd(Fail(-1, "")), Ids())).events[0].payload == (
        DuRootCompleted(-1, "")
    )


def test_unknown_command_type_is_invalid_command() -> None:
    @dataclass(frozen=True)
    class Frobnicate:
        pass

    try:
        command = cmd(Frobnicate())  # type: ignore[arg-type]
    except TypeError:  # the compiled Command takes only the command types
        assert compiled.BUILD == "compiled"
        return
    r = rejected(decide(given(STARTED), command, Ids()))
    assert r.code is ErrorCode.INVALID_COMMAND
    assert "Frobnicate" in r.message


def test_command_for_another_workflow_is_a_programmer_error() -> None:
    other = replace(cmd(Commit()), workflow_id="00000000-0000-4000-8000-000000000001")
    with pytest.raises(ValueError, match=r"workflow"):
        decide(given(STARTED), other, Ids())


def test_an_id_source_that_does_not_increase_is_a_programmer_error() -> None:
    with pytest.raises(ValueError, match="not greater"):
        decide(given(STARTED), cmd(Commit()), lambda previous: previous)


# --- version check ------------------------------------------------------------


def test_event_epoch_is_the_vid_of_an_empty_history() -> None:
    assert initial_state(WF).vid == EVENT_EPOCH
    accepted(decide(initial_state(WF), cmd(INIT, expected_vid=EVENT_EPOCH), Ids()))


@pytest.mark.parametrize("sentinel", [NO_VC, RETRY_NO_VC], ids=["NO_VC", "RETRY_NO_VC"])
def test_sentinels_skip_the_check(sentinel: str) -> None:
    cases: list[tuple[StateCode, CommandBody]] = [
        (StateCode.UNINITIALIZED, INIT),
        (StateCode.INITIALIZED, APPEND),
        (StateCode.APPENDING, Commit()),
    ]
    for column, body in cases:
        accepted(decide(given(*HISTORIES[column]), cmd(body, expected_vid=sentinel), Ids()))


def test_matching_vid_passes() -> None:
    state = given(STARTED, UPDATED)
    d = accepted(decide(state, cmd(APPEND, expected_vid=state.vid), Ids()))
    assert d.events[0].parent == state.vid


@pytest.mark.parametrize(
    ("column", "body"),
    [
        (StateCode.APPENDING, APPEND),  # would be accepted
        (StateCode.TERMINATED, APPEND),  # would be CONFLICT_STATE: the check comes first
        (StateCode.TERMINATED, End()),  # would be a no-op
        (StateCode.INITIALIZED, INIT),  # would be a no-op
    ],
)
def test_stale_vid_is_a_version_conflict_naming_both(column: StateCode, body: CommandBody) -> None:
    ids = Ids()
    stale = ids(EVENT_EPOCH)
    state = given(*HISTORIES[column], ids=ids)
    r = rejected(decide(state, cmd(body, expected_vid=stale), ids))
    assert r.code is ErrorCode.VERSION_CONFLICT
    assert r.message == f"version conflict: stored vid {state.vid}, expected vid {stale}"


def test_event_epoch_on_a_started_workflow_is_a_version_conflict() -> None:
    state = given(STARTED)
    r = rejected(decide(state, cmd(INIT, expected_vid=EVENT_EPOCH), Ids()))
    assert r.code is ErrorCode.VERSION_CONFLICT
    assert state.vid in r.message
    assert EVENT_EPOCH in r.message


# --- completion and the automatic End -----------------------------------------


def test_commit_completes_indexes_and_ends_in_one_decision() -> None:
    ids = Ids()
    state = given(STARTED, UPDATED, ids=ids)
    ids.ms = T0 + 60_000
    command = cmd(Commit(), expected_vid=state.vid)
    d = accepted(decide(state, command, ids))
    completed, committed = d.events
    assert completed.payload == DuRootCompleted(0, "")
    assert committed.payload == DuRootCommitted()
    assert committed.parent == completed.event_id
    assert completed.command_id == committed.command_id == command.command_id
    (ix,) = d.index_events
    assert ix.payload == IndexCompleted(0, "")
    assert ix.workflow_event_id == completed.event_id
    assert d.state.code is StateCode.TERMINATED
    assert d.state.completed_at == T0 + 60_000
    assert d.state.started_at == T0
    assert d.vid == committed.event_id
    assert reply_for(command, d) == Reply(command.command_id, WF, True, committed.event_id, None)


def test_commit_is_not_repeatable_after_the_automatic_end_except_as_a_duplicate() -> None:
    state = given(STARTED)
    command = cmd(Commit())
    first = accepted(decide(state, command, Ids()))
    again = accepted(decide(first.state, command, Ids()))
    assert again.duplicate and again.vid == first.vid
    other = rejected(decide(first.state, cmd(Commit()), Ids()))
    assert other.code is ErrorCode.CONFLICT_STATE


def test_end_completes_an_old_history_without_the_automatic_end() -> None:
    state = given(*HISTORIES[StateCode.COMPLETED])
    d = accepted(decide(state, cmd(End(), expected_vid=state.vid), Ids()))
    assert [e.payload for e in d.events] == [DuRootCommitted()]
    assert d.index_events == ()
    assert d.state.code is StateCode.TERMINATED
    assert d.state.completed_at == state.completed_at


# --- Delete -------------------------------------------------------------------


def test_delete_then_init_again() -> None:
    ids = Ids()
    state = initial_state(WF)
    for body in (INIT, APPEND, Fail(1, "du failed")):
        state = accepted(decide(state, cmd(body, expected_vid=state.vid), ids)).state
    assert state.code is StateCode.TERMINATED
    assert state.seq == 5  # STARTED, 2 UPDATED, COMPLETED, COMMITTED

    delete = cmd(Delete(), expected_vid=state.vid)
    d = accepted(decide(state, delete, ids))
    assert d.deleted_keys == tuple(event_key(WF, seq) for seq in range(5))
    assert d.index_tombstone
    assert d.state == initial_state(WF)
    assert reply_for(delete, d).vid == EVENT_EPOCH

    again = accepted(decide(d.state, cmd(Delete(), expected_vid=EVENT_EPOCH), ids))
    assert again == Accepted(state=d.state, vid=EVENT_EPOCH)

    init = accepted(decide(d.state, cmd(INIT, expected_vid=EVENT_EPOCH), ids))
    (started,) = init.events
    assert started.seq == 0
    assert started.parent == EVENT_EPOCH
    assert init.state.code is StateCode.INITIALIZED


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
