"""Garbage collection (the loop's step 3), in bounded transactions.

Every `gc_interval_s` a pass lists the workflows of the owned partitions that
`expiry_command` would expire (`AbortExpired`) or delete (`Delete`) now. Its
commands go through the same path as any other command (`CommandHandler.apply`),
into the open transaction, a chunk at a time: once the chunk holds
`gc_chunk_records` records the rest waits for the next batch, so the loop goes on
handling commands between chunks, and no transaction outgrows the transaction
timeout however many workflows expired (after days of downtime, or a clock jump)
and however long their histories. One command's records are never split (a
Delete's tombstones, index entry and index tombstone stay atomic): a command that
alone makes more than the bound is a chunk of its own.

Each workflow is looked at again when its turn comes (a command may have changed
it meanwhile, or its partition gone). A chunk sends offsets even without commands of
its own (`_fence`), so that a zombie's cannot commit. An aborted chunk
(`Batches.gc_aborted`) starts the pass again at once, from the states the abort
restored; GC commands are counted when their transaction commits.

A snapshot of the state topic that is due (`Workflows.snapshots`) is written in the
next transaction that sends offsets for its partition (`batch.Batches.commit`): when
no command began one, this begins one, with the positions as a GC chunk's. A
partition with no position yet (no command consumed since it was assigned) waits.
"""

from __future__ import annotations

import logging
import time

from duroot_stream.domain import NO_VC, Command, expiry_command, expiry_records
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.metrics import ProcessorMetrics

from .batch import Batches
from .engine import CommandHandler
from .faults import AbortNeeded, ProcessorFatal, RecordRefused
from .port import TransactionPort
from .settings import ProcessorSettings
from .workflows import Workflows

log = logging.getLogger("duroot.processor")


class Collector:
    def __init__(
        self,
        settings: ProcessorSettings,
        batches: Batches,
        port: TransactionPort,
        workflows: Workflows,
        handler: CommandHandler,
        metrics: ProcessorMetrics,
    ) -> None:
        self._settings = settings
        self._batches = batches
        self._port = port
        self._workflows = workflows
        self._handler = handler
        self._metrics = metrics
        self._next_pass = time.monotonic() + settings.gc_interval_s
        self._due: list[tuple[int, str]] = []  # (partition, workflow id), last first

    def due(self) -> bool:
        """A pass is due, under way, or to be redone (its last chunk aborted)."""
        return (
            bool(self._due)
            or self._batches.gc_aborted
            or time.monotonic() >= self._next_pass
            or bool(self._workflows.snapshots)
        )

    def collect(self) -> None:
        """Start a pass if one is due, then issue the next chunk of its commands."""
        batches, settings = self._batches, self._settings
        if batches.gc_aborted or (not self._due and time.monotonic() >= self._next_pass):
            batches.gc_aborted = False
            self._next_pass = time.monotonic() + settings.gc_interval_s
            self._due = self._expired()
        now = now_ms()
        max_active = int(settings.max_active_s * 1000)
        delete_after = int(settings.delete_after_s * 1000)
        records = commands = 0
        partitions: set[int] = set()
        while self._due:
            partition, workflow_id = self._due[-1]
            workflows = self._workflows.by_partition.get(partition)
            state = None if workflows is None else workflows.get(workflow_id)
            body = None if state is None else expiry_command(state, now, max_active, delete_after)
            if workflows is None or state is None or body is None:
                self._due.pop()  # revoked, deleted, or changed meanwhile
                continue
            if commands and records + expiry_records(state, body) > settings.gc_chunk_records:
                break  # the next transaction's
            self._due.pop()
            batch = batches.begin()
            batch.gc = True
            command = Command(new_ulid(), workflow_id, NO_VC, now, body)
            produced = batch.produced
            try:
                reply = self._handler.apply(partition, workflows, command)
            except RecordRefused as exc:  # a bug: Kafka refused one of our own records
                if batch.produced != produced:
                    raise AbortNeeded(f"garbage collection of {workflow_id}: {exc}") from None
                log.error("garbage collection failed", exc_info=exc)
                continue
            except (AbortNeeded, ProcessorFatal):
                raise
            except Exception as exc:
                log.error("garbage collection failed", exc_info=exc)
                continue
            records += batch.produced - produced
            commands += 1
            partitions.add(partition)
            batches.count(self._metrics.gc_commands, type(body).__name__)
            log.info(
                "garbage collection",
                extra={
                    "workflow": workflow_id,
                    "command": type(body).__name__,
                    "ok": reply.ok,
                    "error": reply.error.value if reply.error else None,
                },
            )
        if commands:
            self._fence(partitions)
            self._metrics.gc_chunk_records.observe(records)
            log.info(
                "garbage collection chunk",
                extra={"commands": commands, "records": records, "left": len(self._due)},
            )
        self._snapshot()

    def _snapshot(self) -> None:
        """Begin a transaction for the due snapshots that none sends offsets for."""
        due = self._workflows.snapshots
        if not due:
            return
        batches = self._batches
        sent = batches.batch.next_offsets if batches.open else {}
        positions = self._port.positions(p for p in due if p not in sent)
        if positions:
            batches.begin().next_offsets.update(positions)

    def _fence(self, partitions: set[int]) -> None:
        """KIP-447 fences a zombie only in `send_offsets_to_transaction`, which a
        transaction without consumed commands skips: such a chunk could still commit
        after its partitions moved on. It sends the positions of its partitions instead
        (what is committed already: every consumed command is in a transaction that
        commits, or aborts and rewinds), so the group generation is checked."""
        batch = self._batches.batch
        if batch.next_offsets:  # commands consumed: their offsets are sent
            return
        batch.next_offsets.update(self._port.positions(partitions))

    def _expired(self) -> list[tuple[int, str]]:
        """The workflows due for expiry or deletion now, in the order they are issued
        (popped from the end)."""
        settings, now = self._settings, now_ms()
        max_active = int(settings.max_active_s * 1000)
        delete_after = int(settings.delete_after_s * 1000)
        due = [
            (partition, state.workflow_id)
            for partition, workflows in self._workflows.by_partition.items()
            for state in workflows.values()
            if expiry_command(state, now, max_active, delete_after) is not None
        ]
        due.reverse()
        return due
