"""The du-root workflow as a decider: `decide` a command against a workflow's state.

A port of nog's `durootwf` (du-root.go) onto an event-sourced core: `decide(state,
command, new_id)` answers a command with the events to append (`Accepted`) or a
`Rejected` and changes nothing; `evolve` (state.py) folds the state after its events
by the rules a restore folds the history with. Pure: ids come in through `new_id`,
times from the events' ULIDs, so the processor, the tests and a replay agree.

`decide` works in four steps, numbered the same in the code:

1. dedupe: a command id seen recently gets the reply it got the first time;
2. field validation (`INVALID_ARGUMENT`);
3. version check (`VERSION_CONFLICT`);
4. the state table (docs/contract.md), one small function per command, each a
   `match state.code:` over the states it accepts, as in du-root.go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, NamedTuple

from .model import (
    NO_VC,
    RETRY_NO_VC,
    STATUS_CODE_EXPIRED,
    STATUS_CODE_OK,
    STATUS_MESSAGE_EXPIRED,
    AbortExpired,
    Append,
    Command,
    CommandBody,
    Commit,
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
    Reply,
    StateCode,
    WorkflowEvent,
    WorkflowIndexEvent,
    event_key,
    new_tuple,
)
from .recent import lookup
from .state import WorkflowDeleted, WorkflowState, evolve
from .validation import argument_problem

# Given a ULID text, returns a new ULID text strictly greater than it.
IdSource = Callable[[str], str]
_Events = tuple[WorkflowEvent, ...]
_IndexEvents = tuple[WorkflowIndexEvent, ...]


class Accepted(NamedTuple):
    """Accepted: what to write, the state after. A NamedTuple: one is made per command."""

    state: WorkflowState  # the state after
    vid: str  # vid for the reply
    events: _Events = ()  # appended to the workflow history, in order
    index_events: _IndexEvents = ()  # in order
    deleted_keys: tuple[str, ...] = ()  # event keys "<wf>/<seq>" to tombstone (Delete only)
    index_tombstone: bool = False  # after Delete: tombstone the index key after the DELETED event
    duplicate: bool = False  # command id seen before: nothing emitted, same reply

    @classmethod
    def no_op(cls, state: WorkflowState) -> Accepted:
        """Nothing to change: no event, the vid unchanged (idempotent)."""
        return cls(state, state.vid)

    @classmethod
    def repeated(cls, state: WorkflowState, vid: str) -> Accepted:
        """A command seen before: nothing emitted, the vid it left the first time."""
        return cls(state, vid, duplicate=True)

    @classmethod
    def appended(
        cls, after: WorkflowState, events: _Events, index_events: _IndexEvents = ()
    ) -> Accepted:
        """`events` appended to the history (and `index_events` to the index)."""
        # One per command: made as a tuple (C), not through the NamedTuple's __new__.
        return new_tuple(cls, (after, after.vid, events, index_events, (), False, False))

    @classmethod
    def history_deleted(
        cls, after: WorkflowState, deleted_keys: tuple[str, ...], deleted: WorkflowIndexEvent
    ) -> Accepted:
        """The history's keys tombstoned, the index told, then its key tombstoned."""
        return cls(after, after.vid, (), (deleted,), deleted_keys, index_tombstone=True)


class Rejected(NamedTuple):
    """A refused command, in the one vocabulary for a refusal everywhere: `code`
    says why, `message` what was wrong and what to do. `decide` returns it and
    changes nothing; the processor sends it as a reply with `ok` false
    (`reply_for`); the client library raises it as `CommandRejected` (its
    `rejected`; one subclass per code), which the runner catches to leave a
    workflow that someone else moved on."""

    code: ErrorCode
    message: str


Decision = Accepted | Rejected


# --- decide -------------------------------------------------------------------


