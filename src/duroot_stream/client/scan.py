"""Reading partitions to their end (or following them), as every reader call does:
the consumer settings, the batches, and which consumer errors end a read."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.kafka import Triage, new_reader, triage

from .errors import Unavailable

log = logging.getLogger(__name__)

BATCH = 1000  # records per consume() call
# consume() returns when it has BATCH records or after this long; it is how long
# the end of a partition costs, and how long a following reader may lag.
BATCH_WAIT_S = 0.02
FOLLOW_WAIT_S = 0.2
END_FETCH_WAIT_MS = 5
FOLLOW_FETCH_WAIT_MS = 100
BEGINNING = -2  # librdkafka's OFFSET_BEGINNING

# Consumer errors that say the topic or partition is gone: waiting will not help.
_GONE_CODES = frozenset(
    {
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError._UNKNOWN_TOPIC,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def new_scanner(config: KafkaConfig, follow: bool = False) -> Consumer:
    """A consumer for `scan`: assigned partitions, read_committed, no group."""
    return new_reader(
        config,
        **{
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            # How long the broker holds a fetch at the end of a partition. The end
            # is known only from an empty fetch, so this is what reaching it costs
            # (librdkafka's default is 500 ms); when following, it is the polling.
            "fetch.wait.max.ms": FOLLOW_FETCH_WAIT_MS if follow else END_FETCH_WAIT_MS,
            # Read a partition as fast as librdkafka can: no back-off when its
            # queue is full, and large fetches.
            "fetch.queue.backoff.ms": 0,
            "max.partition.fetch.bytes": 10 * 1024 * 1024,
        },
    )


def scan(
    consumer: Consumer,
    topic: str,
    starts: dict[int, int],
    *,
    follow: bool = False,
    stop: threading.Event | None = None,
) -> Iterator[tuple[list[Message], bool]]:
    """Batches of records of `topic` from the partitions and offsets in `starts`,
    each partition in offset order, each with "every partition is at its end now".

    Without `follow` it ends there; with it, it yields (possibly empty) batches
    until `stop` is set or the caller stops iterating. The end is the last stable
    offset (read_committed), reported by librdkafka's partition-EOF events.
    """
    consumer.assign([TopicPartition(topic, p, offset) for p, offset in starts.items()])
    at_end: set[int] = set()
    wait = FOLLOW_WAIT_S if follow else BATCH_WAIT_S
    while stop is None or not stop.is_set():
        records = []
        for msg in consumer.consume(BATCH, wait):
            err = msg.error()
            if err is None:
                records.append(msg)
                at_end.discard(msg.partition() or 0)
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition() or 0)
            else:
                check(err, topic)
        everywhere = len(at_end) == len(starts)
        yield records, everywhere
        if everywhere and not follow:
            return


def check(err: KafkaError, topic: str) -> None:
    """Raise `Unavailable` for a consumer error that will not go away by itself.

    The triage says whether the same call again may help. A consumer's error
    events are mostly reports of what librdkafka is recovering from itself (all
    brokers down, a leader moving): of those it calls fatal, only a fatal
    client or a topic or partition that is gone ends the read."""
    if triage(err) is Triage.FATAL and (err.fatal() or err.code() in _GONE_CODES):
        raise Unavailable(f"reading {topic}: {err.str()}")
    log.debug("reading %s: %s", topic, err.str())
