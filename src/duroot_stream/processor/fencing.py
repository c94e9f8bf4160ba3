"""A takeover does not wait for a dead owner's transaction: the heir ends it.

When an instance dies with a transaction open, the group's committed offsets of its
command partitions stay unstable, and the restore of the instance that takes them
over would wait until the broker aborts that transaction: the transaction timeout
(40 s) plus the broker's abort check. Instead, each transaction's offsets carry
their owner as offset-commit metadata (`owner_metadata`: its transactional.id and
its group member id), and an heir that still finds the offsets unstable after a
moment reads the last stable ones with their metadata and, for an owner that is no
longer in the group, calls `init_transactions` with its transactional.id on a
short-lived producer. The coordinator then ends that transaction (aborts it, or
finishes a commit already begun) and bumps the producer epoch, fencing the old
producer: a paused zombie that wakes up can commit nothing more.

A live owner is never fenced: an owner still in the group (by member id, or by
client.id, which the processor's consumer sets to its transactional.id) is left
alone, and so is this instance's own id. A live owner handing partitions over in
a cooperative rebalance commits before it lets them go, so its offsets are stable
and this never runs. When the stable metadata names an earlier owner than the one
holding the open transaction, fencing that one ends nothing of importance, and
the restore waits for the broker's timeout as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from duroot_stream.config import KafkaConfig
from duroot_stream.kafka import kafka_error, new_consumer

from .port import Faults
from .settings import KAFKA_TIMEOUT_S

log = logging.getLogger("duroot.processor")

METADATA_PREFIX = "duroot-owner "  # offset metadata: "duroot-owner <transactional.id> <member>"
# init_transactions of an id without an open transaction returns within this; one
# whose transaction is open gets CONCURRENT_TRANSACTIONS while the coordinator aborts
# it, and librdkafka asks again up to 500 ms later (rdkafka_idempotence.c).
FENCE_ANSWER_S = 0.1


@dataclass(frozen=True)
class Owner:
    """Whoever committed a partition's offsets: its transactional.id and member id."""

    transactional_id: str
    member_id: str


def owner_metadata(transactional_id: str, member_id: str) -> str:
    """The offset-commit metadata of a transaction's offsets."""
    return f"{METADATA_PREFIX}{transactional_id} {member_id}"


def parse_owner(metadata: str | None) -> Owner | None:
    """The owner named by offset metadata; None for metadata not written by us."""
    if not metadata or not metadata.startswith(METADATA_PREFIX):
        return None
    parts = metadata[len(METADATA_PREFIX) :].split(" ")
    if len(parts) != 2 or not all(parts):
        return None
    return Owner(parts[0], parts[1])


def dead_owners(
    owners: dict[int, Owner | None],
    own_transactional_id: str,
    live_members: set[str],
    live_clients: set[str],
) -> dict[str, list[int]]:
    """The transactional ids that may be fenced, with the partitions that name them:
    not ours, and not an owner still in the group."""
    found: dict[str, list[int]] = {}
    for partition, owner in sorted(owners.items()):
        if owner is None or owner.transactional_id == own_transactional_id:
            continue
        if owner.member_id in live_members or owner.transactional_id in live_clients:
            continue
        found.setdefault(owner.transactional_id, []).append(partition)
    return found


class Fence(Protocol):
    """What the restore calls when offsets are still unstable after `after_s`."""

    after_s: float

    def __call__(self, topic: str, partitions: list[int]) -> list[str] | None: ...


