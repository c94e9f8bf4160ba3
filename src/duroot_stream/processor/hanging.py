"""Hanging transactions: an owned events partition whose last stable offset stands
still below its high watermark for longer than Kafka would let a transaction live.

An open transaction holds the last stable offset (LSO) back; Kafka aborts one that
outlives `transaction.timeout.ms` on its next abort check
(`transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s by default).
An LSO that has not moved for longer than both together belongs to a transaction
the coordinator does not know about any more (KIP-664's hanging transaction): it
blocks every read_committed reader of the partition, restores included, and
compaction, until an operator aborts it (`duroot-stream transactions find-hanging`,
then `duroot-stream transactions abort`).

`HangingMonitor` asks the broker (ListOffsets, read_committed and
read_uncommitted) every few seconds for the events partitions this instance owns,
sets `duroot_processor_unstable_messages` and `duroot_processor_unstable_seconds`,
and logs an error once per partition and episode when the limit is passed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.metrics import ProcessorMetrics

log = logging.getLogger("duroot.processor")

CHECK_INTERVAL_S = 5.0
ABORT_CHECK_INTERVAL_S = 10.0  # the broker's default abort check interval
REQUEST_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Stall:
    """A partition whose LSO has stood still below its high watermark."""

    partition: int
    stable: int  # the last stable offset
    high: int  # the high watermark
    seconds: float  # how long the LSO has stood at `stable`


class StallTracker:
    """Per partition: since when its LSO has stood at the same offset below the high
    watermark. Pure bookkeeping (time passed in), so it is tested without Kafka."""

    def __init__(self) -> None:
        self._since: dict[int, tuple[int, float]] = {}  # partition -> (stable, first seen)

    def observe(self, partition: int, stable: int, high: int, now: float) -> Stall:
        if stable >= high:
            self._since.pop(partition, None)
            return Stall(partition, stable, high, 0.0)
        seen = self._since.get(partition)
        if seen is None or seen[0] != stable:  # a first look, or the LSO moved
            self._since[partition] = (stable, now)
            return Stall(partition, stable, high, 0.0)
        return Stall(partition, stable, high, now - seen[1])

    def keep(self, partitions: Iterable[int]) -> list[int]:
        """Forget partitions no longer owned; the ones forgotten."""
        owned = set(partitions)
        gone = [p for p in self._since if p not in owned]
        for p in gone:
            del self._since[p]
        return gone


class HangingMonitor:
    """A thread that watches the last stable offsets of the owned events partitions."""

    def __init__(
        self,
        kafka: KafkaConfig,
        events_topic: str,
        owned: Callable[[], list[int]],
        metrics: ProcessorMetrics,
        limit_s: float,
        interval_s: float = CHECK_INTERVAL_S,
    ) -> None:
        self._kafka = kafka
        self._topic = events_topic
        self._owned = owned
        self._metrics = metrics
        self.limit_s = limit_s
        self._interval_s = interval_s
        self._tracker = StallTracker()
        self._labelled: set[int] = set()
        self._reported: set[tuple[int, int]] = set()  # (partition, stable) logged as hanging
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.hanging: dict[int, Stall] = {}  # partitions past the limit now

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="hanging-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(REQUEST_TIMEOUT_S + 5)

    def _run(self) -> None:
        admin = AdminClient(self._kafka.client())
        while not self._stop.wait(self._interval_s):
            try:
                partitions = self._owned()
                offsets = list_offsets(admin, self._topic, partitions) if partitions else {}
            except Exception as exc:  # broker away, a timeout, the consumer closing
                log.debug("last stable offsets not read", extra={"error": repr(exc)})
                continue
            self.check(offsets, time.monotonic())

    def check(self, offsets: dict[int, tuple[int, int]], now: float) -> list[Stall]:
        """Record (stable, high) per owned partition; the partitions hanging now."""
        metrics = self._metrics
        self._tracker.keep(offsets)
        for gone in self._labelled - offsets.keys():  # no longer owned
            self._labelled.discard(gone)
            metrics.unstable_messages.remove(str(gone))
            metrics.unstable_seconds.remove(str(gone))
            self.hanging.pop(gone, None)
        stalls = []
        for partition, (stable, high) in sorted(offsets.items()):
            stall = self._tracker.observe(partition, stable, high, now)
            self._labelled.add(partition)
            metrics.unstable_messages.labels(str(partition)).set(max(0, high - stable))
            metrics.unstable_seconds.labels(str(partition)).set(round(stall.seconds, 1))
            if stall.seconds <= self.limit_s:
                self.hanging.pop(partition, None)
                continue
            self.hanging[partition] = stall
            stalls.append(stall)
            if (partition, stable) not in self._reported:
                self._reported.add((partition, stable))
                log.error(
                    "hanging transaction: the last stable offset stands still",
                    extra={
                        "topic": self._topic,
                        "partition": partition,
                        "last_stable_offset": stable,
                        "high_watermark": high,
                        "stalled_s": round(stall.seconds),
                        "limit_s": self.limit_s,
                        "what_to_do": "duroot-stream transactions find-hanging, then "
                        "duroot-stream transactions abort --topic T --partition P "
                        "--start-offset O",
                    },
                )
        return stalls


def list_offsets(
    admin: AdminClient, topic: str, partitions: list[int]
) -> dict[int, tuple[int, int]]:
    """(last stable offset, high watermark) of each partition of `topic`."""
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    wanted = {TopicPartition(topic, p): latest for p in partitions}
    ends: dict[IsolationLevel, dict[int, int]] = {}
    for level in (IsolationLevel.READ_COMMITTED, IsolationLevel.READ_UNCOMMITTED):
        futures = admin.list_offsets(
            wanted, isolation_level=level, request_timeout=REQUEST_TIMEOUT_S
        )
        ends[level] = {
            tp.partition: int(f.result(REQUEST_TIMEOUT_S).offset) for tp, f in futures.items()
        }
    stable, high = ends[IsolationLevel.READ_COMMITTED], ends[IsolationLevel.READ_UNCOMMITTED]
    return {p: (stable[p], high[p]) for p in partitions if p in stable and p in high}
