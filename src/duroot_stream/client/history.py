"""One workflow's history as a reader sees it: its records folded into the domain's
`WorkflowState` (the processor's state, recent command ids included), plus the du
lines and the final status.

The fold is the domain's `WorkflowReplay`, the restore fold, equal to folding
`evolve` over the events (a domain property test) at a quarter of its cost per
event, which matters when a history has millions of du lines.
"""

from __future__ import annotations

from confluent_kafka import Message

from duroot_stream.domain import (
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    PathUsage,
    StateCode,
    WorkflowReplay,
    WorkflowState,
)
from duroot_stream.wire import Codec, CodecError

from .errors import DuRootError
from .results import DuResult


class History:
    """The records of one workflow seen so far, in offset order."""

    def __init__(self, workflow_id: str, codec: Codec) -> None:
        self.workflow_id = workflow_id
        self.codec = codec
        self._replay = WorkflowReplay(workflow_id)
        self._state: WorkflowState | None = None  # the replay's state, until the next add
        self.lines: list[PathUsage] = []
        self.status: DuRootCompleted | None = None
        self.terminated = False  # COMMITTED seen: nothing more will come
        self.first_seq: int | None = None  # of the current incarnation (since a deletion)
        self.first_offset = -1
        self.deleted = False  # a tombstone was seen

    @property
    def state(self) -> WorkflowState:
        if self._state is None:
            self._state = self._replay.state()
        return self._state

    def add(self, msg: Message) -> None:
        value = msg.value()
        self._state = None
        if value is None:  # a tombstone: the history up to here was deleted
            self.deleted = True
            self._replay = WorkflowReplay(self.workflow_id)
            self.lines, self.status, self.first_seq, self.terminated = [], None, None, False
            return
        try:
            event = self.codec.decode_event(value)
        except CodecError as exc:
            raise DuRootError(
                f"undecodable event at {msg.topic()}/{msg.partition()}@{msg.offset()}: {exc}"
            ) from None
        if self.first_seq is None:
            self.first_seq, self.first_offset = event.seq, msg.offset() or 0
        payload = event.payload
        started = payload if type(payload) is DuRootStarted else None
        self._replay.add(type(payload), event.event_id, event.seq, event.command_id, started)
        if type(payload) is DuUpdated:
            self.lines.append(PathUsage(payload.path, payload.usage))
        elif type(payload) is DuRootCompleted:
            self.status = payload
        elif type(payload) is DuRootCommitted:
            self.terminated = True

    @property
    def complete(self) -> bool:
        return self.state.code in (StateCode.COMPLETED, StateCode.TERMINATED)

    def result(self) -> DuResult:
        state = self.state
        return DuResult(
            workflow_id=self.workflow_id,
            lines=list(self.lines),
            vid=state.vid,
            complete=self.complete,
            status_code=self.status.status_code if self.status else None,
            status_message=self.status.status_message if self.status else "",
            state=state.code,
        )
