"""The Kafka adapter of the engine's port (`port.TransactionPort`): begin, produce,
commit, abort, rewind, with retries, producer renewal and the error triage.

`Transaction` owns the processor's two clients, made when it is constructed:
the transactional producer, and the consumer whose offsets each transaction
commits. Kafka errors are sorted by `kafka.triage`, in one place here
(`Transaction.triage`): RETRY → the same call again; ABORT → `AbortNeeded`,
which makes the engine abort, rewind the consumer and undo the state changes;
FATAL → `ProcessorFatal`.

A transactional call that times out, or blocks past its timeout (after a broker
restart librdkafka can do both for good: issues 5456 and 5511), is not retried:
the producer is replaced by a new one with the same transactional.id (`renew`),
whose init_transactions ends the old one's transaction, and the batch is redone,
or kept if the group's committed offsets show that it committed. A producer that
saw every broker go away is renewed at the next commit rather than tried.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from duroot_stream.kafka import Triage, kafka_error, triage

from .faults import (
    CONFIG_ERRORS,
    AbortNeeded,
    ProcessorConfigError,
    ProcessorFatal,
    fatal_message,
    record_refused,
    transaction_failed,
)
from .fencing import owner_metadata
from .kafka_clients import command_consumer, transactional_producer
from .port import CommitTimes, Faults, RecordHeaders
from .settings import KAFKA_TIMEOUT_S, ProcessorSettings
from .watchdog import Call, CallTimedOut, CallWatch, Worker

log = logging.getLogger("duroot.processor")

T = TypeVar("T")

# send_offsets_to_transaction and commit_transaction take milliseconds; one that
# times out after this long is given up with its producer (see `renew`).
TXN_CALL_TIMEOUT_S = 6.0
CALL_GRACE_S = 2.0  # past its own timeout, a call is given up (see watchdog.py)
RESUME_LOOKUP_S = 5.0  # the committed offsets of resumed partitions (stable by then)
TIMEOUT_CODES = frozenset({KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})


class _TimedOut(Exception):
    """A transactional call timed out: its outcome is unknown, its producer suspect."""


class Transaction:
    """The processor's Kafka clients, one transaction at a time (`TransactionPort`).

    `watch` is told which transactional call runs (for the hung-call exit);
    `on_statistics` gets the consumer's statistics; `renewed` is called for each
    producer given up for a new one; `faults` (tests only) steer the client calls."""

    def __init__(
        self,
        settings: ProcessorSettings,
        commands_topic: str,
        watch: CallWatch,
        on_statistics: Callable[[str], None],
        renewed: Callable[[], None],
        faults: Faults | None = None,
    ) -> None:
        self._commands_topic = commands_topic
        self._watch = watch
        self._renewed = renewed
        self._faults = faults
        self._fatal_cause = ""
        self._settings = settings
        self.renewals = 0  # producers given up for a new one (see `renew`)
        self._brokers_lost = False  # the producer has seen every broker go away
        self.producer = self._new_producer()
        self._worker = Worker("txn-calls")
        self.consumer = command_consumer(settings, on_statistics)

    def _new_producer(self) -> Producer:
        renewal = self.renewals
        return transactional_producer(
            self._settings, lambda error: self._on_producer_error(error, renewal)
        )

    def init(self) -> None:
        producer = self.producer
        self.retry("init_transactions", lambda: producer.init_transactions(KAFKA_TIMEOUT_S))
        producer.poll(0)  # errors from before it could reach the brokers are stale now
        self._brokers_lost = False

    def renew(self, why: str) -> None:
        """Replace the producer with a new one of the same transactional.id.

        Its `init_transactions` makes the coordinator end the old producer's open
        transaction (abort it, or finish a commit already begun) before it answers,
        and fences the old producer, so nothing it still has in flight can land."""
        self.renewals += 1  # first: the old producer's errors are ignored from now on
        log.warning("renewing the producer", extra={"reason": why, "renewals": self.renewals})
        old, self.producer = self.producer, self._new_producer()
        self._worker.close()  # a call stuck in it stays behind with the old producer
        self._worker = Worker("txn-calls")
        self._renewed()
        # Destroying a client whose requests hang can block: let a thread do it.
        threading.Thread(target=_discard, args=(old,), name="discard-producer", daemon=True).start()
        del old
        self.init()

    def close(self, flush: bool = True) -> None:
        """Leave the group (on_revoke runs: there is nothing left to commit) and,
        with `flush`, deliver what the producer holds (a fenced one has nothing)."""
        self._worker.close()
        self.consumer.close()
        if flush:
            self.producer.flush(5)

    def _on_producer_error(self, error: KafkaError, renewal: int) -> None:
        if renewal != self.renewals:  # an abandoned producer's (fenced, say)
            return
        # A fatal error reaches later calls only as a generic _FATAL: keep the cause.
        if error.fatal():
            self._fatal_cause = str(error)
        # Every broker was away (a restart): the next commit would likely block in
        # librdkafka (issue 5456), so the producer is renewed before it instead.
        self._brokers_lost = self._brokers_lost or error.code() == KafkaError._ALL_BROKERS_DOWN
        log.warning("producer error", extra={"error": str(error)})

    # --- the port: one transaction ------------------------------------------------

    def begin(self) -> None:
        self.retry("begin_transaction", self.producer.begin_transaction)

    def produce(
        self,
        topic: str,
        partition: int,
        key: bytes | None,
        value: bytes | None,
        headers: RecordHeaders | None,
    ) -> None:
        producer, faults = self.producer, self._faults
        # confluent-kafka's stub wants a list of str-or-bytes values: ours is one (said
        # by an annotation, not `cast`: a function call per record).
        record_headers: Any = headers
        while True:
            try:
                if faults is None:
                    producer.produce(topic, value, key, partition=partition, headers=record_headers)
                else:
                    faults.call(
                        "produce",
                        lambda: producer.produce(
                            topic, value, key, partition=partition, headers=record_headers
                        ),
                    )
                return
            except BufferError:
                producer.poll(0.05)  # the local queue is full: let it drain
            except (KafkaException, ValueError, TypeError) as exc:
                refused = record_refused(exc)  # this record's fault: its command's to handle
                if refused is not None:
                    raise refused from None
                if not isinstance(exc, KafkaException):
                    raise
                failed = transaction_failed(exc)
                if failed is not None:
                    raise AbortNeeded(f"produce: {failed}") from None
                self.triage("produce", exc)  # returns only when retriable
                time.sleep(0.05)

    def commit(self, offsets: Mapping[int, int]) -> CommitTimes | None:
        producer, consumer = self.producer, self.consumer
        consumed = []
        if offsets:
            # Who holds the transaction, for an heir that finds it open (fencing.py).
            owner = owner_metadata(self._settings.transactional_id, consumer.memberid() or "-")
            topic = self._commands_topic
            consumed = [TopicPartition(topic, p, o, metadata=owner) for p, o in offsets.items()]
        try:
            try:
                producer.poll(0)  # serves error_cb
            except KafkaException as exc:  # a fatal error (fenced) is raised by poll
                self.triage("commit_transaction", exc)
            if self._brokers_lost:
                raise _TimedOut("every broker went away during the transaction")
            sending = time.perf_counter()
            if consumed:
                # Read here, not in the worker: a consumer call from another thread
                # blocks while this one is inside poll (a rebalance callback commits).
                group = consumer.consumer_group_metadata()
                self.retry(
                    "send_offsets_to_transaction",
                    lambda: producer.send_offsets_to_transaction(
                        consumed, group, TXN_CALL_TIMEOUT_S
                    ),
                    timeouts=False,
                )
            committing = time.perf_counter()
            try:
                self.retry(
                    "commit_transaction",
                    lambda: producer.commit_transaction(TXN_CALL_TIMEOUT_S),
                    timeouts=False,
                )
            except _TimedOut as exc:
                if not self._committed_after_renew(str(exc), consumed):
                    return None
            committed = time.perf_counter()
        except _TimedOut as exc:  # before the commit: the new producer aborts it
            self.renew(str(exc))
            return None
        return CommitTimes(committing - sending, committed - committing)

    def _committed_after_renew(self, why: str, offsets: list[TopicPartition]) -> bool:
        """After commit_transaction timed out: renew the producer (which ends the
        transaction one way or the other), then read the group's committed offsets,
        part of the same transaction, to learn which way."""
        self.renew(why)
        if not offsets:
            raise ProcessorFatal(
                f"{why}; a transaction without consumed offsets (garbage collection) "
                "cannot be checked for its outcome: exiting, a restart restores the state"
            )
        try:
            found = self.consumer.committed(offsets, timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            raise ProcessorFatal(
                f"{why}; the committed offsets could not be read ({exc}): exiting, "
                "a restart restores the state"
            ) from None
        wanted = {tp.partition: tp.offset for tp in offsets}
        same = [tp.offset == wanted[tp.partition] for tp in found]
        if all(same):
            log.warning("the timed-out transaction committed", extra={"reason": why})
            return True
        if not any(same):
            return False
        raise ProcessorFatal(
            f"{why}; the committed offsets match the transaction's on some partitions "
            "only: exiting, a restart restores the state"
        )

    def abort(self, why: str) -> None:
        producer = self.producer
        try:
            self.retry(
                "abort_transaction",
                lambda: producer.abort_transaction(TXN_CALL_TIMEOUT_S),
                timeouts=False,
            )
        except _TimedOut as exc:
            self.renew(str(exc))  # the new producer's init aborts it
        except AbortNeeded as exc:
            raise ProcessorFatal(f"abort_transaction failed: {exc}") from None

    def claim(self, partitions: list[int]) -> dict[int, int] | None:
        """Commit the restored partitions' offsets as they are, in a transaction of their
        own, so that they name this instance as their owner before any transaction of
        ours holds them open: should it die with one open, the heir knows whom to fence
        (fencing.py). Needed for that heir to be quick, not correct: a failure is logged.
        Returns the committed offsets it read (for `resume`), None if it could not."""
        try:
            offsets = self._committed(partitions, KAFKA_TIMEOUT_S)
        except KafkaException as exc:
            log.warning(
                "partitions not claimed", extra={"partitions": partitions, "error": str(exc)}
            )
            return None
        if not offsets:  # never committed: nothing to name an owner with
            return offsets
        try:
            self.begin()
            if self.commit(offsets) is None:  # renewed: its init ended the claim
                log.warning("partitions not claimed", extra={"partitions": partitions})
        except AbortNeeded as exc:
            self.abort(str(exc))
            log.warning(
                "partitions not claimed", extra={"partitions": partitions, "error": str(exc)}
            )
        except KafkaException as exc:
            log.warning(
                "partitions not claimed", extra={"partitions": partitions, "error": str(exc)}
            )
        return offsets

    def resume(self, partitions: list[int], offsets: Mapping[int, int] | None = None) -> None:
        """Resume restored partitions and start fetching them now. After a plain
        `resume` librdkafka's fetcher takes them up only at its next wake-up (0.7-0.8 s
        measured, every takeover); a seek to their committed offsets (`offsets`, as
        `claim` read them, or looked up), where they start anyway (nothing of them was
        consumed while paused), starts it at once."""
        topic = self._commands_topic
        self.consumer.resume([TopicPartition(topic, p) for p in partitions])
        try:
            if offsets is None:
                offsets = self._committed(partitions, RESUME_LOOKUP_S)
            for partition, offset in offsets.items():
                self.consumer.seek(TopicPartition(topic, partition, offset))
        except KafkaException as exc:  # fetched at the fetcher's next wake-up instead
            log.info("resumed partitions not sought", extra={"error": str(exc)})

    def refetch(self, partitions: list[int]) -> None:
        """Fetch the partitions kept through a rebalance at once: librdkafka pauses their
        fetchers during the callbacks, and a resumed one waits for its next wake-up (see
        `resume`); a seek to where they are starts it now."""
        wanted = [TopicPartition(self._commands_topic, p) for p in sorted(partitions)]
        try:
            for tp in self.consumer.position(wanted) if wanted else []:
                if tp.error is None and tp.offset >= 0:  # else nothing consumed yet
                    self.consumer.seek(tp)
        except KafkaException as exc:  # fetched at the fetcher's next wake-up instead
            log.info("kept partitions not sought", extra={"error": str(exc)})

    def _committed(self, partitions: list[int], timeout: float) -> dict[int, int]:
        """The group's committed offsets of `partitions`, those that have one."""
        wanted = [TopicPartition(self._commands_topic, p) for p in partitions]
        found = self.consumer.committed(wanted, timeout=timeout)
        return {tp.partition: tp.offset for tp in found if tp.error is None and tp.offset >= 0}

    def rewind(self, offsets: Mapping[int, int]) -> None:
        assignment = {tp.partition for tp in self.consumer.assignment()}
        for partition, offset in offsets.items():
            if partition in assignment:
                self.consumer.seek(TopicPartition(self._commands_topic, partition, offset))

    def positions(self, partitions: Iterable[int]) -> dict[int, int]:
        wanted = [TopicPartition(self._commands_topic, p) for p in sorted(partitions)]
        return {
            tp.partition: tp.offset
            for tp in self.consumer.position(wanted)
            if tp.error is None and tp.offset >= 0  # nothing consumed yet: unknown
        }

    # --- calls and errors ----------------------------------------------------------

    def retry(self, what: str, call: Callable[[], T], timeouts: bool = True) -> T:
        """Run a transactional call; retriable errors are retried, the rest triaged.
        With `timeouts` False a timeout raises `_TimedOut` instead of a retry."""
        faults = self._faults
        if faults is not None:
            faults.pause(what)
            call = functools.partial(faults.call, what, call)
        delay = 0.1
        self._watch.call = Call(what, time.monotonic())
        try:
            while True:
                try:
                    if timeouts:
                        return call()
                    return self._worker.run(call, TXN_CALL_TIMEOUT_S + CALL_GRACE_S)
                except CallTimedOut as exc:  # blocked past its own timeout (issue 5456)
                    raise _TimedOut(f"{what}: {exc}") from None
                except KafkaException as exc:
                    error = kafka_error(exc)
                    if not timeouts and error is not None and error.code() in TIMEOUT_CODES:
                        raise _TimedOut(f"{what}: {error}") from None
                    self.triage(what, exc)
                    time.sleep(delay)
                    delay = min(delay * 2, 2.0)
        finally:
            self._watch.call = None

    def triage(self, what: str, exc: KafkaException) -> None:
        """Return = retry; raise `AbortNeeded` or `ProcessorFatal` otherwise."""
        error = kafka_error(exc)
        verdict = Triage.FATAL if error is None else triage(error)
        if verdict is Triage.RETRY:
            log.warning(
                "retriable Kafka error, retrying", extra={"call": what, "error": str(error)}
            )
            return
        if verdict is Triage.ABORT:
            raise AbortNeeded(f"{what}: {error}")
        if not self._fatal_cause:
            try:
                self.producer.poll(0)  # serves error_cb, which records the fatal cause
            except KafkaException as fatal:
                self._fatal_cause = str(fatal.args[0])
        message = fatal_message(what, exc, error, self._fatal_cause)
        if error is not None and error.code() in CONFIG_ERRORS:
            raise ProcessorConfigError(message)
        raise ProcessorFatal(message)


def _discard(producer: Producer) -> None:
    """Drop what an abandoned producer still holds; it is destroyed when this returns."""
    with contextlib.suppress(KafkaException, RuntimeError):
        producer.purge(in_queue=True, in_flight=True)
