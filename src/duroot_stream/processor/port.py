"""The processor's two ports: what its engine needs of Kafka (`TransactionPort`), and
the faults a test may inject into the Kafka adapter's client calls (`Faults`).

As nog's `events.Engine` reaches its aggregate only through `Behavior`, the engine
(`engine.py` one command, `batch.py` one transaction, `collector.py` garbage
collection) reaches Kafka only through `TransactionPort`. `kafka_transaction.
Transaction` is the Kafka adapter (clients, transactional calls, retries, producer
renewal, error triage); tests/processor/memory.py is an in-memory one, on which the
engine's tests and `benchmarks.handler` run without a broker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple, Protocol, TypeVar

T = TypeVar("T")

# A record's headers as produced: (name, value) pairs, in order.
RecordHeaders = Sequence[tuple[str, bytes | None]]


class CommitTimes(NamedTuple):
    """Seconds a commit spent sending the offsets, and committing (for the metrics)."""

    send_offsets_s: float
    commit_s: float


class TransactionPort(Protocol):
    """One transaction at a time, over the commands consumed from the commands topic.

    Errors, from `faults.py`: `AbortNeeded` (abort the transaction and redo its
    commands), `RecordRefused` (this record alone cannot be written), `ProcessorFatal`
    (the processor cannot go on)."""

    def begin(self) -> None:
        """Open a transaction: the first command of a batch (or GC command) needs one."""

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: RecordHeaders | None,
    ) -> None:
        """Write one record in the open transaction: the events, index records, reply
        or dead letter a command makes. `RecordRefused` when this record cannot be
        written (its command is dead-lettered instead); `AbortNeeded` when the
        transaction has failed."""

    def commit(self, offsets: Mapping[int, int]) -> CommitTimes | None:
        """Commit the open transaction together with the consumed offsets (command
        partition -> next offset), so that its commands count as consumed exactly when
        its records are written. None: it did not commit and is over (it timed out,
        and the group's offsets show it was not committed): undo and redo it.
        `AbortNeeded`: abort it."""

    def abort(self, why: str) -> None:
        """End the open transaction without its records."""

    def rewind(self, offsets: Mapping[int, int]) -> None:
        """Consume again from these offsets (command partition -> first offset of an
        aborted batch), on the partitions still owned: its commands are redone."""

    def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        """The next offset to consume of each command partition that has one: what a
        transaction of garbage-collection commands commits when it consumed no
        command, so that a zombie's is fenced too (`collector.py`)."""


class Faults(Protocol):
    """Faults a test injects into the Kafka adapter (`Processor(..., faults=...)`);
    a processor that is not under test has none.

    `what` names the client call: init_transactions, begin_transaction, produce,
    send_offsets_to_transaction, commit_transaction or abort_transaction; and
    "fence", before a restore fences a previous owner (fencing.py, in a restore thread)."""

    def pause(self, what: str) -> None:
        """Called in the processor's loop thread before transactional call `what`
        begins (outside its hung-call watch and its timeout): blocking here stalls
        the instance there, as a long pause of the process would (a zombie)."""

    def call(self, what: str, call: Callable[[], T]) -> T:
        """Run client call `what` in its stead, where it runs (retried and triaged as
        it is): return `call()`, or raise what Kafka could raise instead of it or
        after it (an answer lost), or block (a call that hangs)."""
