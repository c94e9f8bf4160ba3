"""The decider tests' givens: a workflow, deterministic ids, the histories that reach
each state, and a command of any body."""

from __future__ import annotations

from duroot_stream.domain import (
    NO_VC,
    Accepted,
    Append,
    Command,
    CommandBody,
    Decision,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    Init,
    PathUsage,
    Rejected,
    StateCode,
    WorkflowEvent,
    WorkflowState,
    decode_ulid,
    encode_ulid,
    evolve,
    initial_state,
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
