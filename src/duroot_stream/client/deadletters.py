"""Dead letters: list, inspect and replay what the processor could not process.

A dead letter is the original record of the commands topic (key, value,
headers) plus the processor's `dlq-*` headers: reason, error, where it came
from (docs/contract.md, "Dead letters"). Once the cause is fixed (a producer
that routed wrongly, a schema that was missing), `replay` sends selected dead
letters back to the commands topic, key and value as they were, partitioned by
murmur2 of the key as the contract asks.

Loops are guarded by a count: a replayed record carries `dlq-replays: N`; when
it is dead-lettered again the processor keeps that header, and a dead letter
replayed `max_replays` times already is not replayed again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from duroot_stream import kafka
from duroot_stream.config import KafkaConfig
from duroot_stream.wire import (
    DLQ_ERROR,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_REPLAYS,
    DLQ_TOPIC,
    DLQ_TRUNCATED,
    Codec,
    CodecError,
    Topics,
    partition_for,
)

from .errors import Unavailable, kafka_unavailable

DLQ_PREFIX = "dlq-"  # of every header a dead letter adds
DEFAULT_MAX_REPLAYS = 3
READ_BATCH = 500
READ_WAIT_S = 0.5


@dataclass(frozen=True, slots=True)
class DeadLetter:
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]  # all of them, in order

    def header(self, name: str) -> str | None:
        found = None
        for key, value in self.headers:
            if key == name and value is not None:
                found = value.decode("utf-8", "replace")
        return found

    @property
    def reason(self) -> str:
        return self.header(DLQ_REASON) or "unknown"

    @property
    def error(self) -> str:
        return self.header(DLQ_ERROR) or ""

    @property
    def source(self) -> str:
        """`topic/partition/offset` of the original record."""
        parts = (self.header(n) or "?" for n in (DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET))
        return "/".join(parts)

    @property
    def truncated(self) -> bool:
        return self.header(DLQ_TRUNCATED) is not None

    @property
    def replays(self) -> int:
        text = self.header(DLQ_REPLAYS) or "0"
        return int(text) if text.isdigit() else 0

    def original_headers(self) -> list[tuple[str, bytes | None]]:
        """The record's own headers, without the dead-letter ones."""
        return [(k, v) for k, v in self.headers if not k.startswith(DLQ_PREFIX)]


@dataclass(frozen=True, slots=True)
class Selection:
    """Which dead letters: by reason, by age, by offset range (all optional)."""

    reasons: frozenset[str] = frozenset()
    since_ms: int | None = None
    until_ms: int | None = None
    first_offset: int | None = None
    last_offset: int | None = None

    def __contains__(self, letter: object) -> bool:
        if not isinstance(letter, DeadLetter):
            return False
        return (
            (not self.reasons or letter.reason in self.reasons)
            and (self.since_ms is None or letter.timestamp_ms >= self.since_ms)
            and (self.until_ms is None or letter.timestamp_ms <= self.until_ms)
            and (self.first_offset is None or letter.offset >= self.first_offset)
            and (self.last_offset is None or letter.offset <= self.last_offset)
        )


@dataclass(frozen=True, slots=True)
class Replayed:
    letter: DeadLetter
    sent: bool
    why: str  # "replayed", "dry run", or why it was not


def describe_value(codec: Codec, value: bytes | None) -> str:
    """The value decoded as far as it goes: a command, or what its bytes are."""
    if not value:
        return "no value (a tombstone)" if value is None else "an empty value"
    try:
        return f"command: {codec.decode_command(value)!r}"
    except CodecError as exc:
        framing = {0xC3: "Avro single-object", 0x00: "Confluent"}.get(value[0], "unframed")
        head = value[:32].hex(" ")
        return f"undecodable ({exc}); {len(value)} bytes, {framing} framing; starts {head}"


