"""The processor: commands in, events + index updates + replies out, exactly once.

One consumer (group `duroot-processor`) reads the command topic; one
transactional producer writes everything a batch of commands causes. Per
batch, in one Kafka transaction (`_Loop.run_batch`, its steps numbered so):

1. consume commands until the batch is full or the commit interval has passed;
2. per command: decode, `decide` against the workflow's state, apply the new
   state (remembering the old one for an abort), and produce the workflow
   events, index events, tombstones and the reply (or the dead letter);
3. garbage collection, when its timer is due, a pass is under way, or its last
   batch aborted: `AbortExpired` and `Delete` for old workflows of the owned
   partitions, through the same path, a bounded chunk per transaction;
4. send the consumed offsets to the transaction and commit it.

This module holds the loop and the rebalance callbacks; the engine reaches Kafka only
through the port (`port.py`); `kafka_transaction.py` is the Kafka adapter.

State per owned partition is restored when the partition is assigned, in a thread
of its own (`restorer.py`, `restore.py`), while the loop goes on with the partitions
it owns; before each batch it installs the restores that have finished, claims and
resumes their partitions. A partition revoked mid-restore is never resumed.

The commands topic's partition count can never change (a workflow's partition is
murmur2(id) % partitions): seen changed, the processor stops with `ProcessorFatal`.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from duroot_stream import metrics as metrics_mod
from duroot_stream.kafka import partition_count
from duroot_stream.wire import Codec, Topics, start_partition_counts

from .batch import Batches
from .collector import Collector
from .engine import CommandHandler
from .faults import (
    AbortNeeded,
    ProcessorFatal,
    check_overrides,
    count_changed,
    on_consumer_error,
)
from .hanging import ABORT_CHECK_INTERVAL_S, HangingMonitor
from .kafka_clients import TRANSACTION_TIMEOUT_MS
from .kafka_transaction import Transaction
from .port import Faults
from .restorer import Restorer
from .routes import ReplyRoutes
from .settings import KAFKA_TIMEOUT_S, ProcessorSettings
from .standby import Standbys
from .state_store import StateChangelog
from .watchdog import CallWatch
from .workflows import Workflows

log = logging.getLogger("duroot.processor")

IDLE_POLL_S = 0.2  # how long to wait for a first command before checking the stop flag
CONSUME_CHUNK = 500  # commands taken from the fetch queue at a time


class Processor:
    """`faults`: what a test injects into the Kafka client calls (`port.Faults`)."""

    def __init__(
        self,
        settings: ProcessorSettings,
        metrics: metrics_mod.ProcessorMetrics | None = None,
        faults: Faults | None = None,
    ) -> None:
        check_overrides(settings.kafka.overrides)  # ConfigError: exactly-once would break
        self.settings = settings
        self._faults = faults
        self.metrics = metrics or metrics_mod.ProcessorMetrics()
        self.topics = Topics(settings.kafka.topic_prefix)
        self.codec = Codec(settings.kafka.schema_registry_url)
        self.ready = threading.Event()  # set once the first assignment is restored
        self._stop = threading.Event()
        self._failed = False
        self._workflows = Workflows(self.metrics)
        self._calls = CallWatch()

    def stop(self) -> None:
        """Finish the batch, commit, leave the group (from any thread or a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Process until `stop()`; raises `ProcessorFatal` when it cannot go on."""
        settings, metrics, workflows = self.settings, self.metrics, self._workflows
        txn = Transaction(
            settings,
            self.topics.commands,
            self._calls,
            metrics.on_statistics,
            metrics.producer_renewals.inc,
            self._faults,
        )
        monitor = HangingMonitor(
            settings.kafka,
            self.topics.events,
            # Not consumer.assignment(): from another thread it blocks while the loop
            # polls. The restored partitions are the owned ones (list() holds the GIL).
            lambda: sorted(list(workflows.by_partition)),
            metrics,
            limit_s=TRANSACTION_TIMEOUT_MS / 1000 + ABORT_CHECK_INTERVAL_S,
        )
        monitor.start()
        loop: _Loop | None = None
        try:
            loop = _Loop(
                settings,
                metrics,
                self.topics,
                self.codec,
                workflows,
                txn,
                self.ready,
                self._stop,
                self._faults,
            )
            while not self._stop.is_set():
                loop.run_batch()
            loop.commit()
        except BaseException:
            # Leave without committing: the open transaction is abandoned.
            self._failed = True
            if loop is not None:
                loop.failed = True
            raise
        finally:
            if loop is not None:
                loop.close()
            monitor.stop()
            txn.close(flush=not self._failed)  # a fenced producer has nothing to deliver
            log.info("processor stopped", extra={"instance": self.settings.instance_id})

    def hung_call(self, limit_s: float) -> tuple[str, float] | None:
        """The transactional call (with its retries) running longer than `limit_s`,
        and for how long.

        After a broker restart librdkafka can block in `send_offsets_to_transaction`
        past its timeout, or time out on every retry, for good (librdkafka issues
        5456, 5511), while its heartbeats keep our partitions; the CLI exits then,
        so that a restart (a new client) recovers.
        """
        return self._calls.hung(limit_s)

    @property
    def failed(self) -> bool:
        """True once `run` has stopped on an error."""
        return self._failed

    def workflow_count(self) -> int:
        return self._workflows.total()

    def owned_partitions(self) -> set[int]:
        """The command partitions this instance holds (assigned and restored)."""
        return set(self._workflows.by_partition)


class _Loop:
    """The connected processor: the batch loop and the rebalance callbacks."""

    def __init__(
        self,
        settings: ProcessorSettings,
        metrics: metrics_mod.ProcessorMetrics,
        topics: Topics,
        codec: Codec,
        workflows: Workflows,
        txn: Transaction,
        ready: threading.Event,
        stopping: threading.Event,
        faults: Faults | None = None,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._topics = topics
        self._codec = codec
        self._stop = stopping
        self._ready = ready
        self._workflows = workflows
        self._consumer = txn.consumer
        self._txn = txn
        self._partitions = start_partition_counts(txn.consumer, topics, KAFKA_TIMEOUT_S)
        changelog = StateChangelog(topics.state, settings.instance_id)
        self._batches = batches = Batches(txn, workflows, metrics, changelog)
        routes = ReplyRoutes(
            txn.consumer, topics, settings.reply_topics, self._partitions, metrics, batches.count
        )
        self._handler = CommandHandler(
            batches, workflows, codec, topics, self._partitions, metrics, routes, settings.group_id
        )
        self._collector = Collector(settings, batches, txn, workflows, self._handler, metrics)
        self.failed = False  # set when the processor stops on an error: nothing to commit
        self._fault: ProcessorFatal | None = None
        self._standbys = (
            Standbys(
                settings, topics, self._partitions[topics.commands], codec, metrics, self._owned
            )
            if settings.standbys > 0
            else None
        )
        self._restorer = Restorer(
            settings,
            topics,
            codec,
            metrics,
            stopping,
            faults=faults,
            standby=None if self._standbys is None else self._standbys.take,
        )
        self._assigned_at: float | None = None  # the first assignment's time
        self._rebalanced = False  # a rebalance callback ran since the last batch
        txn.init()
        # Held here: `_on_assign` subscribes again with the same callback objects.
        self._rebalance_callbacks = dict(
            on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        self._consumer.subscribe([topics.commands], **self._rebalance_callbacks)
        if self._standbys is not None:
            self._standbys.start()
        log.info(
            "processor started",
            extra={
                "instance": settings.instance_id,
                "group": settings.group_id,
                "commands_topic": topics.commands,
            },
        )

    def run_batch(self) -> None:
        """One transaction, in the steps of the module docstring."""
        batches, consumer, handle_all = self._batches, self._consumer, self._handler.handle_all
        batch_size, interval = self._settings.batch_size, self._settings.commit_interval_s
        self._install()  # the restores finished since the last batch
        try:
            asked = 0
            while True:
                # 1. Wait for a first command, then take what is already fetched, until
                #    the batch is full, the commit interval has passed, or we have caught
                #    up. Caught up means commit now: small batches at low load (latency),
                #    full ones when behind (throughput). `consume(n, timeout)` would wait
                #    for all n, so waiting is done by `poll`, `consume` only with timeout 0.
                if asked == 0:
                    asked = 1
                    first = consumer.poll(0.0 if self._stop.is_set() else IDLE_POLL_S)
                    messages = [] if first is None else [first]
                else:
                    wanted = batch_size - batches.batch.commands
                    if (
                        not batches.open
                        or self._stop.is_set()
                        or wanted <= 0
                        or time.monotonic() >= batches.batch.started + interval
                    ):
                        break
                    asked = min(wanted, CONSUME_CHUNK)
                    messages = consumer.consume(num_messages=asked, timeout=0)
                if self._fault is not None:  # found by a rebalance callback
                    raise self._fault
                # 2. Per command: decode, decide, produce its records.
                handling = time.perf_counter()
                handle_all(messages, on_consumer_error)
                batches.batch.handling += time.perf_counter() - handling
                if len(messages) < asked:
                    break
            # 3. Garbage collection when due, under way (one chunk per transaction),
            #    or at once when its last batch aborted.
            if self._collector.due():
                self._collector.collect()
        except AbortNeeded as exc:
            batches.abort(str(exc))
            return
        # 4. Send the consumed offsets to the transaction and commit it.
        self.commit()

    def commit(self) -> None:
        """Commit the open transaction; first, if a command was dead-lettered as
        misrouted, check that the partition count has not changed."""
        batches = self._batches
        if batches.open and batches.batch.misrouted:
            name, started = self._topics.commands, self._partitions[self._topics.commands]
            try:
                now = partition_count(self._consumer, name, KAFKA_TIMEOUT_S)
            except KafkaException as exc:
                log.warning("partition count not checked", extra={"error": str(exc)})
                now = None
            if now is not None and now != started:
                batches.abort("the partition count changed")
                raise ProcessorFatal(count_changed(name, started, f"now has {now}"))
        batches.commit()

    # --- rebalancing and restore ------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        count = self._partitions[self._topics.commands]
        beyond = [p for p in numbers if p >= count]
        if beyond:  # raised by the loop: an exception from a callback upsets confluent-kafka
            self._fault = ProcessorFatal(
                count_changed(self._topics.commands, count, f"has partition {max(beyond)}")
            )
            return
        self._rebalanced = True
        first = self._assigned_at is None
        if first:
            self._assigned_at = time.monotonic()
        if not numbers:
            if first:
                # A new member gets nothing in the first round; librdkafka would rejoin
                # it 1 s after its last JoinGroup, the owners at once. A subscription
                # made now skips that backoff (it is applied after this callback).
                consumer.subscribe([self._topics.commands], **self._rebalance_callbacks)
            return
        # Assigned here (confluent-kafka then does not), paused until restored: the
        # restore runs in a thread and the loop goes on with the partitions it owns,
        # its open transaction too (none of these partitions' commands is in it).
        try:
            consumer.incremental_assign(partitions)
        except KafkaException:  # an eager assignor (-X partition.assignment.strategy)
            consumer.assign(partitions)
        consumer.pause(partitions)
        log.info(
            "restoring assigned partitions",
            extra={
                "instance": self._settings.instance_id,
                "partitions": numbers,
                "batch_commands": self._batches.batch.commands if self._batches.open else 0,
            },
        )
        self._restorer.start(numbers)
        if self._standbys is not None:
            self._standbys.rebalanced()

    def _install(self) -> None:
        """Install the finished restores: their partitions' commands are handled from
        now on. Sets `ready` once the first assignment's are all installed."""
        if self._rebalanced:  # the partitions kept are fetched again at once
            self._rebalanced = False
            self._txn.refetch(list(self._workflows.by_partition))
        finished = self._restorer.finished()  # raises what a restore failed with
        if finished:
            for partition, workflows in finished:
                self._workflows.restored(partition, workflows)
            partitions, offsets = [p for p, _ in finished], None
            if self._settings.fence_after_s is not None and not self._batches.open:
                offsets = self._txn.claim(partitions)
            self._txn.resume(partitions, offsets)
            self._workflows.recount()
            # After the claim: a fault test arms its stall once the restore is logged.
            self._restorer.announce()
        if self._ready.is_set() or self._assigned_at is None or self._restorer.restoring:
            return
        log.info(
            "processor ready",
            extra={
                "partitions": sorted(self._workflows.by_partition),
                "workflows": self._workflows.total(),
                "restore_s": round(time.monotonic() - self._assigned_at, 3),
            },
        )
        self._ready.set()

    def close(self) -> None:
        """Call off the restores under way, stop the standby, wait for their threads."""
        self._restorer.close()
        if self._standbys is not None:
            self._standbys.close()

    def _owned(self) -> tuple[set[int], set[int]]:
        """Held and restoring partitions, for the standby's thread (list() holds the GIL)."""
        return set(list(self._workflows.by_partition)), set(self._restorer.restoring)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.failed:
            return
        self.commit()  # finish the open transaction while we still own the partitions
        self._drop(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us: our offsets can no longer be committed.
        if self._batches.open and not self.failed:
            self._batches.abort("partitions lost")
        self._drop(partitions)

    def _drop(self, partitions: list[TopicPartition]) -> None:
        self._rebalanced = True
        if self._standbys is not None:
            self._standbys.rebalanced()
        self._restorer.drop(tp.partition for tp in partitions)
        dropped = self._workflows.drop(tp.partition for tp in partitions)
        if dropped:
            log.info("partitions revoked", extra={"partitions": dropped})
