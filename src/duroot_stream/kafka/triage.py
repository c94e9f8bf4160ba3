"""The one triage of Kafka errors, used by every component that talks to Kafka
(confluent-kafka's documented three ways: retriable, abortable, fatal)."""

from __future__ import annotations

from enum import Enum

from confluent_kafka import KafkaError, KafkaException


class Triage(Enum):
    RETRY = "retry"  # the same call again, after a short wait
    ABORT = "abort"  # abort the transaction, rewind, redo the batch
    FATAL = "fatal"  # the client is unusable: stop


# Not flagged retriable by librdkafka, yet they go away by themselves: a new
# topic's partitions have no leader for a moment, and a leader moves.
TRANSIENT_CODES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError.REQUEST_TIMED_OUT,
    }
)


def kafka_error(exc: BaseException) -> KafkaError | None:
    """The `KafkaError` a `KafkaException` carries, if any."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0]
    return None


def triage(error: KafkaError) -> Triage:
    if error.fatal():
        return Triage.FATAL
    if error.txn_requires_abort():
        return Triage.ABORT
    if error.retriable() or error.code() in TRANSIENT_CODES:
        return Triage.RETRY
    return Triage.FATAL


def polled(error: KafkaError) -> Triage:
    """What an error returned by `poll()`/`consume()` means (not one a call raised).

    librdkafka recovers by itself from polled errors (all brokers down, a topic not
    there yet: `triage` would call those FATAL), except when the client has failed
    for good, reported as _FATAL (e.g. a static member fenced by another with the
    same group.instance.id)."""
    if error.fatal() or error.code() in (KafkaError._FATAL, KafkaError.FENCED_INSTANCE_ID):
        return Triage.FATAL
    return Triage.RETRY
