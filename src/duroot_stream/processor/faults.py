"""The processor's errors, what it refuses and how it says it: settings that would
break exactly-once, Kafka errors that are one record's and not the client's, errors
about the configuration that retrying never fixes, and what a fatal error means."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaError, KafkaException

from duroot_stream.config import ConfigError
from duroot_stream.kafka import kafka_error

log = logging.getLogger("duroot.processor")

# librdkafka settings the processor's guarantees rest on, and why: a `-X` override
# of any of them is refused (the README lists them).
PROTECTED_SETTINGS: Mapping[str, str] = {
    "transactional.id": "it is <group>-<instance id>, so a restarted instance fences its "
    "predecessor (use --group and --instance-id)",
    "group.id": "use --group",
    "enable.idempotence": "transactions need the idempotent producer",
    "acks": "transactions need acks=all",
    "isolation.level": "commands and the restore must be read read_committed",
    "enable.auto.commit": "offsets are committed only through the transaction",
    "enable.auto.offset.store": "offsets are committed only through the transaction",
    "auto.offset.reset": "a new group must start at the first command (earliest)",
    "partitioner": "replies keyed by command id are placed by murmur2, as every client does",
    "enable.gapless.guarantee": "the processor sets what exactly-once needs",
}

# Per-record errors of `produce()`: that record cannot be produced; the client is fine.
RECORD_ERRORS = frozenset(
    {
        KafkaError._INVALID_ARG,
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError._UNKNOWN_PARTITION,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError.INVALID_RECORD,
    }
)

# Errors the broker reports about the configuration: retrying never fixes them.
CONFIG_ERRORS = frozenset(
    {
        KafkaError.INVALID_SESSION_TIMEOUT,
        KafkaError.INVALID_GROUP_ID,
        KafkaError.INCONSISTENT_GROUP_PROTOCOL,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        KafkaError.INVALID_TRANSACTION_TIMEOUT,
        KafkaError.SASL_AUTHENTICATION_FAILED,
        KafkaError._AUTHENTICATION,
        KafkaError.GROUP_MAX_SIZE_REACHED,
        KafkaError.INVALID_CONFIG,
    }
)

FENCED_ERRORS = frozenset(
    {
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.FENCED_INSTANCE_ID,
    }
)


class ProcessorFatal(RuntimeError):
    """The processor cannot go on (fenced by a newer instance, fatal Kafka error)."""


class ProcessorConfigError(ProcessorFatal):
    """The broker refuses the processor's configuration: fix it, then start again."""


class AbortNeeded(Exception):
    """The open transaction cannot commit (Kafka says abort, or a command failed
    part-way): abort it, undo its changes, consume its commands again."""


class RecordRefused(Exception):
    """`produce()` refused one record (too large, no such partition, ...)."""


def check_overrides(overrides: Mapping[str, str]) -> None:
    """Refuse `-X` settings that would break exactly-once, naming them."""
    refused = [f"{name} ({why})" for name, why in PROTECTED_SETTINGS.items() if name in overrides]
    if refused:
        raise ConfigError(
            "the processor refuses -X " + "; ".join(refused) + ": its exactly-once processing "
            "rests on these settings"
        )


def record_refused(exc: BaseException) -> RecordRefused | None:
    """The `RecordRefused` for a per-record produce error, else None."""
    if isinstance(exc, (ValueError, TypeError)):  # e.g. a topic name with a NUL byte
        return RecordRefused(str(exc))
    error = kafka_error(exc)
    if error is not None and error.code() in RECORD_ERRORS and not error.fatal():
        return RecordRefused(str(error))
    return None


def transaction_failed(exc: BaseException) -> str | None:
    """Why `produce()` refused a record because the open transaction already failed,
    else None. librdkafka reports an abortable error in the background (e.g.
    OUT_OF_ORDER_SEQUENCE after records of an aborted batch were purged in flight)
    and `produce()` then raises _STATE until the transaction is aborted: abort and
    redo, as for any abortable error. Were the producer fatally failed, the abort
    fails fatally."""
    error = kafka_error(exc)
    if error is not None and error.code() == KafkaError._STATE and not error.fatal():
        return f"the transaction failed before this record: {error}"
    return None


def on_consumer_error(error: KafkaError) -> None:
    """A consumer error in place of a record: raise for one that will not go away
    (`ProcessorFatal`, or `ProcessorConfigError` for a setting Kafka refuses), log
    the rest."""
    if error.fatal():
        raise ProcessorFatal(f"consumer error: {error}")
    if error.code() in CONFIG_ERRORS:
        raise ProcessorConfigError(
            f"Kafka refuses this processor's configuration: {error.str()}; fix the setting "
            "(e.g. -X session.timeout.ms within the broker's group.min/max.session.timeout.ms, "
            "or the ACLs of the group and topics) and start again"
        )
    log.warning("consumer error", extra={"error": str(error)})


def fatal_message(what: str, exc: KafkaException, error: KafkaError | None, cause: str) -> str:
    """What a fatal transactional error means, as far as its code tells."""
    shown = str(exc) if error is None else str(error)
    cause = f" (cause: {cause})" if cause and cause != shown else ""
    codes = {error.code()} if error is not None else set()
    if codes & FENCED_ERRORS or "fenced" in cause.lower():
        meaning = (
            "its transactional id (--group and --instance-id) was fenced: an instance that took "
            "over its partitions ended its transaction (this instance had been out of the group, "
            "paused or cut off, longer than session.timeout.ms or max.poll.interval.ms), or "
            "another instance runs with the same --instance-id. A restart rejoins the group"
        )
    elif codes & CONFIG_ERRORS:
        meaning = "Kafka refuses this processor's configuration"
    else:
        meaning = "Kafka reported an error this client cannot recover from"
    return f"{what} failed: {shown}{cause}; this instance stops: {meaning}"


def count_changed(topic: str, started: int, now: str) -> str:
    """Why the processor stops when the commands topic's partition count changed."""
    return (
        f"partitions were added to {topic}: it had {started} when this instance started and "
        f"{now}. Workflows are routed by murmur2(workflow id) % partitions, so the partition "
        "count must never change (every workflow would move to another partition and its "
        "history stay behind); this instance stops instead of dead-lettering the commands "
        "as misrouted"
    )
