"""The du-root decider beyond the table's cells: Init, field validation, the version
check, completion with its automatic End, Delete (test_decider_table.py has the
table, test_decider_dedupe.py dedupe, evolve, expiry and replies)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from duroot_stream import compiled
from duroot_stream.domain import (
    EVENT_EPOCH,
    NO_VC,
    RETRY_NO_VC,
    Accepted,
    Append,
    CommandBody,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    End,
    ErrorCode,
    Fail,
    IndexCompleted,
    IndexStarted,
    PathUsage,
    Reply,
    StateCode,
    WorkflowEvent,
    WorkflowState,
    decide,
    decode_ulid,
    encode_ulid,
    event_key,
    initial_state,
    reply_for,
)
from tests.domain.decider_cases import (
    APPEND,
    HISTORIES,
    INIT,
    REGISTRY,
    STARTED,
    T0,
    UPDATED,
    WF,
    Ids,
    accepted,
    cmd,
    given,
    rejected,
    successor,
    ulid,
)

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


def test_the_events_of_an_append_take_their_ids_in_one_run() -> None:
    class Run(Ids):
        """Ids with the processor's `many(floor, n)`: asked once for a command's ids."""

        runs = 0

        def many(self, floor: str, n: int) -> list[str]:
            self.runs += 1
            first = self(floor)
            return [first] + [encode_ulid(decode_ulid(first) + k) for k in range(1, n)]

    ids = Run()
    paths = tuple(PathUsage(f"d{i}", i) for i in range(5))
    state = given(STARTED)
    a = accepted(decide(state, cmd(Append(paths)), ids))
    assert ids.runs == 1 and ids.count == 1
    assert [e.parent for e in a.events] == [state.vid] + [e.event_id for e in a.events[:-1]]
    assert a.state.vid == a.events[-1].event_id
    # One event: one id, asked for as any source is.
    accepted(decide(a.state, cmd(Append(paths[:1])), ids))
    assert ids.runs == 1 and ids.count == 2


def test_a_run_of_ids_that_does_not_increase_is_a_programmer_error() -> None:
    class Stuck:
        def __call__(self, previous: str) -> str:
            return successor(previous)

        def many(self, floor: str, n: int) -> list[str]:
            return [floor] * n

    paths = (PathUsage("a", 1), PathUsage("b", 2))
    with pytest.raises(ValueError, match="not 2 above"):
        decide(given(STARTED), cmd(Append(paths)), Stuck())


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
