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
the other payloads. A deleted history (tombstones) is a new replay. The
equality with `evolve` is checked by a property test.
"""

from __future__ import annotations

from .decider import WorkflowState, ulid_time_ms
from .model import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    StateCode,
)
from .recent import RECENT_COMMANDS


class WorkflowReplay:
    """The state of one workflow, folded in place; see the module docstring."""

    __slots__ = (
        "_code",
        "_command",
        "_completed_at",
        "_recent",
        "_seq",
        "_started",
        "_started_at",
        "_vid",
        "workflow_id",
    )

    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self._code = StateCode.UNINITIALIZED
        self._vid = EVENT_EPOCH
        self._seq = 0
        self._started: DuRootStarted | None = None
        self._started_at = 0
        self._completed_at = 0
        self._command: str | None = None  # the command id of the latest event
        # Command id -> vid of its last event, for the commands before the latest
        # one, oldest first; trimmed now and then, cut to the bound in state().
        self._recent: dict[str, str] = {}

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
                self._close_command()
            self._command = command_id
        self._vid = vid
        self._seq = seq + 1
        if event_type is DuUpdated:
            self._code = StateCode.APPENDING
        elif event_type is DuRootStarted:
            if started is None:
                raise ValueError("a STARTED event needs its DuRootStarted payload")
            self._code = StateCode.INITIALIZED
            self._started = started
            self._started_at = ulid_time_ms(vid)
        elif event_type is DuRootCompleted:
            self._code = StateCode.COMPLETED
            self._completed_at = ulid_time_ms(vid)
        elif event_type is DuRootCommitted:
            self._code = StateCode.TERMINATED
        else:
            raise TypeError(f"invalid event type {event_type.__name__}")

    def _close_command(self) -> None:
        """The latest command has no more events: remember its last vid."""
        assert self._command is not None
        recent = self._recent
        recent.pop(self._command, None)  # a command id seen before moves last
        recent[self._command] = self._vid
        if len(recent) > 4 * RECENT_COMMANDS:  # keep the newest RECENT_COMMANDS
            for command_id in list(recent)[:-RECENT_COMMANDS]:
                del recent[command_id]

    def state(self) -> WorkflowState:
        """The state after every event added so far."""
        entries = list(self._recent.items())
        if self._command is not None:
            entries = [e for e in entries if e[0] != self._command]
            entries.append((self._command, self._vid))
        started = self._started
        return WorkflowState(
            self.workflow_id,
            self._code,
            self._vid,
            self._seq,
            started.registry_id if started else "",
            started.global_root if started else "",
            started.host if started else "",
            started.host_root if started else "",
            self._started_at,
            self._completed_at,
            tuple(entries[-RECENT_COMMANDS:]),
        )
