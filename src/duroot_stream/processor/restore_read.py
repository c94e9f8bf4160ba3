"""Reading a topic's partitions to their ends during a restore: read_committed, from
the first offset to the high watermark taken at the start, waiting for the
transactions open below it (restore.py says why), and giving each record to its
partition's sink (an events fold, a state read)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.kafka import kafka_error, new_consumer, position, watermarks
from duroot_stream.wire import Codec

from .collection import hold_collection, release_collection
from .faults import ProcessorFatal
from .fold import Sink, feed
from .settings import KAFKA_TIMEOUT_S

log = logging.getLogger("duroot.processor")

RESTORE_BATCH = 10_000  # records taken from the fetch queue at a time


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


class RestoreCancelled(Exception):
    """The restore was called off: its partitions were revoked, or the processor stops."""


@dataclass(frozen=True)
class Opened:
    """What a read does about an open transaction that holds back a partition's last
    stable offset for `after_s`: `tell(partition)` once (the restore fences its owner,
    should that be a dead previous owner: a transaction that had not sent its
    offsets yet leaves them stable, so `await_stable_offsets` did not see it)."""

    tell: Callable[[int], object]
    after_s: float


def read_to_end(
    kafka: KafkaConfig,
    topic: str,
    ends: dict[int, tuple[int, int]],
    sinks: Mapping[int, Sink],
    codec: Codec,
    wait_s: float,
    cancelled: Callable[[], bool] | None = None,
    opened: Opened | None = None,
) -> None:
    """Give each record of `topic` from the low to the high watermark in `ends` to its
    partition's sink, read_committed. A read_committed fetch ends at the last stable
    offset, where the partition EOF fires: an EOF below the high watermark means a
    transaction is open there, and the read goes on until it commits (its records
    come) or aborts (they are skipped), at most `wait_s` from that EOF (then
    `ProcessorFatal`: a hanging transaction). `cancelled`: see `restore_partitions`;
    `opened`: see `Opened`."""
    consumer = new_consumer(kafka, **RESTORE_CONSUMER)
    # The fold makes no reference cycles, only many objects that live on: the
    # cyclic garbage collector would walk them again and again (10-15 % of a
    # restore's time), so it waits until the restore is done.
    hold_collection()
    try:
        # No offset lookup: each partition is read from its first offset.
        starts = [TopicPartition(topic, p, low) for p, (low, high) in ends.items() if high > low]
        pending = {tp.partition: ends[tp.partition][1] for tp in starts}  # partition -> target
        waiting: dict[int, tuple[int, float]] = {}  # partition -> (stable offset, since)
        told: set[int] = set()  # partitions whose open transaction `opened` was told of
        if starts:
            consumer.assign(starts)
        while pending:
            if cancelled is not None and cancelled():
                raise RestoreCancelled(f"restore of {topic} {sorted(pending)}")
            # Take what is fetched (`consume(n, timeout)` would wait for all n);
            # wait with `poll` only when nothing is.
            messages = consumer.consume(num_messages=RESTORE_BATCH, timeout=0)
            if not messages:
                message = consumer.poll(0.2 if waiting else 1.0)
                messages = [message] if message is not None else []
            for message in feed(messages, sinks, codec):
                error = message.error()
                if error is not None and error.code() == KafkaError._PARTITION_EOF:
                    _reached(topic, position(message), pending, waiting, wait_s)
                else:
                    raise ProcessorFatal(f"restoring {topic}: {error}")
            for partition, (stable, since) in waiting.items():
                waited = time.monotonic() - since
                if opened is not None and partition not in told and waited >= opened.after_s:
                    told.add(partition)
                    opened.tell(partition)
                if waited > wait_s:
                    raise ProcessorFatal(
                        _hanging(kafka, topic, partition, stable, pending[partition], wait_s)
                    )
    finally:
        consumer.close()
        release_collection()


def _reached(
    topic: str,
    at: tuple[int, int],
    pending: dict[int, int],
    waiting: dict[int, tuple[int, float]],
    wait_s: float,
) -> None:
    """A partition EOF at `at` (partition, offset): the last stable offset. Done with
    the partition if it is at its target, else waiting (logged once per partition)."""
    partition, offset = at
    target = pending.get(partition)
    if target is None:
        return
    if offset >= target:
        del pending[partition]
        waiting.pop(partition, None)
        return
    if partition not in waiting:
        log.warning(
            "restore waiting for an open transaction",
            extra={
                "topic": topic,
                "partitions": [partition],
                "last_stable_offset": offset,
                "high_watermark": target,
                "waits_for": "the transaction to commit or abort",
                "limit_s": wait_s,
            },
        )
    previous = waiting.get(partition)
    if previous is None or previous[0] != offset:  # the first look, or it moved
        waiting[partition] = (offset, time.monotonic())


def _hanging(
    kafka: KafkaConfig, topic: str, partition: int, stable: int, high: int, wait_s: float
) -> str:
    tool = f"kafka-transactions.sh --bootstrap-server {kafka.bootstrap_servers}"
    return (
        f"restoring {topic} [{partition}]: its last stable offset stayed at {stable}, below "
        f"the high watermark {high}, for {wait_s:.0f} s, longer than a transaction may live "
        "plus the broker's abort check: a transaction is hanging there. Its producer: "
        f"`{tool} describe-producers --topic {topic} --partition {partition}`; abort it with "
        f"`{tool} abort --topic {topic} --partition {partition} --start-offset {stable}`, "
        "then start this instance again"
    )


def high_watermarks(
    kafka: KafkaConfig, topic: str, partitions: list[int]
) -> dict[int, tuple[int, int]]:
    """(low, high watermark) per partition. A read_committed client is told the last
    stable offset instead of the high watermark: these are asked read_uncommitted."""
    consumer = new_consumer(kafka, **{**RESTORE_CONSUMER, "isolation.level": "read_uncommitted"})
    try:
        return {p: offsets(consumer, topic, p) for p in partitions}
    finally:
        consumer.close()


def offsets(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """Low and high offsets (the high one is the last stable offset for a
    read_committed consumer), retried while the error is transient (a fresh topic
    without a leader yet)."""
    try:
        return watermarks(consumer, topic, partition, timeout=KAFKA_TIMEOUT_S)
    except KafkaException as exc:
        error = kafka_error(exc) or exc
        raise ProcessorFatal(f"offsets of {topic} [{partition}]: {error}") from exc
