"""What the readers return: a du result, a status, a stored event, progress."""

from __future__ import annotations

from dataclasses import dataclass

from duroot_stream.domain import STATUS_CODE_OK, PathUsage, StateCode, WorkflowEvent

from .errors import WorkflowFailed


@dataclass(frozen=True, slots=True)
class DuResult:
    """A workflow's du lines, in the order they were appended, and its final status.

    `lines` is the result's own list (the reader keeps no reference to it)."""

    workflow_id: str
    lines: list[PathUsage]
    vid: str  # the workflow's head when read
    complete: bool  # COMPLETED (or TERMINATED): no more lines will come
    status_code: int | None  # None while running; 0 = success
    status_message: str
    state: StateCode

    @property
    def failed(self) -> bool:
        return self.complete and self.status_code != STATUS_CODE_OK

    def raise_for_status(self) -> DuResult:
        """Self, or `WorkflowFailed` if the workflow completed with a non-zero status."""
        if self.failed:
            raise WorkflowFailed(self.workflow_id, self.status_code or 0, self.status_message)
        return self


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    """What `duroot-stream status` shows: state, vid, counts and times."""

    workflow_id: str
    state: StateCode
    vid: str
    events: int  # events in the history (the next seq)
    lines: int  # du lines (DuUpdated events)
    registry_id: str
    global_root: str
    host: str
    host_root: str
    started_at_ms: int | None
    completed_at_ms: int | None
    status_code: int | None
    status_message: str
    partition: int  # of the events topic


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One record of the events topic, decoded."""

    partition: int
    offset: int
    timestamp_ms: int
    workflow_id: str
    seq: int
    event: WorkflowEvent | None  # None: a tombstone (the history was deleted)


@dataclass(frozen=True, slots=True)
class Progress:
    """Passed to `get_du(progress=…)` while it waits."""

    workflow_id: str
    lines: int
    state: StateCode
