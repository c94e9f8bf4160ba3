"""The processor's two Kafka clients and why their settings are what they are: the
transactional producer (made again by `Transaction.renew`) and the command consumer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from confluent_kafka import Consumer, KafkaError, Producer

from duroot_stream.kafka import new_consumer, new_producer

from .settings import ProcessorSettings

RETRY_BACKOFF_MS = 5  # the transactional producer's (librdkafka: 100)
# (librdkafka: 1000) The backoff doubles per retry: capped low, a retry comes at most
# 50 ms after the coordinator is free (20 requests/s at most while it is not).
RETRY_BACKOFF_MAX_MS = 50
# Kafka's own hard-bounce transaction tests use 40 s: a broker restart (down, log
# recovery, the coordinator loading its state) must not outlast it, or the
# coordinator aborts transactions under the clients that are about to commit them.
TRANSACTION_TIMEOUT_MS = 40_000
SESSION_TIMEOUT_MS = 6_000


def transactional_producer(
    settings: ProcessorSettings, error_cb: Callable[[KafkaError], None]
) -> Producer:
    return new_producer(
        settings.kafka,
        **{
            # Stable per instance: a restarted instance (or a renewed producer)
            # aborts what its predecessor left open at init_transactions instead
            # of letting it hold back the last stable offset until the timeout.
            "transactional.id": settings.transactional_id,
            "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            "linger.ms": 5,
            # librdkafka retries send_offsets_to_transaction (AddOffsetsToTxn) after
            # CONCURRENT_TRANSACTIONS, which the coordinator answers while it still
            # writes the last transaction's markers: back-to-back transactions meet it
            # on nearly every commit. With the default backoff (100 ms, doubling) each
            # costs 100 ms; the markers take a few ms (Java retries after 20 ms,
            # KAFKA-5477).
            "retry.backoff.ms": RETRY_BACKOFF_MS,
            "retry.backoff.max.ms": RETRY_BACKOFF_MAX_MS,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            # For replies keyed by command id without a reply partition
            # (partition -1): the Java client's murmur2, computed in C.
            "partitioner": "murmur2_random",
            "error_cb": error_cb,
        },
    )


def command_consumer(settings: ProcessorSettings, stats_cb: Callable[[str], None]) -> Consumer:
    # Its client.id is how an heir tells a live owner in the group from a dead one
    # (fencing.py), so a `-X client.id` names the other clients only.
    overrides = {k: v for k, v in settings.kafka.overrides.items() if k != "client.id"}
    return new_consumer(
        replace(settings.kafka, overrides=overrides),
        **{
            "group.id": settings.group_id,
            "client.id": settings.transactional_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
            # A crashed instance's partitions move after this long: the broker's
            # least (group.min.session.timeout.ms). librdkafka heartbeats from its
            # own thread, so a busy Python loop does not miss them.
            "session.timeout.ms": SESSION_TIMEOUT_MS,
            # The others learn of a rebalance (a member left or joined, or its
            # session expired) at their next heartbeat: that wait is part of every
            # handover. Four a second cost the broker next to nothing.
            "heartbeat.interval.ms": 250,
            "statistics.interval.ms": 5_000,
            "stats_cb": stats_cb,
        },
    )