def decide(state: WorkflowState, command: Command, new_id: IdSource) -> Decision:
    """Answer `command` given the workflow's `state`; pure."""
    if command.workflow_id != state.workflow_id:
        raise ValueError(
            f"command for workflow {command.workflow_id} decided against the state of "
            f"workflow {state.workflow_id}"
        )

    # 1. Dedupe: a command id seen recently gets its first reply again (recent.py
    # says how many the workflow remembers, and why).
    vid = lookup(state.recent, state.vid, command.command_id)
    if vid is not None:
        return Accepted.repeated(state, vid)

    # 2. Field validation.
    problem = _invalid_argument(command.body)
    if problem is not None:
        return problem

    # 3. Version check (before the table, as in nog).
    if command.expected_vid not in (NO_VC, RETRY_NO_VC) and command.expected_vid != state.vid:
        return Rejected(
            ErrorCode.VERSION_CONFLICT,
            f"version conflict: stored vid {state.vid}, expected vid {command.expected_vid}",
        )

    # 4. The state table.
    emit = _Emitter(state, command.command_id, new_id)
    match command.body:
        case Append() as append:
            return _append(state, append, emit)
        case Init() as init:
            return _init(state, init, emit)
        case Commit():
            return _commit(state, emit)
        case Fail() as fail:
            return _fail(state, fail, emit)
        case AbortExpired():
            return _abort_expired(state, emit)
        case End():
            return _end(state, emit)
        case Delete():
            return _delete(state, new_id)
    raise AssertionError("unreachable: step 2 rejects unknown command types")


