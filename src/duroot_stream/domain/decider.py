"""The du-root workflow as a decider: `decide`, `evolve`, `initial_state`.

A port of nog's `durootwf` (du-root.go) onto an event-sourced core:

- `decide(state, command, new_id)` answers a command with the events to
  append (`Accepted`) or a `Rejected`; it never changes anything itself.
- `evolve(state, event)` folds one event into the state. Restore and `decide`
  both use it, so the state has one source of truth: the event history.

Everything here is pure. Ids come in through `new_id` and times from the
ULIDs of the events, so the processor, the tests and a replay all see the
same results for the same inputs.

`decide` works in four steps, numbered the same in the code:

1. dedupe: a command id seen recently gets the reply it got the first time;
2. field validation (`INVALID_ARGUMENT`);
3. version check (`VERSION_CONFLICT`);
4. the state table of DESIGN.md, one small function per command, each a
   `match state.code:` over the states it accepts, as in du-root.go.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from .model import (
    EVENT_EPOCH,
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
)
from .recent import RECENT_COMMANDS as RECENT_COMMANDS
from .recent import lookup, pack, remember, unpack

# How many command ids a workflow remembers for dedupe (step 1 of `decide`).
# Duplicates come from requesters that re-send a command after losing its
# reply (timeout, reconnect). Such a requester retries only what it has in
# flight, and on one workflow that is at most a handful of commands, because
# each command names the vid left by the previous one. 16 covers that with a
# wide margin while keeping the state small: the processor holds one state
# per workflow in memory, and the entries are rebuilt from the events'
# `command_id`, so they survive a restart. Commands that emitted nothing
# (no-ops, rejections) are not remembered; repeating them is harmless.
# The bound, RECENT_COMMANDS = 16, and the packed form are in recent.py.

_NIL_UUID = "00000000-0000-0000-0000-000000000000"
_UUID_RE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.IGNORECASE
)
_AVRO_INT_MAX = 2**31 - 1
_AVRO_LONG_MAX = 2**63 - 1


# The state and the decisions are NamedTuples: made once per event (state) or
# command (decision), and a frozen dataclass sets each field through
# object.__setattr__, which costs about 2.5 us for the state's eleven
# fields against 0.3 us for a tuple.


class _StateFields(NamedTuple):
    workflow_id: str
    code: StateCode
    vid: str
    seq: int  # number of events in the history = the next event's seq
    registry_id: str
    global_root: str
    host: str
    host_root: str
    started_at: int  # ms, from the ULID timestamp of the STARTED event
    completed_at: int  # ms, from the ULID timestamp of the COMPLETED event
    recent: str  # recent_commands, packed (recent.py)


class WorkflowState(_StateFields):
    """nog's `durootwf.State`, plus what dedupe and garbage collection need.

    `recent_commands`: (command_id, vid of that command's last event), oldest
    first, at most RECENT_COMMANDS entries; held packed in `recent`.
    """

    __slots__ = ()

    def __new__(
        cls,
        workflow_id: str,
        code: StateCode = StateCode.UNINITIALIZED,
        vid: str = EVENT_EPOCH,
        seq: int = 0,
        registry_id: str = "",
        global_root: str = "",
        host: str = "",
        host_root: str = "",
        started_at: int = 0,
        completed_at: int = 0,
        recent_commands: tuple[tuple[str, str], ...] = (),
    ) -> WorkflowState:
        return _new_state(
            cls,
            (
                workflow_id,
                code,
                vid,
                seq,
                registry_id,
                global_root,
                host,
                host_root,
                started_at,
                completed_at,
                pack(recent_commands),
            ),
        )

    @property
    def recent_commands(self) -> tuple[tuple[str, str], ...]:
        return unpack(self.recent)

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _STATE_REPR)
        return f"WorkflowState({fields})"


_new_state = tuple.__new__  # a WorkflowState from its eleven fields, as a tuple
_STATE_REPR = (*_StateFields._fields[:-1], "recent_commands")


def initial_state(workflow_id: str) -> WorkflowState:
    """The state of an empty (never started, or deleted) history."""
    return WorkflowState(workflow_id)


@dataclass(frozen=True, slots=True)
class WorkflowDeleted:
    """The workflow's history was deleted (on the wire: tombstones)."""

    workflow_id: str


# Given a ULID text, returns a new ULID text strictly greater than it.
IdSource = Callable[[str], str]


class Accepted(NamedTuple):
    events: tuple[WorkflowEvent, ...]  # appended to the workflow history, in order
    index_events: tuple[WorkflowIndexEvent, ...]  # in order
    deleted_keys: tuple[str, ...]  # event keys "<wf>/<seq>" to tombstone (Delete only)
    index_tombstone: bool  # after Delete: tombstone the index key after the DELETED event
    state: WorkflowState  # the state after
    vid: str  # vid for the reply
    duplicate: bool = False  # command id seen before: nothing emitted, same reply


class Rejected(NamedTuple):
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

    # 1. Dedupe: a command id seen recently gets its first reply again.
    vid = lookup(state.recent, command.command_id)
    if vid is not None:
        return Accepted((), (), (), False, state, vid, duplicate=True)

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
    registry_id = cmd.registry_id.lower()  # canonical UUID text
    if registry_id == cmd.registry_id:
        registry_id = cmd.registry_id  # the same object: the codec interns it
    match state.code:
        case StateCode.UNINITIALIZED:
            started = DuRootStarted(registry_id, cmd.global_root, cmd.host, cmd.host_root)
            index = IndexStarted(cmd.global_root, cmd.host, cmd.host_root)
            return emit.accept([started], mirror=index)
        case StateCode.INITIALIZED:
            differs = [
                name
                for name, mine, theirs in (
                    ("registry id", state.registry_id.lower(), registry_id),
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
            return _no_op(state)
        case _:
            return _state_advanced("Init", state)


def _append(state: WorkflowState, cmd: Append, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.APPENDING | StateCode.INITIALIZED:
            return emit.accept([DuUpdated(p.path, p.usage) for p in cmd.paths])
        case _:
            return _conflict("Append", state)


def _commit(state: WorkflowState, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            return _complete(emit, DuRootCompleted(STATUS_CODE_OK, ""))
        case StateCode.COMPLETED:
            return _no_op(state)
        case _:
            return _conflict("Commit", state)


def _fail(state: WorkflowState, cmd: Fail, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            return _complete(emit, DuRootCompleted(cmd.code, cmd.message))
        case StateCode.COMPLETED:
            return _no_op(state)
        case _:
            return _conflict("Fail", state)


def _abort_expired(state: WorkflowState, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            return _complete(emit, DuRootCompleted(STATUS_CODE_EXPIRED, STATUS_MESSAGE_EXPIRED))
        case StateCode.COMPLETED | StateCode.TERMINATED:
            return _no_op(state)
        case _:
            return _conflict("AbortExpired", state)


def _end(state: WorkflowState, emit: _Emitter) -> Decision:
    match state.code:
        case StateCode.COMPLETED:
            # Only for histories whose COMPLETED lacks the automatic End.
            return emit.accept([DuRootCommitted()])
        case StateCode.TERMINATED:
            return _no_op(state)
        case _:
            return _conflict("End", state)


def _delete(state: WorkflowState, new_id: IdSource) -> Decision:
    match state.code:
        case StateCode.UNINITIALIZED:
            return _no_op(state)
        case StateCode.COMPLETED | StateCode.TERMINATED:
            deleted = WorkflowIndexEvent(
                event_id=_next_id(new_id, state.vid),
                registry_id=state.registry_id,
                workflow_id=state.workflow_id,
                workflow_event_id=state.vid,
                payload=IndexDeleted(),
            )
            after = evolve(state, WorkflowDeleted(state.workflow_id))
            return Accepted(
                events=(),
                index_events=(deleted,),
                deleted_keys=tuple(event_key(state.workflow_id, s) for s in range(state.seq)),
                index_tombstone=True,
                state=after,
                vid=after.vid,
            )
        case _:
            return _conflict("Delete", state)


def _complete(emit: _Emitter, completed: DuRootCompleted) -> Accepted:
    """COMPLETED, mirrored on the index, then the automatic End, all at once.

    nog completed, indexed and ended in three steps, and the last could go
    missing when interrupted; here they are one decision, one transaction.
    """
    index = IndexCompleted(completed.status_code, completed.status_message)
    return emit.accept([completed, DuRootCommitted()], mirror=index)


def _no_op(state: WorkflowState) -> Accepted:
    return Accepted((), (), (), False, state, state.vid)


def _conflict(command: str, state: WorkflowState) -> Rejected:
    return Rejected(
        ErrorCode.CONFLICT_STATE, f"command {command} conflicts with state {state.code.name}"
    )


def _state_advanced(command: str, state: WorkflowState) -> Rejected:
    return Rejected(
        ErrorCode.CONFLICT_STATE_ADVANCED,
        f"command {command}: workflow state has advanced to {state.code.name}",
    )


class _Emitter(NamedTuple):
    """Turns the payloads a command function chose into an `Accepted`."""

    state: WorkflowState
    command_id: str
    new_id: IdSource

    def accept(
        self, payloads: Iterable[EventPayload], mirror: IndexPayload | None = None
    ) -> Accepted:
        """Chain `payloads` as events after the head; `mirror` indexes the first."""
        events: list[WorkflowEvent] = []
        after = self.state
        for payload in payloads:
            # WorkflowEvent(event_id, parent, workflow_id, seq, command_id, payload)
            event = WorkflowEvent(
                _next_id(self.new_id, after.vid),
                after.vid,
                after.workflow_id,
                after.seq,
                self.command_id,
                payload,
            )
            events.append(event)
            after = evolve(after, event)
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
        return Accepted(tuple(events), index_events, (), False, after, after.vid)


def _next_id(new_id: IdSource, previous: str) -> str:
    ulid = new_id(previous)
    if not ulid > previous:
        raise ValueError(f"IdSource returned {ulid}, not greater than {previous}")
    return ulid


def _invalid_argument(body: CommandBody) -> Rejected | None:
    """Step 2: the fields nog checks, and what the Avro schema cannot carry."""
    match body:
        case Append():
            problem = _append_problem(body)
        case Init():
            problem = _init_problem(body)
        case Fail():
            problem = _fail_problem(body)
        case Commit() | AbortExpired() | End() | Delete():
            problem = None
        case _:
            return Rejected(ErrorCode.INVALID_COMMAND, f"unknown command {type(body).__name__}")
    return None if problem is None else Rejected(ErrorCode.INVALID_ARGUMENT, problem)


def _init_problem(cmd: Init) -> str | None:
    if not isinstance(cmd.registry_id, str) or not _UUID_RE.fullmatch(cmd.registry_id):
        return f"command Init: registry id {cmd.registry_id!r} is not a UUID"
    if cmd.registry_id == _NIL_UUID:
        return "command Init: registry id is the nil UUID"
    for name, value in (
        ("global root", cmd.global_root),
        ("host", cmd.host),
        ("host root", cmd.host_root),
    ):
        if not isinstance(value, str):
            return f"command Init: {name} is not text"
        if value == "":
            return f"command Init: {name} is empty"
    return None


def _append_problem(cmd: Append) -> str | None:
    if len(cmd.paths) == 0:
        return "command Append: no paths"
    for p in cmd.paths:
        if not isinstance(p.path, str):
            return f"command Append: path {p.path!r} is not text"
        if not _is_int(p.usage) or not 0 <= p.usage <= _AVRO_LONG_MAX:
            return f"command Append: usage {p.usage!r} of path {p.path!r} is invalid"
    return None


def _fail_problem(cmd: Fail) -> str | None:
    if not _is_int(cmd.code) or not -_AVRO_INT_MAX - 1 <= cmd.code <= _AVRO_INT_MAX:
        return f"command Fail: code {cmd.code!r} is not a 32-bit integer"
    if cmd.code == 0:
        return "command Fail: code is 0 (a failure needs a non-zero code)"
    if not isinstance(cmd.message, str):
        return "command Fail: message is not text"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- evolve -------------------------------------------------------------------


# Events move the state (DESIGN.md): the state code after each event type.
CODE_AFTER: dict[type[EventPayload], StateCode] = {
    DuRootStarted: StateCode.INITIALIZED,
    DuUpdated: StateCode.APPENDING,
    DuRootCompleted: StateCode.COMPLETED,
    DuRootCommitted: StateCode.TERMINATED,
}


def evolve(state: WorkflowState, event: WorkflowEvent | WorkflowDeleted) -> WorkflowState:
    """Fold one event into the state; trusts the history (no checks).

    Runs once per event when `decide` accepts, so it only sets fields: one
    new state per event, and a bounded `recent_commands` update. Of the
    payload it reads the fields of DuRootStarted only; of the other events
    just the type, so a restore may skip decoding their bodies (the event
    headers carry the rest). A restore folds with `replay.WorkflowReplay`,
    which is proven to give the same states.
    """
    if not isinstance(event, WorkflowEvent):
        if isinstance(event, WorkflowDeleted):
            return initial_state(state.workflow_id)
        raise TypeError(f"invalid event type {type(event).__name__}")
    payload = event.payload
    code = CODE_AFTER.get(type(payload))
    if code is None:
        raise TypeError(f"invalid event type {type(payload).__name__}")
    (
        workflow_id,
        _,
        _,
        _,
        registry_id,
        global_root,
        host,
        host_root,
        started_at,
        completed_at,
        recent,
    ) = state
    vid = event.event_id
    if isinstance(payload, DuRootStarted):
        registry_id, global_root, host, host_root = (
            payload.registry_id,
            payload.global_root,
            payload.host,
            payload.host_root,
        )
        started_at = ulid_time_ms(vid)
    elif isinstance(payload, DuRootCompleted):
        completed_at = ulid_time_ms(vid)
    return _new_state(
        WorkflowState,
        (
            workflow_id,
            code,
            vid,
            event.seq + 1,
            registry_id,
            global_root,
            host,
            host_root,
            started_at,
            completed_at,
            remember(recent, event.command_id, vid),
        ),
    )


# --- ULID time ----------------------------------------------------------------

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD_VALUE = {c: i for i, c in enumerate(_CROCKFORD)} | {
    c.lower(): i for i, c in enumerate(_CROCKFORD)
}


def ulid_time_ms(ulid_text: str) -> int:
    """The 48-bit ms timestamp of a ULID: its first 10 Crockford base32 chars."""
    if len(ulid_text) != 26:
        raise ValueError(f"not a ULID (26 characters): {ulid_text!r}")
    ms = 0
    for c in ulid_text[:10]:
        digit = _CROCKFORD_VALUE.get(c)
        if digit is None:
            raise ValueError(f"not a ULID (bad character {c!r}): {ulid_text!r}")
        ms = ms * 32 + digit
    if ms >= 1 << 48:
        raise ValueError(f"not a ULID (timestamp overflows 48 bits): {ulid_text!r}")
    return ms


# --- garbage collection -------------------------------------------------------


def expiry_command(
    state: WorkflowState, now_ms: int, max_active_ms: int, delete_after_ms: int
) -> AbortExpired | Delete | None:
    """What garbage collection should send for this workflow now, if anything.

    `AbortExpired` for a workflow active (INITIALIZED or APPENDING) that
    started more than `max_active_ms` ago; `Delete` for one finished
    (COMPLETED or TERMINATED) that completed more than `delete_after_ms` ago.
    """
    match state.code:
        case StateCode.INITIALIZED | StateCode.APPENDING:
            if now_ms - state.started_at > max_active_ms:
                return AbortExpired()
        case StateCode.COMPLETED | StateCode.TERMINATED:
            if now_ms - state.completed_at > delete_after_ms:
                return Delete()
        case _:
            pass
    return None


# --- replies ------------------------------------------------------------------


def reply_for(command: Command, decision: Decision) -> Reply:
    """The reply to send for `command`, decided as `decision`."""
    match decision:
        case Accepted():
            return Reply(command.command_id, command.workflow_id, True, decision.vid, None, "")
        case Rejected():
            return Reply(
                command.command_id,
                command.workflow_id,
                False,
                None,
                decision.code,
                decision.message,
            )
