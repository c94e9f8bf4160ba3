"""One workflow's history as a reader sees it: its records, folded with the domain's
`evolve` (the same fold the processor's state comes from), plus the du lines."""

from __future__ import annotations

from confluent_kafka import Message

from duroot_stream.domain import (
    DuRootCompleted,
    DuUpdated,
    PathUsage,
    StateCode,
    WorkflowDeleted,
    WorkflowState,
    evolve,
    initial_state,
)
from duroot_stream.wire import Codec, CodecError

from .errors import DuRootError
from .results import DuResult


class History:
    """The records of one workflow seen so far, in offset order."""

    def __init__(self, workflow_id: str, codec: Codec) -> None:
        self.workflow_id = workflow_id
        self.codec = codec
        self.state: WorkflowState = initial_state(workflow_id)
        self.lines: list[PathUsage] = []
        self.status: DuRootCompleted | None = None
        self.first_seq: int | None = None  # of the current incarnation (since a deletion)
        self.first_offset = -1
        self.deleted = False  # a tombstone was seen

    def add(self, msg: Message) -> None:
        value = msg.value()
        if value is None:  # a tombstone: the history up to here was deleted
            self.deleted = True
            self.state = evolve(self.state, WorkflowDeleted(self.workflow_id))
            self.lines, self.status, self.first_seq = [], None, None
            return
        try:
            event = self.codec.decode_event(value)
        except CodecError as exc:
            raise DuRootError(
                f"undecodable event at {msg.topic()}/{msg.partition()}@{msg.offset()}: {exc}"
            ) from None
        if self.first_seq is None:
            self.first_seq, self.first_offset = event.seq, msg.offset() or 0
        self.state = evolve(self.state, event)
        payload = event.payload
        if type(payload) is DuUpdated:
            self.lines.append(PathUsage(payload.path, payload.usage))
        elif type(payload) is DuRootCompleted:
            self.status = payload

    @property
    def terminated(self) -> bool:
        """COMMITTED seen: nothing more will come."""
        return self.state.code is StateCode.TERMINATED

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
