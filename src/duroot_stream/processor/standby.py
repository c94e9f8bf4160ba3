"""Warm standbys (`processor --standbys N`): an instance keeps the state of N other
instances' partitions current, so that taking one over reads only the state records
written since, not its whole state partition (restore.py).

A thread of its own follows, with its own consumer (read_committed, assigned, never
joining the group), the state partitions of the N owners after this one on the
group's ring. The owners are read from the group's committed offsets: each
transaction's offsets name their owner's transactional id (fencing.py), and an
instance claims the partitions it takes over at once. Ordered by transactional id,
every instance sees the same ring and each owner is followed by N others. It looks
every `LOOK_EVERY_S` and after each rebalance. (Not from the group's description:
librdkafka 2.16's admin client aborts the process, an assertion in its coordinator
requests, when one is under way as the broker restarts; seen in the broker-restart
scenario.)
Per partition it keeps what a restore's state read keeps (`StateRead`: the last
record per key, undecoded) and the offset it has read to.

A restore `take`s the reads of the partitions it restores: they are no longer
followed, and the restore reads each state partition on from that offset, then
checks the whole exactly as a read from the start (marker, schemas, the events'
last record). What the standby holds is only ever a head start: read_committed, it
never holds an aborted record, and a partition it had not caught up on is simply
read further.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from duroot_stream.kafka import new_consumer, position
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import Codec, Topics

from .fencing import parse_owner
from .restore_read import RESTORE_BATCH, RESTORE_CONSUMER
from .settings import KAFKA_TIMEOUT_S, ProcessorSettings
from .state_store import StateRead

log = logging.getLogger("duroot.processor")

LOOK_EVERY_S = 5.0  # how often the group's assignment is looked at between rebalances
FOLLOW_POLL_S = 0.2  # the longest a wait for records keeps the thread from a look or a stop


@dataclass(frozen=True)
class Warm:
    """A followed state partition handed to a restore: its read so far, and the
    offset to read on from."""

    read: StateRead
    next_offset: int


def followed_partitions(
    members: Iterable[tuple[str, Iterable[int]]], own_client_id: str, count: int
) -> set[int]:
    """The partitions of the `count` members after this one on the ring of `members`
    (transactional id, partitions) ordered by id; an id twice is one member. None
    before this instance owns a partition."""
    by_client: dict[str, set[int]] = {}
    for client_id, partitions in members:
        by_client.setdefault(client_id, set()).update(partitions)
    ring = sorted(by_client)
    if own_client_id not in ring:
        return set()
    at = ring.index(own_client_id)
    chosen: set[int] = set()
    for step in range(1, min(count, len(ring) - 1) + 1):
        chosen |= by_client[ring[(at + step) % len(ring)]]
    return chosen - by_client[own_client_id]


class Standbys:
    """The followed state partitions. `take` and `rebalanced` may be called from any
    thread; `partitions` is the commands topic's count; `owned` tells which partitions
    this instance holds, and which it is restoring (not followed, but kept until their
    restore takes them)."""

    def __init__(
        self,
        settings: ProcessorSettings,
        topics: Topics,
        partitions: int,
        codec: Codec,
        metrics: ProcessorMetrics,
        owned: Callable[[], tuple[set[int], set[int]]],
    ) -> None:
        self._kafka = settings.kafka
        self._group_id = settings.group_id
        self._client_id = settings.transactional_id  # its place on the ring
        self._commands_topic = topics.commands
        self._partitions = partitions
        self._state_topic = topics.state
        self._count = settings.standbys
        self._codec = codec
        self._metrics = metrics
        self._owned = owned
        self._lock = threading.Lock()
        self._reads: dict[int, StateRead] = {}  # followed partition -> its read so far
        self._next: dict[int, int] = {}  # followed partition -> the offset to read from
        self._look = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="standby", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def rebalanced(self) -> None:
        """The group's assignment changed: look again at once."""
        self._look.set()

    def take(self, partitions: Iterable[int]) -> dict[int, Warm]:
        """The reads of those of `partitions` followed; they are no longer followed."""
        taken: dict[int, Warm] = {}
        with self._lock:
            for p in partitions:
                read = self._reads.pop(p, None)
                if read is not None:
                    taken[p] = Warm(read, self._next.pop(p, 0))
        if taken:
            self._metrics.standby_takeovers.inc(len(taken))
            self._look.set()  # unassigned from the standby's consumer
            self._gauge()
        return taken

    def close(self) -> None:
        self._closing.set()
        if self._thread.is_alive():
            self._thread.join(KAFKA_TIMEOUT_S)

    def _run(self) -> None:
        while not self._closing.is_set():
            consumer = new_consumer(
                self._kafka, **{**RESTORE_CONSUMER, "enable.partition.eof": False}
            )
            # Asks for the group's committed offsets, never joins: read_uncommitted, so
            # the last committed ones come at once, not once the open transaction ends.
            owners = new_consumer(
                self._kafka,
                **{
                    "group.id": self._group_id,
                    "enable.auto.commit": False,
                    "isolation.level": "read_uncommitted",
                },
            )
            try:
                self._follow_until_closed(consumer, owners)
            except Exception:  # a standby is a head start only: restores read on
                log.exception("standby failed; it starts again from the start after a pause")
                with self._lock:  # what was read can no longer be told complete
                    self._reads.clear()
                    self._next.clear()
                self._gauge()
                self._closing.wait(LOOK_EVERY_S)
            finally:
                consumer.close()
                owners.close()

    def _follow_until_closed(self, consumer: Consumer, owners: Consumer) -> None:
        looked = 0.0
        while not self._closing.is_set():
            if self._look.is_set() or time.monotonic() - looked >= LOOK_EVERY_S:
                self._look.clear()
                looked = time.monotonic()
                self._follow(consumer, owners)
            self._read(consumer)

    def _follow(self, consumer: Consumer, owners: Consumer) -> None:
        """Follow the partitions the ring gives this instance now."""
        try:
            ring = self._wanted(owners)
        except KafkaException as exc:  # looked at again later
            log.warning("standby not updated", extra={"error": str(exc)})
            return
        held, restoring = self._owned()
        wanted = ring - held - restoring
        with self._lock:
            followed = set(self._reads)
            new = wanted - followed
            for p in followed - wanted - restoring:
                del self._reads[p]
                self._next.pop(p, None)
            for p in new:
                self._reads[p] = StateRead()
                self._next[p] = 0
            reading = set(self._reads)
        # A partition taken and wanted again is read again from the start. A failure
        # here leaves reads and assignment apart: `_run` then drops them all.
        assigned = {tp.partition for tp in consumer.assignment()}
        topic = self._state_topic
        gone = sorted((assigned - reading) | (new & assigned))
        if gone:
            consumer.incremental_unassign([TopicPartition(topic, p) for p in gone])
        fresh = sorted(reading - (assigned - set(gone)))
        if fresh:
            consumer.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in fresh])
        if new or gone:
            log.info("standby follows", extra={"partitions": sorted(wanted), "new": sorted(new)})
        self._gauge()

    def _wanted(self, owners: Consumer) -> set[int]:
        wanted = [TopicPartition(self._commands_topic, p) for p in range(self._partitions)]
        found = owners.committed(wanted, timeout=KAFKA_TIMEOUT_S)
        members = [
            (owner.transactional_id, [tp.partition])
            for tp in found
            if tp.error is None and (owner := parse_owner(tp.metadata)) is not None
        ]
        return followed_partitions(members, self._client_id, self._count)

    def _read(self, consumer: Consumer) -> None:
        messages = consumer.consume(num_messages=RESTORE_BATCH, timeout=FOLLOW_POLL_S)
        codec = self._codec
        with self._lock:
            reads, next_offsets = self._reads, self._next
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        log.warning("standby read error", extra={"error": str(error)})
                    continue
                partition, offset = position(message)
                read = reads.get(partition)
                if read is None:  # taken, or no longer followed
                    continue
                read.add(message, codec)
                next_offsets[partition] = offset + 1
        if messages:
            self._gauge()

    def _gauge(self) -> None:
        with self._lock:
            partitions, states = len(self._reads), sum(len(r.values) for r in self._reads.values())
        self._metrics.standby_partitions.set(partitions)
        self._metrics.standby_states.set(states)