class Fencer:
    """Ends the open transactions of the dead previous owners of some partitions
    (a `Fence`); `fenced` is called for each owner fenced; `faults` (tests only)
    may pause before each fencing ("fence")."""

    def __init__(
        self,
        kafka: KafkaConfig,
        group_id: str,
        transactional_id: str,
        after_s: float,
        fenced: Callable[[], None] = lambda: None,
        faults: Faults | None = None,
    ) -> None:
        self.after_s = after_s
        self._faults = faults
        self._kafka = kafka
        self._group_id = group_id
        self._transactional_id = transactional_id
        self._fenced = fenced
        self._finishing: list[threading.Thread] = []

    def __call__(self, topic: str, partitions: list[int]) -> list[str] | None:
        """Fence the dead owners named by the stable offsets of `partitions`; the
        transactional ids fenced (or whose fencing finishes in a thread), or None when
        it failed (logged: the restore asks again on its next look, and meanwhile waits
        as it would without fencing)."""
        try:
            owners = self._stable_owners(topic, partitions)
            if not any(owners.values()):
                return []
            members, clients = self._live_members()
            return [
                transactional_id
                for transactional_id, named_by in dead_owners(
                    owners, self._transactional_id, members, clients
                ).items()
                if self._fence(transactional_id, named_by)
            ]
        except KafkaException as exc:
            log.warning(
                "previous owners not fenced", extra={"partitions": partitions, "error": str(exc)}
            )
            return None

    def _stable_owners(self, topic: str, partitions: list[int]) -> dict[int, Owner | None]:
        """Without require_stable (read_uncommitted), the broker answers at once with
        the last committed offsets, not those of the open transaction."""
        consumer = new_consumer(
            self._kafka,
            **{
                "group.id": self._group_id,  # asked, never joined
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",
            },
        )
        try:
            wanted = [TopicPartition(topic, p) for p in partitions]
            found = consumer.committed(wanted, timeout=KAFKA_TIMEOUT_S)
        finally:
            consumer.close()
        return {tp.partition: parse_owner(tp.metadata) for tp in found if tp.error is None}

    def _live_members(self) -> tuple[set[str], set[str]]:
        admin = AdminClient(self._kafka.client())
        futures = admin.describe_consumer_groups([self._group_id], request_timeout=KAFKA_TIMEOUT_S)
        group = futures[self._group_id].result()
        return {m.member_id for m in group.members}, {m.client_id for m in group.members}

    def close(self) -> None:
        """Wait for the fencings still finishing (see `_fence`)."""
        for thread in self._finishing:
            thread.join(KAFKA_TIMEOUT_S)

    def _fence(self, transactional_id: str, partitions: list[int]) -> bool:
        """Fence the owner: once the coordinator has the fencing producer's first
        InitProducerId, it aborts the open transaction and bumps the epoch. The restore
        needs that abort, not this producer, so an `init_transactions` not answered
        within FENCE_ANSWER_S (the abort under way) finishes in a thread."""
        if self._faults is not None:
            self._faults.pause("fence")
        started = time.monotonic()
        producer = Producer(self._kafka.client(**{"transactional.id": transactional_id}))
        try:
            producer.init_transactions(FENCE_ANSWER_S)
        except KafkaException as exc:
            error = kafka_error(exc)
            if error is None or not error.retriable():  # _TIMED_OUT, CONCURRENT_TRANSACTIONS
                producer.flush(0)
                raise  # asked again (see `__call__`)
            thread = threading.Thread(
                target=self._finish,
                args=(producer, transactional_id, partitions, started),
                name=f"fence-{transactional_id}",
                daemon=True,  # joined at close
            )
            self._finishing = [t for t in self._finishing if t.is_alive()] + [thread]
            thread.start()
            return True
        producer.flush(0)
        self._done(transactional_id, partitions, started)
        return True

    def _finish(
        self, producer: Producer, transactional_id: str, partitions: list[int], started: float
    ) -> None:
        try:
            producer.init_transactions(KAFKA_TIMEOUT_S)  # the same call, resumed
        except KafkaException as exc:  # the restore then waits for the broker's abort
            log.warning(
                "fencing a previous owner failed",
                extra={"transactional_id": transactional_id, "error": str(exc)},
            )
            return
        finally:
            producer.flush(0)
        self._done(transactional_id, partitions, started)

    def _done(self, transactional_id: str, partitions: list[int], started: float) -> None:
        self._fenced()
        log.warning(
            "fenced a previous owner",
            extra={
                "transactional_id": transactional_id,
                "partitions": partitions,
                "seconds": round(time.monotonic() - started, 3),
                "why": "its transaction held the offsets of partitions now ours, and it is "
                "no longer in the group",
            },
        )
