"""The workflows of the owned partitions, their counts by state for the gauges, and the
partitions whose state snapshot is due (state_store.py)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from duroot_stream.domain import StateCode, WorkflowState
from duroot_stream.metrics import ProcessorMetrics

from .state_store import FoldedStates, Snapshot

# (partition, workflow id) -> the state before the open transaction changed it
Undo = Mapping[tuple[int, str], WorkflowState | None]


class Workflows:
    def __init__(self, metrics: ProcessorMetrics) -> None:
        self._metrics = metrics
        self.by_partition: dict[int, dict[str, WorkflowState]] = {}
        # Counted as they change and published at each commit: recounting
        # 100,000 workflows at every commit would take longer than it.
        self.counts = dict.fromkeys(StateCode, 0)
        # Partitions restored from the events: their snapshot is to be written.
        self.snapshots: dict[int, Snapshot] = {}

    def of(self, partition: int) -> dict[str, WorkflowState]:
        workflows = self.by_partition.get(partition)  # per command: no dict made to find it
        if workflows is None:
            workflows = self.by_partition[partition] = {}
        return workflows

    def replace(
        self,
        workflows: dict[str, WorkflowState],
        old: WorkflowState | None,
        new: WorkflowState,
    ) -> None:
        """Keep `new` in place of `old` (a deleted workflow is not kept)."""
        if new.code is StateCode.UNINITIALIZED:
            workflows.pop(new.workflow_id, None)
        else:
            workflows[new.workflow_id] = new
            self.counts[new.code] += 1
        if old is not None:
            self.counts[old.code] -= 1

    def undo(self, undo: Undo) -> None:
        """Put back the states an aborted transaction changed."""
        for (partition, workflow_id), old in undo.items():
            workflows = self.by_partition.get(partition)
            if workflows is None:  # revoked meanwhile
                continue
            if old is None:
                workflows.pop(workflow_id, None)
            else:
                workflows[workflow_id] = old
        self.recount()

    def restored(self, partition: int, workflows: dict[str, WorkflowState]) -> None:
        """Hold a restored partition's workflows; a snapshot is due if they were
        folded from the events (`FoldedStates`)."""
        if isinstance(workflows, FoldedStates):
            self.snapshots[partition] = workflows.snapshot
            workflows = dict(workflows)  # a plain dict: the engine's lookups take the fast path
        else:
            self.snapshots.pop(partition, None)
        self.by_partition[partition] = workflows

    def drop(self, partitions: Iterable[int]) -> list[int]:
        """Forget revoked partitions; returns those that were held."""
        dropped = [p for p in partitions if self.by_partition.pop(p, None) is not None]
        for partition in dropped:
            self.snapshots.pop(partition, None)
        self.recount()
        return dropped

    def total(self) -> int:
        return sum(len(w) for w in self.by_partition.values())

    def recount(self) -> None:
        """Count the workflows by state again (after a restore, revocation or abort); publish."""
        counts = dict.fromkeys(StateCode, 0)
        for workflows in self.by_partition.values():
            for state in workflows.values():
                counts[state.code] += 1
        self.counts = counts
        self.publish()

    def publish(self) -> None:
        self._metrics.partitions.set(len(self.by_partition))
        for code, count in self.counts.items():
            self._metrics.workflows.labels(code.name.lower()).set(count)