class DeadLetters:
    """Read and replay the dead-letter topic of one deployment."""

    def __init__(self, config: KafkaConfig) -> None:
        self.config = config
        self.topics = Topics(config.topic_prefix)

    def read(self, selection: Selection = Selection()) -> Iterator[DeadLetter]:
        """The selected dead letters, oldest first, up to the end of the topic now."""
        consumer = kafka.new_reader(self.config, **{"enable.partition.eof": True})
        try:
            topic = self.topics.dlq
            try:
                count = kafka.partition_count(consumer, topic)
            except KafkaException as exc:
                raise kafka_unavailable(f"cannot read the metadata of {topic}", exc) from None
            if count is None:
                raise Unavailable(f"topic {topic} does not exist (`duroot-stream topics create`)")
            # The end is fixed now: what is dead-lettered while the caller iterates
            # (a replay that fails again) is not part of this read.
            starts, ends = [], {}
            for p in range(count):
                try:
                    low, high = kafka.watermarks(consumer, topic, p)
                except KafkaException as exc:
                    raise kafka_unavailable(f"cannot read the offsets of {topic}", exc) from None
                if high > low:
                    starts.append(TopicPartition(topic, p, max(low, selection.first_offset or 0)))
                    ends[p] = high
            yield from self._scan(consumer, starts, ends, selection)
        finally:
            consumer.close()

    def _scan(
        self,
        consumer: Consumer,
        starts: list[TopicPartition],
        ends: dict[int, int],
        selection: Selection,
    ) -> Iterator[DeadLetter]:
        if not starts:
            return
        consumer.assign(starts)
        pending = {tp.partition for tp in starts}
        while pending:
            for message in consumer.consume(READ_BATCH, READ_WAIT_S):
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(message.partition() or 0)
                        continue
                    raise Unavailable(f"reading {self.topics.dlq}: {error.str()}")
                letter = _letter(message)
                last = ends[letter.partition] - 1
                if selection.last_offset is not None:
                    last = min(last, selection.last_offset)
                if letter.offset > last:
                    pending.discard(letter.partition)
                    continue
                if letter in selection:
                    yield letter

    def get(self, offset: int, partition: int = 0) -> DeadLetter:
        only = Selection(first_offset=offset, last_offset=offset)
        for letter in self.read(only):
            if letter.partition == partition:
                return letter
        raise LookupError(f"no dead letter at {self.topics.dlq}/{partition}/{offset}")

    def replay(
        self,
        letters: Iterable[DeadLetter],
        *,
        dry_run: bool = False,
        max_replays: int = DEFAULT_MAX_REPLAYS,
        progress: Callable[[Replayed], None] | None = None,
    ) -> list[Replayed]:
        """Send the dead letters back to the commands topic (see the module docstring)."""
        producer = kafka.new_producer(self.config, **{"enable.idempotence": True})
        partitions: int | None = None
        done: list[Replayed] = []
        try:
            for letter in letters:
                outcome = self._refusal(letter, max_replays)
                if outcome is None and not dry_run:
                    if partitions is None:
                        partitions = kafka.partition_count(producer, self.topics.commands)
                        if partitions is None:
                            raise Unavailable(f"topic {self.topics.commands} does not exist")
                    headers: list[tuple[str, str | bytes | None]] = [
                        *letter.original_headers(),
                        (DLQ_REPLAYS, b"%d" % (letter.replays + 1)),
                    ]
                    key = letter.key or b""
                    producer.produce(
                        self.topics.commands,
                        value=letter.value,
                        key=letter.key,
                        partition=partition_for(key.decode("utf-8", "replace"), partitions),
                        headers=headers,
                    )
                    producer.poll(0)
                sent = outcome is None and not dry_run
                why = outcome or ("dry run" if dry_run else "replayed")
                result = Replayed(letter, sent, why)
                done.append(result)
                if progress:
                    progress(result)
            if producer.flush(30) != 0:
                raise Unavailable(f"replayed records not acknowledged by {self.topics.commands}")
        finally:
            producer.flush(5)
        return done

    @staticmethod
    def _refusal(letter: DeadLetter, max_replays: int) -> str | None:
        if letter.replays >= max_replays:
            return f"replayed {letter.replays} times already (at most {max_replays})"
        if letter.truncated:
            return f"truncated: the whole record is at {letter.source}, not in the dead letter"
        if letter.value is None:
            return "no value"
        return None


def _letter(message: Message) -> DeadLetter:
    _, timestamp = message.timestamp()
    return DeadLetter(
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        timestamp_ms=timestamp if timestamp > 0 else int(time.time() * 1000),
        key=message.key(),
        value=message.value(),
        headers=tuple(kafka.headers(message)),
    )
