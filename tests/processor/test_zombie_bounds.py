"""The restore's waits for open transactions, against a real broker: it reads what a
transaction open at its start commits later, skips what one aborts, and stops with a
clear error (the partition, the offsets, the commands that show and abort it) when
one stays open past the bound."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    AbortExpired,
    Delete,
    StateCode,
    WorkflowState,
    expiry_records,
)
from duroot_stream.processor import ProcessorFatal, ProcessorSettings, restore_partitions
from duroot_stream.processor.restore import await_stable_offsets
from duroot_stream.wire import Codec, Topics
from tests.kafka_helpers import wait_until
from tests.processor_harness import setup_topics
from tests.transaction_helpers import open_transaction, workflow_on

Headers = list[tuple[str, str | bytes | None]]


class _Waits(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == "restore waiting for an open transaction":
            self.seen.append(record.getMessage())


@pytest.mark.broker
@pytest.mark.parametrize("outcome", ["commit", "abort"])
def test_restore_waits_for_a_transaction_open_at_its_start(
    kafka: KafkaConfig, outcome: str
) -> None:
    setup_topics(kafka)
    events = Topics(kafka.topic_prefix).events
    wf = workflow_on(1)
    producer = open_transaction(kafka, events, 1, wf)
    result: list[dict[int, tuple[dict[str, WorkflowState], int]]] = []
    restore = threading.Thread(
        target=lambda: result.append(restore_partitions(kafka, events, [0, 1, 2], Codec()))
    )
    waits = _Waits()
    logging.getLogger("duroot.processor").addHandler(waits)
    try:
        restore.start()
        wait_until(lambda: waits.seen, timeout=60, what="the restore to wait at the LSO")
    finally:
        logging.getLogger("duroot.processor").removeHandler(waits)
    assert restore.is_alive(), "the restore ended with the transaction open"
    if outcome == "commit":
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)
    restore.join(60)
    assert result, "the restore did not end after the transaction did"
    workflows, records = result[0][1]
    assert (wf in workflows) == (outcome == "commit")
    assert records == (1 if outcome == "commit" else 0)


@pytest.mark.broker
def test_restore_stops_naming_a_transaction_that_stays_open(kafka: KafkaConfig) -> None:
    setup_topics(kafka)
    events = Topics(kafka.topic_prefix).events
    producer = open_transaction(kafka, events, 2, workflow_on(2))
    with pytest.raises(ProcessorFatal) as raised:
        restore_partitions(kafka, events, [2], Codec(), wait_s=2.0)
    message = str(raised.value)
    assert f"{events} [2]" in message and "last stable offset stayed at 0" in message
    assert "describe-producers" in message and "--start-offset 0" in message
    producer.abort_transaction(30)


@pytest.mark.broker
def test_unstable_committed_offsets_are_awaited_then_reported(kafka: KafkaConfig) -> None:
    """A transaction that sent offsets for the group holds them unstable: the wait ends
    when it commits, and past the bound it stops naming the partitions."""
    setup_topics(kafka)
    topics = Topics(kafka.topic_prefix)
    group = f"g-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap_servers,
            "group.id": group,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    producer = open_transaction(kafka, topics.events, 0, workflow_on(0))
    producer.send_offsets_to_transaction(
        [TopicPartition(topics.commands, 0, 0)], consumer.consumer_group_metadata(), 30
    )
    try:
        with pytest.raises(ProcessorFatal, match=r"partitions \[0\] stayed unstable"):
            await_stable_offsets(consumer, topics.commands, [0], wait_s=3.0)
        await_stable_offsets(consumer, topics.commands, [1, 2], wait_s=3.0)  # not held
        waiter = threading.Thread(
            target=await_stable_offsets, args=(consumer, topics.commands, [0], 60.0)
        )
        waiter.start()
        producer.commit_transaction(30)
        waiter.join(60)
        assert not waiter.is_alive()
    finally:
        consumer.close()


def test_restore_wait_follows_a_longer_transaction_timeout() -> None:
    base = ProcessorSettings(kafka=KafkaConfig())
    assert base.restore_wait() == 70.0
    longer = ProcessorSettings(kafka=KafkaConfig(overrides={"transaction.timeout.ms": "120000"}))
    assert longer.restore_wait() == 150.0
    assert ProcessorSettings(kafka=KafkaConfig(), restore_wait_s=5.0).restore_wait() == 5.0


def test_expiry_records_count_what_a_gc_command_makes() -> None:
    state = WorkflowState("wf", StateCode.TERMINATED, seq=7)
    assert expiry_records(state, Delete()) == 7 + 2  # tombstones, DuRootDeleted, index tombstone
    assert expiry_records(state, AbortExpired()) == 3  # COMPLETED, COMMITTED, index
