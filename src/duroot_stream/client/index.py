"""The index table's entries: one per workflow, folded from its index events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from duroot_stream.domain import (
    IndexCompleted,
    IndexStarted,
    WorkflowIndexEvent,
    ulid_time_ms,
)


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One workflow in the index table: its latest index event, merged with the
    STARTED fields if they are still in the topic (compaction keeps only the latest)."""

    workflow_id: str
    registry_id: str
    latest: WorkflowIndexEvent
    global_root: str | None = None
    host: str | None = None
    host_root: str | None = None
    started_vid: str | None = None
    completed_vid: str | None = None
    status_code: int | None = None
    status_message: str = ""

    @property
    def state(self) -> str:
        """ "active", "completed" or "deleted"."""
        match self.latest.payload:
            case IndexStarted():
                return "active"
            case IndexCompleted():
                return "completed"
            case _:
                return "deleted"

    @property
    def started_at_ms(self) -> int | None:
        return ulid_time_ms(self.started_vid) if self.started_vid else None

    @property
    def completed_at_ms(self) -> int | None:
        return ulid_time_ms(self.completed_vid) if self.completed_vid else None


def merge(previous: IndexEntry | None, event: WorkflowIndexEvent) -> IndexEntry:
    """Fold one index event into the workflow's entry (another registry starts afresh)."""
    entry = IndexEntry(event.workflow_id, event.registry_id, event)
    if previous is not None and previous.registry_id == event.registry_id:
        entry = replace(previous, latest=event)
    payload = event.payload
    match payload:
        case IndexStarted():
            return IndexEntry(
                event.workflow_id,
                event.registry_id,
                event,
                payload.global_root,
                payload.host,
                payload.host_root,
                started_vid=event.workflow_event_id,
            )
        case IndexCompleted():
            return replace(
                entry,
                completed_vid=event.workflow_event_id,
                status_code=payload.status_code,
                status_message=payload.status_message,
            )
    return entry  # IndexDeleted: the entry as it was, until its tombstone


def runs_of(
    entries: Iterable[IndexEntry], global_root: str, known: Mapping[str, str] | None = None
) -> list[IndexEntry]:
    """The workflows of one global root (its du runs that Kafka still keeps), newest first.

    Compaction may leave a completed workflow's entry without its STARTED fields:
    `known` maps workflow ids to their global root from elsewhere (the events topic)."""
    known = known or {}
    runs = [e for e in entries if (e.global_root or known.get(e.workflow_id)) == global_root]
    return sorted(runs, key=lambda e: e.started_vid or e.latest.workflow_event_id, reverse=True)
