"""Restore on assignment: a partition's workflows folded from the compacted event topic,
read to its last stable offset before any of its commands is handled."""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootStarted, WorkflowReplay, WorkflowState
from duroot_stream.kafka import kafka_error, new_consumer, position, watermarks
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import Codec

from .settings import KAFKA_TIMEOUT_S, ProcessorFatal

log = logging.getLogger("duroot.processor")

RESTORE_BATCH = 10_000  # records taken from the fetch queue at a time
ACTIVE_REPLAYS = 1_000  # per partition, see _PartitionFold
# The restore consumer's settings (the benchmarks' raw-consume yardstick reads with them).
RESTORE_CONSUMER: dict[str, object] = {
    "group.id": "duroot-restore",  # required; never joined or committed
    "enable.auto.commit": False,
    "isolation.level": "read_committed",
    "enable.partition.eof": True,
    "fetch.max.bytes": 64 * 1024 * 1024,
    "max.partition.fetch.bytes": 16 * 1024 * 1024,
    "queued.max.messages.kbytes": 256 * 1024,
    # librdkafka stops fetching for fetch.queue.backoff.ms (1 s) whenever
    # queued.min.messages (100,000) are queued: a fold slower than the fetch
    # would wait a second at a time. The queue stays bounded by the kbytes above.
    "queued.min.messages": 1_000_000,
    "fetch.queue.backoff.ms": 0,
    # The EOF comes with the first fetch that finds nothing new, which
    # the broker holds back this long (default 500 ms).
    "fetch.wait.max.ms": 10,
}


def restore_assigned(
    kafka: KafkaConfig,
    events_topic: str,
    partitions: list[int],
    codec: Codec,
    metrics: ProcessorMetrics,
) -> dict[int, dict[str, WorkflowState]]:
    """`restore_partitions`, with the restore metrics and one log line."""
    started = time.monotonic()
    restored = restore_partitions(
        kafka,
        events_topic,
        partitions,
        codec,
        on_start=lambda p: metrics.restore_in_progress.labels(str(p)).set(1),
    )
    for partition, (_, events) in restored.items():
        label = str(partition)
        metrics.restore_in_progress.labels(label).set(0)
        metrics.restore_events.labels(label).inc(events)
        metrics.restore_duration.labels(label).set(time.monotonic() - started)
    total_events = sum(events for _, events in restored.values())
    elapsed = time.monotonic() - started
    log.info(
        "partitions restored",
        extra={
            "partitions": sorted(partitions),
            "workflows": sum(len(w) for w, _ in restored.values()),
            "events": total_events,
            "seconds": round(elapsed, 3),
            "events_per_s": int(total_events / elapsed) if elapsed > 0 else None,
        },
    )
    return {p: workflows for p, (workflows, _) in restored.items()}


def restore_partitions(
    kafka: KafkaConfig,
    events_topic: str,
    partitions: list[int],
    codec: Codec,
    on_start: Callable[[int], None] | None = None,
) -> dict[int, tuple[dict[str, WorkflowState], int]]:
    """Fold each partition of the event topic into workflow states.

    Reads from the beginning to the last stable offset (read_committed: the
    partition EOF fires there) and folds each partition with a
    `_PartitionFold`. A tombstone drops its workflow. Returns, per partition,
    the workflows and the number of records read.

    Per event only the first fields of the Avro body are read (id, workflow,
    seq, cause, payload type: `Codec.event_facts`), and only STARTED payloads
    are decoded. Not the headers, though they carry the same: confluent-kafka
    builds a message's header list on first access, which costs more (about
    9 us for the six on a 2-core test machine) than all the rest of the fold.
    """
    consumer = new_consumer(kafka, **RESTORE_CONSUMER)
    folds = {p: _PartitionFold() for p in partitions}
    # The fold makes no reference cycles, only many objects that live on: the
    # cyclic garbage collector would walk them again and again (10-15 % of a
    # restore's time), so it waits until the restore is done.
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        starts: list[TopicPartition] = []
        for p in partitions:
            low, high = offsets(consumer, events_topic, p)
            if high > low:
                starts.append(TopicPartition(events_topic, p, low))  # no offset lookup
                if on_start:
                    on_start(p)
        pending = {tp.partition for tp in starts}
        if starts:
            consumer.assign(starts)
        while pending:
            # Take what is fetched (`consume(n, timeout)` would wait for all n);
            # wait with `poll` only when nothing is.
            messages = consumer.consume(num_messages=RESTORE_BATCH, timeout=0)
            if not messages:
                message = consumer.poll(1.0)
                messages = [message] if message is not None else []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(position(message)[0])
                        continue
                    raise ProcessorFatal(f"restoring {events_topic}: {error}")
                folds[position(message)[0]].add(message, codec)
    finally:
        consumer.close()
        if gc_was_enabled:
            gc.enable()
    return {p: (fold.finish(), fold.records) for p, fold in folds.items()}


def offsets(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """Low and high (last stable) offsets, retried while the error is transient
    (a fresh topic without a leader yet)."""
    try:
        return watermarks(consumer, topic, partition, timeout=KAFKA_TIMEOUT_S)
    except KafkaException as exc:
        error = kafka_error(exc) or exc
        raise ProcessorFatal(f"offsets of {topic} [{partition}]: {error}") from exc


class _PartitionFold:
    """One partition's workflows during a restore.

    The workflows with events coming in are folded by `WorkflowReplay`s (a
    mutable accumulator each, much cheaper per event than `evolve`). Beyond
    `ACTIVE_REPLAYS`, the longest-active one is turned into its state, and
    resumed from it should more of its events come: a history's events are
    close together in the topic (one du run), so this is rare, and the
    accumulators of all workflows are never held at once (they would take
    more memory than the states, and leave it fragmented afterwards).
    """

    __slots__ = ("active", "records", "states")

    def __init__(self) -> None:
        self.states: dict[str, WorkflowState] = {}
        self.active: dict[str, WorkflowReplay] = {}  # oldest activated first
        self.records = 0

    def add(self, message: Message, codec: Codec) -> None:
        self.records += 1
        value = message.value()
        if value is None:  # tombstone of a deleted history: "<workflow-id>/<seq>"
            workflow_id = (message.key() or b"").split(b"/", 1)[0].decode()
            self.active.pop(workflow_id, None)
            self.states.pop(workflow_id, None)
            return
        vid, workflow_id, seq, command_id, event_type = codec.event_facts(value)
        replay = self.active.get(workflow_id) or self._activate(workflow_id)
        started = None
        if event_type is DuRootStarted:
            payload = codec.decode_event(value).payload
            assert isinstance(payload, DuRootStarted)
            started = payload
        replay.add(event_type, vid, seq, command_id, started)

    def _activate(self, workflow_id: str) -> WorkflowReplay:
        state = self.states.pop(workflow_id, None)
        replay = WorkflowReplay(workflow_id) if state is None else WorkflowReplay.resume(state)
        self.active[workflow_id] = replay
        if len(self.active) > ACTIVE_REPLAYS:
            oldest = next(iter(self.active))
            self.states[oldest] = self.active.pop(oldest).state()
        return replay

    def finish(self) -> dict[str, WorkflowState]:
        for workflow_id, replay in self.active.items():
            self.states[workflow_id] = replay.state()
        self.active.clear()
        return self.states
