"""Restore-only: one workflow's state built from its events with a mutable accumulator.

`evolve` makes a new `WorkflowState` per event, which is what `decide`
needs (the old state stays valid for an undo) but is most of the cost of a
restore, where only the last state of each workflow is kept. A
`WorkflowReplay` takes the events' facts one by one, changing a few fields
in place, and makes one `WorkflowState` at the end:

    replay = WorkflowReplay(workflow_id)
    for event in history:
        replay.add(type(event.payload), event.event_id, event.seq, event.command_id, started)
    state = replay.state()  # == fold of `evolve` over the history

`started` is the DuRootStarted payload of a STARTED event (its fields are
kept) and None otherwise: like `evolve`, the replay reads only the type of
the other payloads. A deleted history (tombstones) is a new replay;
`WorkflowReplay.resume(state)` goes on from a state made before. The
equality with `evolve` is checked by a property test.
"""

from __future__ import annotations

from .decider import CODE_AFTER, WorkflowState, _new_state, ulid_time_ms
from .model import (
    EVENT_EPOCH,
    DuRootCompleted,
    DuRootStarted,
    EventPayload,
    StateCode,
)
from .recent import EMPTY, remember


class WorkflowReplay:
    """The state of one workflow, folded in place; see the module docstring."""

    __slots__ = (
        "_code",
        "_command",
        "_completed_at",
        "_recent",
        "_root",
        "_seq",
        "_started_at",
        "_vid",
        "workflow_id",
    )

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self._code = StateCode.UNINITIALIZED
        self._vid = EVENT_EPOCH
        self._seq = 0
        self._root = ("", "", "", "")  # registry_id, global_root, host, host_root
        self._started_at = 0
        self._completed_at = 0
        self._command: str | None = None  # the command id of the latest event
        # The recent commands (recent.py) before the latest one, which is added
        # when the next command starts (a command's events come one after another,
        # and only its last vid is kept) or by state().
        self._recent = EMPTY

    @classmethod
    def resume(cls, state: WorkflowState) -> WorkflowReplay:
        """A replay that goes on from `state` (which it leaves as it is)."""
        replay = cls(state.workflow_id)
        replay._code, replay._vid, replay._seq = state.code, state.vid, state.seq
        replay._root = (state.registry_id, state.global_root, state.host, state.host_root)
        replay._started_at, replay._completed_at = state.started_at, state.completed_at
        # The newest entry holds the latest command's last vid so far; if that
        # command has more events, `state()` updates it in place.
        replay._recent = state.recent
        return replay

    def add(
        self,
        event_type: type[EventPayload],
        vid: str,
        seq: int,
        command_id: str,
        started: DuRootStarted | None = None,
    ) -> None:
        """Fold one event: its payload type, id (the new vid), seq and cause."""
        if command_id != self._command:
            if self._command is not None:
                self._recent = remember(self._recent, self._command, self._vid)
            self._command = command_id
        self._vid = vid
        self._seq = seq + 1
        code = CODE_AFTER.get(event_type)
        if code is None:
            raise TypeError(f"invalid event type {event_type.__name__}")
        self._code = code
        if event_type is DuRootStarted:
            if started is None:
                raise ValueError("a STARTED event needs its DuRootStarted payload")
            self._root = (started.registry_id, started.global_root, started.host, started.host_root)
            self._started_at = ulid_time_ms(vid)
        elif event_type is DuRootCompleted:
            self._completed_at = ulid_time_ms(vid)

    def state(self) -> WorkflowState:
        """The state after every event added so far."""
        recent = self._recent
        if self._command is not None:
            recent = remember(recent, self._command, self._vid)
        registry_id, global_root, host, host_root = self._root
        return _new_state(
            WorkflowState,
            (
                self.workflow_id,
                self._code,
                self._vid,
                self._seq,
                registry_id,
                global_root,
                host,
                host_root,
                self._started_at,
                self._completed_at,
                recent,
            ),
        )
