"""One transaction as the engine sees it: a batch of commands, begun with its first
command, its records written through the port, then committed together with the
consumed offsets, or aborted and undone.

Before the offsets are sent, the commit writes the state of each workflow the batch
changed to the state topic (state_store.py), and the snapshot of each partition
restored from the events that this transaction sends offsets for (so that a zombie's
snapshot is fenced like its commands).

Undone means: the workflows the batch changed are put back as they were, the
consumer is rewound to the batch's first commands, and what it counted is dropped.
What a batch counts (commands by outcome, events, dead letters, ...) is added to the
metrics only when it commits, so a batch aborted and redone counts once; so are the
attribution histograms (where a committed transaction's time went).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from prometheus_client import Counter

from duroot_stream.domain import WorkflowState
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.tracing import carried

from .faults import AbortNeeded, ProcessorFatal, RecordRefused
from .port import RecordHeaders, TransactionPort
from .state_store import StateChangelog
from .workflows import Workflows

log = logging.getLogger("duroot.processor")

# (topic, partition, key, value, headers): one record to produce
Record = tuple[str, int, bytes | None, bytes | None, RecordHeaders | None]


@dataclass
class Batch:
    """What the open transaction commits, and what to undo should it abort."""

    started: float = 0.0
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> offset to commit
    first_offsets: dict[int, int] = field(default_factory=dict)  # partition -> rewind target
    undo: dict[tuple[int, str], WorkflowState | None] = field(default_factory=dict)
    commands: int = 0
    produced: int = 0  # records produced into it
    issued_at: list[int] = field(default_factory=list)
    # Metric counts by (metric, labels), added when the transaction commits (so an
    # aborted and redone batch counts once), one `labels().inc()` per batch.
    counts: dict[tuple[Counter, tuple[str, ...]], float] = field(default_factory=dict)
    gc: bool = False  # holds garbage-collection commands
    snapshots: list[int] = field(default_factory=list)  # partitions snapshotted in it
    misrouted: bool = False  # dead-lettered a command as misrouted
    # Seconds spent, for the attribution histograms: handling commands (the loop
    # adds it; produce calls included) and in produce calls alone (their callers
    # add it: one timer for a command's records, not one per record).
    handling: float = 0.0
    producing: float = 0.0


class Batches:
    """The batch of the open transaction (`batch`), through `port`; the states it
    changed go to `changelog`'s topic."""

    def __init__(
        self,
        port: TransactionPort,
        workflows: Workflows,
        metrics: ProcessorMetrics,
        changelog: StateChangelog,
    ) -> None:
        self._port = port
        self._workflows = workflows
        self._metrics = metrics
        self._changelog = changelog
        self.open = False
        self.batch = Batch()
        self.gc_aborted = False  # an aborted batch held GC commands: issue them again now
        # Set while a command is handled in its trace context (`tracing.processing`):
        # only then do records carry one (a flag: `tracing.carrying()` per record costs).
        self.carrying = False

    def begin(self) -> Batch:
        """The open batch; a transaction is begun for it if none is open."""
        if not self.open:
            self._port.begin()
            self.open = True
            self.batch = Batch(started=time.monotonic())
        return self.batch

    def count(self, counter: Counter, *labels: str, amount: float = 1) -> None:
        """`counter.labels(*labels).inc(amount)` when the open transaction commits."""
        counts = self.batch.counts
        key = (counter, labels)
        counts[key] = counts.get(key, 0) + amount

    def produce(self, records: Iterable[Record]) -> None:
        """Write `records` in the open transaction, each with the trace context of
        the command being handled (`tracing.carried`). Should the port raise, the
        records before stay counted in `Batch.produced`."""
        produce, batch = self._port.produce, self.batch
        if self.carrying:  # checked once: an Append of 10,000 paths makes 10,000 records
            records = [(t, p, k, v, carried(h)) for t, p, k, v, h in records]
        done = 0
        try:
            for topic, partition, key, value, headers in records:
                produce(topic, partition, key, value, headers)
                done += 1
        finally:
            batch.produced += done

    def produce_one(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: RecordHeaders | None,
    ) -> None:
        """`produce` of one record (a reply, a dead letter), without a list for it."""
        if self.carrying:
            headers = carried(headers)
        self._port.produce(topic, partition, key, value, headers)
        self.batch.produced += 1

    def commit(self) -> bool:
        """Commit the open transaction with the consumed offsets; False if it did not
        commit (it is undone: its commands come again)."""
        if not self.open:
            return True
        batch = self.batch
        try:
            self._write_states(batch)
            times = self._port.commit(batch.next_offsets)
        except AbortNeeded as exc:
            self.abort(str(exc))
            return False
        if times is None:
            self._undo()
            return False
        self.open = False
        for partition in batch.snapshots:
            self._workflows.snapshots.pop(partition, None)
        metrics = self._metrics
        now = time.time()
        for (counter, labels), amount in batch.counts.items():
            counter.labels(*labels).inc(amount)
        metrics.transactions.labels("committed").inc()
        metrics.batch_size.observe(batch.commands)
        metrics.batch_duration.observe(time.monotonic() - batch.started)
        metrics.decide_duration.observe(max(0.0, batch.handling - batch.producing))
        metrics.produce_duration.observe(batch.producing)
        metrics.send_offsets_duration.observe(times.send_offsets_s)
        metrics.commit_duration.observe(times.commit_s)
        metrics.command_latency.observe_many(
            [max(0.0, now - issued_at / 1000) for issued_at in batch.issued_at]
        )
        self._workflows.publish()
        return True

    def rewind(self, offsets: dict[int, int], why: str) -> None:
        """Consume these command partitions again from these offsets (partition -> offset)."""
        log.warning("commands consumed again later", extra={"reason": why, "offsets": offsets})
        self._port.rewind(offsets)

    def _write_states(self, batch: Batch) -> None:
        """The state records of the batch (module docstring), into the transaction."""
        changelog, workflows = self._changelog, self._workflows
        by_partition = workflows.by_partition
        records = changelog.changed(batch.undo, by_partition)
        tombstones = sum(1 for r in records if r[3] is None)
        changed = len(records)
        for partition, snapshot in workflows.snapshots.items():
            held = by_partition.get(partition)
            if held is None or partition not in batch.next_offsets:
                continue
            written = {workflow_id for p, workflow_id in batch.undo if p == partition}
            records += changelog.snapshot(partition, held, snapshot, written)
            batch.snapshots.append(partition)
        if not records:
            return
        produce = self._port.produce
        started = time.perf_counter()
        done = 0
        try:
            for topic, partition, key, value, _ in records:
                produce(topic, partition, key, value, None)
                done += 1
        except RecordRefused as exc:  # ours, small and well-formed: the topic is wrong
            raise ProcessorFatal(
                f"the state topic {changelog.topic} refused a record: {exc}; check it with "
                "`duroot-stream topics check`"
            ) from exc
        finally:
            batch.produced += done
            batch.producing += time.perf_counter() - started
        kind = self._metrics.state_records
        self.count(kind, "state", amount=changed - tombstones)
        self.count(kind, "tombstone", amount=tombstones)
        self.count(kind, "snapshot", amount=len(records) - changed - len(batch.snapshots))
        self.count(kind, "marker", amount=len(batch.snapshots))

    def abort(self, why: str) -> None:
        """Abort the open transaction and undo it."""
        log.warning("aborting transaction", extra={"reason": why, "commands": self.batch.commands})
        self._port.abort(why)
        self._undo()

    def _undo(self) -> None:
        """The open transaction is over without commit: put the workflows back, rewind
        the consumer; its counts are dropped with it."""
        batch = self.batch
        self.open = False
        self.gc_aborted = self.gc_aborted or batch.gc
        self._workflows.undo(batch.undo)
        self._port.rewind(batch.first_offsets)
        self._metrics.transactions.labels("aborted").inc()