def _init(state: WorkflowState, cmd: Init, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.UNINITIALIZED:
            started = DuRootStarted(cmd.registry_id, cmd.global_root, cmd.host, cmd.host_root)
            index = IndexStarted(cmd.global_root, cmd.host, cmd.host_root)
            return emit.accept([started], mirror=index)
        case StateCode.INITIALIZED:
            differs = [
                name
                for name, mine, theirs in (
                    ("registry id", state.registry_id, cmd.registry_id),
                    ("global root", state.global_root, cmd.global_root),
                    ("host", state.host, cmd.host),
                    ("host root", state.host_root, cmd.host_root),
                )
                if mine != theirs
            ]
            if differs:
                return Rejected(
                    ErrorCode.CONFLICT_INIT,
                    f"command Init conflicts with the initialized workflow: "
                    f"different {', '.join(differs)}",
                )
            return Accepted.no_op(state)
        case _:
            return _state_advanced("Init", state)


def _append(state: WorkflowState, cmd: Append, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.APPENDING | StateCode.INITIALIZED:
            updated = DuUpdated  # a NamedTuple: read from the module once, not per path
            return emit.accept([new_tuple(updated, (p.path, p.usage)) for p in cmd.paths])
        case _:
            return _conflict("Append", state)


def _commit(state: WorkflowState, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            return _complete(emit, DuRootCompleted(STATUS_CODE_OK, ""))
        case StateCode.COMPLETED:
            return Accepted.no_op(state)
        case _:
            return _conflict("Commit", state)


def _fail(state: WorkflowState, cmd: Fail, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            return _complete(emit, DuRootCompleted(cmd.code, cmd.message))
        case StateCode.COMPLETED:
            return Accepted.no_op(state)
        case _:
            return _conflict("Fail", state)


def _abort_expired(state: WorkflowState, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            return _complete(emit, DuRootCompleted(STATUS_CODE_EXPIRED, STATUS_MESSAGE_EXPIRED))
        case StateCode.COMPLETED | StateCode.TERMINATED:
            return Accepted.no_op(state)
        case _:
            return _conflict("AbortExpired", state)


def _end(state: WorkflowState, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.COMPLETED:
            # Only for histories whose COMPLETED lacks the automatic End.
            return emit.accept([DuRootCommitted()])
        case StateCode.TERMINATED:
            return Accepted.no_op(state)
        case _:
            return _conflict("End", state)


def _delete(state: WorkflowState, new_id: IdSource) -> Decision:
    match state.code:
        case StateCode.UNINITIALIZED:
            return Accepted.no_op(state)
        case StateCode.COMPLETED | StateCode.TERMINATED:
            deleted = WorkflowIndexEvent(
                event_id=_next_id(new_id, state.vid),
                registry_id=state.registry_id,
                workflow_id=state.workflow_id,
                workflow_event_id=state.vid,
                payload=IndexDeleted(),
            )
            after = evolve(state, WorkflowDeleted(state.workflow_id))
            keys = tuple(event_key(state.workflow_id, seq) for seq in range(state.seq))
            return Accepted.history_deleted(after, keys, deleted)
        case _:
            return _conflict("Delete", state)


def _complete(emit: _Emitter, completed: DuRootCompleted) -> Accepted:
    """COMPLETED, mirrored on the index, then the automatic End, all at once.

    nog completed, indexed and ended in three steps, and the last could go
    missing when interrupted; here they are one decision, one transaction.
    """
    index = IndexCompleted(completed.status_code, completed.status_message)
    return emit.accept([completed, DuRootCommitted()], mirror=index)


def _conflict(command: str, state: WorkflowState) -> Rejected:
    return Rejected(
        ErrorCode.CONFLICT_STATE, f"command {command} conflicts with state {state.code.name}"
    )


def _state_advanced(command: str, state: WorkflowState) -> Rejected:
    return Rejected(
        ErrorCode.CONFLICT_STATE_ADVANCED,
        f"command {command}: workflow state has advanced to {state.code.name}",
    )


class _Emitter:
    """Turns the payloads a command function chose into an `Accepted`."""

    __slots__ = ("command_id", "new_id", "state")

    def __init__(self, state: WorkflowState, command_id: str, new_id: IdSource) -> None:
        self.state: Final = state
        self.command_id: Final = command_id
        self.new_id: Final = new_id

    def accept(self, payloads: list[EventPayload], mirror: IndexPayload | None = None) -> Accepted:
        """Chain `payloads` as events after the head; `mirror` indexes the first."""
        events: list[WorkflowEvent] = []
        after, command_id = self.state, self.command_id
        workflow_id, vid, seq = after.workflow_id, after.vid, after.seq
        ids = _next_ids(self.new_id, vid, len(payloads))
        # A run of DuUpdated (an Append's paths) folds as its last event does (the
        # last vid and seq, one recent entry): one state per run, not per path.
        run_end: WorkflowEvent | None = None
        # The NamedTuples read from the module once, not per event (each read a lookup).
        event_type, updated = WorkflowEvent, DuUpdated
        for i in range(len(ids)):  # indexed: lists of a known type, no zip tuples
            event_id, payload = ids[i], payloads[i]
            event = new_tuple(event_type, (event_id, vid, workflow_id, seq, command_id, payload))
            events.append(event)
            vid, seq = event_id, seq + 1
            if type(payload) is updated:
                run_end = event
            else:
                after = evolve(after if run_end is None else evolve(after, run_end), event)
                run_end = None
        if run_end is not None:
            after = evolve(after, run_end)
        index_events: tuple[WorkflowIndexEvent, ...] = ()
        if mirror is not None:
            index_events = (
                WorkflowIndexEvent(
                    event_id=_next_id(self.new_id, after.vid),
                    registry_id=after.registry_id,
                    workflow_id=after.workflow_id,
                    workflow_event_id=events[0].event_id,
                    payload=mirror,
                ),
            )
        return Accepted.appended(after, tuple(events), index_events)


def _next_id(new_id: IdSource, previous: str) -> str:
    ulid = new_id(previous)
    if not ulid > previous:
        raise ValueError(f"IdSource returned {ulid}, not greater than {previous}")
    return ulid


def _next_ids(new_id: IdSource, previous: str, n: int) -> list[str]:
    """`n` ids, each greater than the one before, the first greater than `previous`.
    A source with a `many(floor, n)` (the processor's `MonotonicUlids`) gives them in
    one call, increasing by its contract; any other is asked once per id."""
    if n == 0:
        return []
    if n == 1:
        return [_next_id(new_id, previous)]
    many = getattr(new_id, "many", None)
    if many is None:
        out = []
        for _ in range(n):
            previous = _next_id(new_id, previous)
            out.append(previous)
        return out
    ids: list[str] = many(previous, n)
    if len(ids) != n or not ids[0] > previous:
        raise ValueError(f"IdSource gave {len(ids)} ids from {ids[:1]}, not {n} above {previous}")
    return ids


def _invalid_argument(body: CommandBody) -> Rejected | None:
    """Step 2: the fields nog checks, and what the Avro schema cannot carry."""
    match body:
        case Append() | Init() | Fail() | Commit() | AbortExpired() | End() | Delete():
            problem = argument_problem(body)
        case _:
            return Rejected(ErrorCode.INVALID_COMMAND, f"unknown command {type(body).__name__}")
    return None if problem is None else Rejected(ErrorCode.INVALID_ARGUMENT, problem)


# --- replies ------------------------------------------------------------------


def reply_for(command: Command, decision: Decision) -> Reply:
    """The reply to send for `command`, decided as `decision`."""
    match decision:
        case Accepted():
            return Reply(command.command_id, command.workflow_id, True, decision.vid, None, "")
        case Rejected(code, message):
            return Reply(command.command_id, command.workflow_id, False, None, code, message)
