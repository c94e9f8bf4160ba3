"""Restore on assignment: a partition's workflows read from the state topic
(state_store.py), or folded from the compacted event topic when the state does not
pass its checks, before any of its commands is handled.

A restore must not miss what a predecessor commits late (Kafka Streams' KAFKA-10167).
KIP-447 fences a zombie at `send_offsets_to_transaction`, but not at
`commit_transaction`: an instance paused in between (its partitions given to another
meanwhile) can still commit, its events above the last stable offset while the new
owner restores. So, per assignment (`restore_assigned`, in a thread of its own:
`restorer.py`):

1. wait until the group's committed offsets of the assigned command partitions are
   stable: the broker answers UNSTABLE_OFFSET_COMMIT while a transaction that sent
   offsets for them is open (`await_stable_offsets`); once it ends, everything that
   transaction wrote is in the log (commit_transaction flushes before EndTxn);
2. read each state partition, and the events partitions whose state is not used,
   to their high watermarks taken then, read_committed, waiting for open
   transactions below them to resolve (`restore_partitions`).

Either wait may be for a dead previous owner's transaction: one that had sent its
offsets leaves them unstable (step 1), one that had not yet only holds back the
last stable offset (step 2). In both, after `fence.after_s`, its owner is fenced
if it has left the group (fencing.py), which ends the transaction at once.

Both waits are bounded (`restore_wait_s`: the transaction timeout plus the broker's
abort check, with a margin); a transaction open past that is hanging, and the
processor stops with `ProcessorFatal` naming the partition and the commands that show
and abort it, rather than restore a state that could lack its events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import WorkflowState
from duroot_stream.kafka import Triage, kafka_error, triage
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import Codec, Topics

from . import heap
from .compaction import compacted
from .faults import ProcessorFatal
from .fencing import Fence
from .fold import PartitionFold
from .restore_read import (
    Opened,
    RestoreCancelled,
    high_watermarks,
    read_to_end,
)
from .settings import RESTORE_WAIT_S
from .standby import Warm
from .state_store import FoldedStates, LastRecord, Snapshot, StateRead, last_event_problem

log = logging.getLogger("duroot.processor")

TAIL_WINDOW = 64  # offsets below the events' end read first for their last record
STABLE_FIRST_TRY_S = 2.0  # committed offsets not stable by then: log that we wait


# The restore consumer's settings (the benchmarks' raw-consume yardstick reads with them).
def restore_assigned(
    consumer: Consumer,
    kafka: KafkaConfig,
    commands_topic: str,
    events_topic: str,
    partitions: list[int],
    codec: Codec,
    wait_s: float = RESTORE_WAIT_S,
    fence: Fence | None = None,
    cancelled: Callable[[], bool] | None = None,
    metrics: ProcessorMetrics | None = None,
    standby: Callable[[list[int]], Mapping[int, Warm]] | None = None,
) -> dict[int, tuple[dict[str, WorkflowState], int]]:
    """The two steps of the module docstring: per partition, its workflows and the
    number of events read (`restore_partitions`, with the state topic of `kafka`'s
    topic prefix). `consumer` asks for the group's committed offsets (its
    `group.id`, read_committed; it never joins the group); `fence` ends a dead
    previous owner's transaction (see `await_stable_offsets`). `cancelled` is asked
    between the steps' waits: True ends the restore with `RestoreCancelled`.
    `standby` hands over the state reads a warm standby holds (standby.py)."""
    await_stable_offsets(consumer, commands_topic, partitions, wait_s, fence, cancelled)
    state_topic = Topics(kafka.topic_prefix).state
    opened = None
    if fence is not None:
        opened = Opened(lambda p: fence(commands_topic, [p]), fence.after_s)
    return restore_partitions(
        kafka,
        events_topic,
        partitions,
        codec,
        wait_s,
        state_topic=state_topic,
        metrics=metrics,
        cancelled=cancelled,
        opened=opened,
        warm=None if standby is None else standby(partitions),
    )


def await_stable_offsets(
    consumer: Consumer,
    topic: str,
    partitions: list[int],
    wait_s: float = RESTORE_WAIT_S,
    fence: Fence | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> None:
    """Return once no open transaction holds committed offsets of `partitions`.

    A read_committed consumer's `committed()` asks with require_stable and retries
    while the broker answers UNSTABLE_OFFSET_COMMIT, until its timeout. Still
    unstable after `fence.after_s`: `fence(topic, partitions)`, which ends the
    transaction if its owner has left the group (fencing.py)."""
    wanted = [TopicPartition(topic, p) for p in partitions]
    deadline = time.monotonic() + wait_s
    logged = False
    try_s = STABLE_FIRST_TRY_S if fence is None else fence.after_s
    while True:
        if cancelled is not None and cancelled():
            raise RestoreCancelled(f"restore of {topic} {partitions}")
        left = deadline - time.monotonic()
        try:
            found = consumer.committed(wanted, timeout=max(0.1, min(left, try_s)))
            errors: list[KafkaError | KafkaException] = [
                tp.error for tp in found if tp.error is not None
            ]
        except KafkaException as exc:
            errors = [kafka_error(exc) or exc]
        if not errors:
            return
        for error in errors:
            if not isinstance(error, KafkaError) or not _retriable(error):
                raise ProcessorFatal(f"committed offsets of {topic} {partitions}: {error}")
        if time.monotonic() >= deadline:
            raise ProcessorFatal(
                f"the committed offsets of {topic} partitions {partitions} stayed unstable for "
                f"{wait_s:.0f} s: a transaction that sent them (a previous owner's) is still "
                "open, longer than a transaction may live plus the broker's abort check, so it "
                "is hanging. `kafka-transactions.sh --bootstrap-server ... find-hanging "
                "--broker-id N` lists it with its producer; abort it with `kafka-transactions.sh "
                "... abort`, then start this instance again"
            )
        if not logged:
            logged = True
            log.warning(
                "restore waiting for an open transaction",
                extra={
                    "topic": topic,
                    "partitions": partitions,
                    "waits_for": "the group's committed offsets to become stable",
                    "limit_s": wait_s,
                },
            )
        if fence is not None and fence(topic, partitions) is not None:
            fence = None  # done (a failure is tried again on the next look)
            try_s = STABLE_FIRST_TRY_S


def _retriable(error: KafkaError) -> bool:
    """Worth asking again: a timeout (still unstable), or an error that passes."""
    code = error.code()
    return (
        code in (KafkaError._TIMED_OUT, KafkaError.UNSTABLE_OFFSET_COMMIT)
        or triage(error) is Triage.RETRY
    )


def restore_partitions(
    kafka: KafkaConfig,
    events_topic: str,
    partitions: list[int],
    codec: Codec,
    wait_s: float = RESTORE_WAIT_S,
    state_topic: str | None = None,
    metrics: ProcessorMetrics | None = None,
    cancelled: Callable[[], bool] | None = None,
    opened: Opened | None = None,
    warm: Mapping[int, Warm] | None = None,
) -> dict[int, tuple[dict[str, WorkflowState], int]]:
    """Each partition's workflows: from the state topic when given and its records
    pass their checks (state_store.py), else folded from the event topic. Returns,
    per partition, the workflows and the number of events read (none from state).
    With `state_topic`, a partition folded from the events comes as `FoldedStates`:
    its snapshot is due. `metrics` counts the partitions whose state was not used.
    `cancelled` returning True between fetches ends it with `RestoreCancelled`;
    `opened` is told of an open transaction a read waits for. A partition in `warm`
    has its state read on from where a standby left it.

    Each topic is read from the beginning to the high watermark as of now,
    read_committed (`restore_read.read_to_end`). Per event only the first fields of the Avro body
    are read (id, workflow, seq, cause, payload type: `Codec.event_facts`), and
    only STARTED payloads are decoded. Not the headers, though they carry the
    same: confluent-kafka builds a message's header list on first access, which
    costs more (about 9 us for the six on a 2-core test machine) than all the
    rest of the fold.

    Once the reads are over, the states are made again together (compaction.py), so
    that they do not keep the memory of what the restore dropped, and that memory is
    given back to the kernel (heap.py).
    """
    heap.settle()
    restored = compacted(
        _read_partitions(
            kafka,
            events_topic,
            partitions,
            codec,
            wait_s,
            state_topic,
            metrics,
            cancelled,
            opened,
            warm,
        )
    )
    heap.give_back()
    return restored


def _read_partitions(
    kafka: KafkaConfig,
    events_topic: str,
    partitions: list[int],
    codec: Codec,
    wait_s: float,
    state_topic: str | None,
    metrics: ProcessorMetrics | None,
    cancelled: Callable[[], bool] | None,
    opened: Opened | None,
    warm: Mapping[int, Warm] | None,
) -> dict[int, tuple[dict[str, WorkflowState], int]]:
    """`restore_partitions` but the compaction."""
    ends = high_watermarks(kafka, events_topic, partitions)
    reads = {p: StateRead() for p in partitions}
    restored: dict[int, tuple[dict[str, WorkflowState], int]] = {}
    if state_topic is not None:
        state_ends = high_watermarks(kafka, state_topic, partitions)
        warmed = _warm_reads(warm or {}, state_ends, reads)
        read_to_end(
            kafka,
            state_topic,
            state_ends,
            reads,
            codec,
            wait_s,
            cancelled,
            opened,
        )
        found = {p: read.states(ends[p][1]) for p, read in reads.items()}
        usable = {p: states for p, (states, _, _) in found.items() if states is not None}
        tails = _last_events(
            kafka, events_topic, {p: ends[p] for p in usable}, codec, wait_s, cancelled, opened
        )
        for partition, (states, reason, detail) in found.items():
            if states is not None:
                last = tails[partition]
                problem = None if last is None else last_event_problem(states, *last, codec)
                if problem is None:
                    restored[partition] = (states, 0)
                    log.info(
                        "state used",
                        extra={
                            "partition": partition,
                            "workflows": len(states),
                            "records": reads[partition].records,
                            "read_ahead": warmed.get(partition, 0),
                        },
                    )
                    continue
                reason, detail = "events_without_state", problem
            log.warning("state not used", extra={"partition": partition, "reason": detail})
            if metrics is not None:
                metrics.state_fallbacks.labels(reason).inc()
    folds = {p: PartitionFold() for p in partitions if p not in restored}
    if folds:
        read_to_end(
            kafka,
            events_topic,
            {p: ends[p] for p in folds},
            folds,
            codec,
            wait_s,
            cancelled,
            opened,
        )
    for partition, fold in folds.items():
        states = fold.finish(codec)
        if state_topic is not None:
            stale = reads[partition].stale(states)
            states = FoldedStates(states, Snapshot(ends[partition][1], stale))
        restored[partition] = (states, fold.records)
    return restored


def _warm_reads(
    warm: Mapping[int, Warm], ends: dict[int, tuple[int, int]], reads: dict[int, StateRead]
) -> dict[int, int]:
    """Put the standby's reads in `reads` and start their partitions' reads in `ends`
    where it left off; the partitions warmed so, with the records the standby had read.
    A read past the partition's end or before its start (the topic recreated, records
    deleted) is not used."""
    warmed: dict[int, int] = {}
    for partition, held in warm.items():
        low, high = ends[partition]
        if not low <= held.next_offset <= high:
            log.info(
                "standby state not used",
                extra={
                    "partition": partition,
                    "read_to": held.next_offset,
                    "low": low,
                    "high": high,
                },
            )
            continue
        reads[partition] = held.read
        ends[partition] = (held.next_offset, high)
        warmed[partition] = held.read.records
    return warmed


def _last_events(
    kafka: KafkaConfig,
    topic: str,
    ends: dict[int, tuple[int, int]],
    codec: Codec,
    wait_s: float,
    cancelled: Callable[[], bool] | None = None,
    opened: Opened | None = None,
) -> dict[int, tuple[bytes, bytes | None] | None]:
    """The key and value of each events partition's last committed record (None:
    none), read from a window below its high watermark, widened while it holds none
    (aborted transactions, control records)."""
    last = {p: LastRecord() for p in ends}
    window = TAIL_WINDOW
    todo = [p for p, (low, high) in ends.items() if high > low]
    while todo:
        tails = {p: (max(ends[p][0], ends[p][1] - window), ends[p][1]) for p in todo}
        read_to_end(kafka, topic, tails, last, codec, wait_s, cancelled, opened)
        todo = [p for p in todo if last[p].record is None and tails[p][0] > ends[p][0]]
        window *= 16
    return {p: found.record for p, found in last.items()}
