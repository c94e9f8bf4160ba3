"""Garbage collection in bounded transactions: thousands of expired workflows, one of
them with 50,000 events, ages of seconds. No transaction holds more than the chunk
bound of GC records, except the one Delete whose own tombstones exceed it, alone;
every workflow is expired and deleted exactly once."""

from __future__ import annotations

import logging
import uuid
from collections import Counter

import pytest
from confluent_kafka import Producer

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    Append,
    Command,
    CommandBody,
    Commit,
    DuRootCompleted,
    IndexDeleted,
    Init,
    PathUsage,
)
from duroot_stream.ids import new_ulid, now_ms
from duroot_stream.processor import Processor
from duroot_stream.wire import Codec, Topics, partition_for
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import PARTITIONS, Requester, header_value, running_processor

pytestmark = pytest.mark.broker

ACTIVE, COMPLETED = 1_500, 1_500  # expired (AbortExpired), then deleted; deleted
BIG_PATHS, PATHS_PER_APPEND = 50_000, 10_000  # the long history, completed
CHUNK = 1_000
REGISTRY = str(uuid.uuid4())
Headers = list[tuple[str, str | bytes | None]]  # as confluent_kafka types them


def test_garbage_collection_of_thousands_in_bounded_chunks_exactly_once(
    kafka: KafkaConfig, requester: Requester, capsys: pytest.CaptureFixture[str]
) -> None:
    active = [str(uuid.uuid4()) for _ in range(ACTIVE)]
    completed = [str(uuid.uuid4()) for _ in range(COMPLETED)]
    big = str(uuid.uuid4())
    commands: list[Command] = [_command(wf, _init(wf)) for wf in [*active, *completed, big]]
    commands += [_command(wf, Commit()) for wf in completed]
    commands += [
        _command(wf, Append(tuple(PathUsage(f"d{n}", n) for n in range(i, i + PATHS_PER_APPEND))))
        for wf in (big,)
        for i in range(0, BIG_PATHS, PATHS_PER_APPEND)
    ]
    commands.append(_command(big, Commit()))
    # Made by an instance without garbage collection, then collected by another.
    with running_processor(kafka, instance_id="maker", gc_interval_s=3600):
        sent = _send(kafka, commands)
        wait_until(lambda: _answered(kafka, sent), timeout=180, interval=1, what="the histories")
    everyone = [*active, *completed, big]
    watch, logger = _Chunks(), logging.getLogger("duroot.processor")
    level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.INFO)  # the chunk's log line is INFO
    try:
        with running_processor(
            kafka,
            instance_id="collector",
            gc_interval_s=1.0,
            max_active_s=1.0,
            delete_after_s=1.0,
            gc_chunk_records=CHUNK,
        ) as proc:
            assert proc.workflow_count() == len(everyone)
            wait_until(
                lambda: proc.workflow_count() == 0, timeout=180, interval=0.5, what="all deleted"
            )
        # Read once the processor has stopped: a state changes as its command is handled,
        # the counts when its transaction commits (the last one as the processor stops).
        gc_commands = {
            kind: proc.metrics.gc_commands.labels(kind)._value.get()
            for kind in ("AbortExpired", "Delete")
        }
        aborted = proc.metrics.transactions.labels("aborted")._value.get()
        observed = _histogram_count(proc)
    finally:
        logger.removeHandler(watch)
        logger.setLevel(level)
    chunks = watch.records

    # On the topics: per workflow one expiry (the active ones), one tombstone per
    # event key, one index DuRootDeleted.
    topics, codec = Topics(kafka.topic_prefix), Codec()
    events = read_all(kafka.bootstrap_servers, topics.events, timeout=120)
    keys: Counter[bytes] = Counter(m.key() or b"" for m in events if m.value() is not None)
    tombstones: Counter[bytes] = Counter(m.key() or b"" for m in events if m.value() is None)
    expired: Counter[str] = Counter()
    for m in events:
        value = m.value()
        if value is not None:
            event = codec.decode_event(value)
            if event.payload == DuRootCompleted(104, "expired"):
                expired[event.workflow_id] += 1
    index = read_all(kafka.bootstrap_servers, topics.index, timeout=120)
    deleted: Counter[str] = Counter(
        (m.key() or b"").decode()
        for m in index
        if m.value() is not None
        and isinstance(codec.decode_index_event(m.value()).payload, IndexDeleted)
    )
    with capsys.disabled():
        print(
            f"\n[gc chunks] {len(everyone):,} workflows, {sum(keys.values()):,} events; "
            f"GC commands {gc_commands}; {len(chunks)} chunks (bound {CHUNK}): "
            f"{sum(chunks):,} records, largest {sorted(chunks)[-3:]}; aborted {aborted}"
        )
    assert aborted == 0
    assert gc_commands == {"AbortExpired": ACTIVE, "Delete": len(everyone)}
    assert expired == Counter(dict.fromkeys(active, 1))
    assert tombstones == Counter(dict.fromkeys(keys, 1)), "a key not tombstoned exactly once"
    assert deleted == Counter(dict.fromkeys(everyone, 1))
    over = [c for c in chunks if c > CHUNK]
    assert len(over) == 1 and over[0] >= BIG_PATHS, f"chunks over the bound: {over}"
    small = [c for c in chunks if c <= CHUNK]
    assert len(small) >= sum(small) // CHUNK > 10, "fewer chunks than the bound allows"
    assert observed == len(chunks), "the histogram and the log disagree"


def _init(wf: str) -> Init:
    return Init(REGISTRY, "/g/" + wf, "h", "/r")


def _command(wf: str, body: CommandBody) -> Command:
    return Command(new_ulid(), wf, NO_VC, now_ms(), body)


def _send(kafka: KafkaConfig, commands: list[Command]) -> list[str]:
    """Publish, each with a reply route; their correlation ids (the command ids)."""
    codec, topics = Codec(), Topics(kafka.topic_prefix)
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "enable.idempotence": True})
    for c in commands:
        headers: Headers = [
            ("reply-topic", topics.replies.encode()),
            ("reply-partition", b"0"),
            ("correlation-id", c.command_id.encode()),
        ]
        producer.produce(
            topics.commands,
            codec.encode_command(c),
            c.workflow_id.encode(),
            partition=partition_for(c.workflow_id, PARTITIONS),
            headers=headers,
        )
        producer.poll(0)
    assert producer.flush(60) == 0
    return [c.command_id for c in commands]


def _answered(kafka: KafkaConfig, sent: list[str]) -> bool:
    replies = read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).replies)
    found = {header_value(m, "correlation-id").decode() for m in replies}
    return found >= set(sent)


class _Chunks(logging.Handler):
    """The records of each GC chunk, from the processor's log line per chunk."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[int] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "garbage collection chunk":
            self.records.append(int(getattr(record, "records", -1)))


def _histogram_count(proc: Processor) -> float:
    samples = [s for metric in proc.metrics.gc_chunk_records.collect() for s in metric.samples]
    return next(s.value for s in samples if s.name.endswith("_count"))
