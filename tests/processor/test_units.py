"""Processor parts that need no broker: the restore's offset lookup, which produce
errors mean that the open transaction has already failed (abort and redo), a fatal
error raised at the start of a commit, and that the engine reaches Kafka only through
its port."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

import duroot_stream.processor
from duroot_stream.config import KafkaConfig
from duroot_stream.processor import kafka_clients
from duroot_stream.processor.faults import ProcessorFatal, transaction_failed
from duroot_stream.processor.kafka_transaction import Transaction
from duroot_stream.processor.restore_read import offsets
from duroot_stream.processor.settings import ProcessorSettings
from duroot_stream.processor.watchdog import CallWatch

# The engine: one command, one transaction, garbage collection, and its port.
ENGINE = ("engine", "batch", "collector", "port", "workflows")


class _Partition:
    """Answers watermark requests like a partition whose leader is not elected yet
    (`failures` times), or with `error` for good; records what it was asked."""

    def __init__(self, failures: int, error: int = KafkaError.LEADER_NOT_AVAILABLE) -> None:
        self.failures, self.error = failures, error
        self.asked: list[tuple[str, int]] = []

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        self.asked.append((partition.topic, partition.partition))
        if len(self.asked) <= self.failures:
            raise KafkaException(KafkaError(self.error))
        return 3, 17


def test_restore_offsets_ask_again_while_the_leader_is_not_available() -> None:
    partition = _Partition(failures=2)
    offsets(cast(Consumer, partition), "t.events", 4)
    assert partition.asked == [("t.events", 4)] * 3


def test_restore_offsets_stop_on_an_error_that_does_not_pass() -> None:
    partition = _Partition(failures=5, error=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(ProcessorFatal, match=r"offsets of t\.events \[4\]: .*AUTHORIZATION"):
        offsets(cast(Consumer, partition), "t.events", 4)
    assert partition.asked == [("t.events", 4)], "asked once: asking again does not help"


def test_produce_refused_in_a_failed_transaction_means_abort_and_redo() -> None:
    # What librdkafka raised in a full-size rebalance run after OUT_OF_ORDER_SEQUENCE:
    # before, the processor took it for fatal and exited.
    state = KafkaError(KafkaError._STATE, "Unable to produce message: Local: Erroneous state")
    why = transaction_failed(KafkaException(state))
    assert why is not None and "Erroneous state" in why


def test_other_produce_errors_are_not_taken_for_a_failed_transaction() -> None:
    fatal = KafkaError(KafkaError._STATE, "fenced", fatal=True)
    for exc in (
        KafkaException(fatal),  # a fatally failed producer: stop, do not abort
        KafkaException(KafkaError(KafkaError._QUEUE_FULL)),
        KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)),
        ValueError("topic name with a NUL byte"),
    ):
        assert transaction_failed(exc) is None, exc


@pytest.mark.parametrize("module", ENGINE)
def test_the_engine_imports_no_kafka_client(module: str) -> None:
    path = Path(duroot_stream.processor.__file__).with_name(f"{module}.py")
    imported = {
        name
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        for name in (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else []
        )
    }
    assert not {n for n in imported if n.split(".")[0] == "confluent_kafka"}, imported


class _FencedProducer:
    """A producer whose `poll` raises the fatal error librdkafka reports once fenced."""

    def poll(self, timeout: float = 0) -> int:
        raise KafkaException(
            KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
        )


def test_a_fatal_error_raised_as_a_commit_begins_stops_the_processor_naming_it() -> None:
    # Seen once in a broker test: the fenced error came from the commit's first poll,
    # as a bare KafkaException, instead of from send_offsets_to_transaction.
    settings = ProcessorSettings(kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    txn = Transaction(settings, "t.commands", CallWatch(), lambda _: None, lambda: None)
    real = txn.producer
    txn.producer = cast(Producer, _FencedProducer())
    try:
        with pytest.raises(ProcessorFatal, match="was fenced"):
            txn.commit({0: 5})
    finally:
        txn.producer = real
        txn.close(flush=False)


def test_the_command_consumer_is_named_by_its_transactional_id_whatever_x_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An heir tells a live owner by its consumer's client.id (fencing.py): a `-X
    client.id` must not rename that consumer."""
    made: dict[str, object] = {}

    def consumer(kafka: KafkaConfig, **settings: object) -> None:
        made.update(kafka.client(**settings))

    monkeypatch.setattr(kafka_clients, "new_consumer", consumer)
    settings = ProcessorSettings(KafkaConfig(overrides={"client.id": "mine"}), instance_id="i")
    kafka_clients.command_consumer(settings, lambda _: None)
    assert made["client.id"] == settings.transactional_id == "duroot-processor-i"


class _PositionedConsumer:
    """Where the loop is in each partition (-1001: nothing consumed), and the seeks."""

    def __init__(self, positions: dict[int, int]) -> None:
        self.positions = positions
        self.sought: list[tuple[int, int]] = []

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.positions[tp.partition])
            for tp in partitions
        ]

    def seek(self, tp: TopicPartition) -> None:
        self.sought.append((tp.partition, tp.offset))


def test_partitions_kept_through_a_rebalance_are_sought_to_where_the_loop_is() -> None:
    """librdkafka pauses and resumes their fetchers around the rebalance callbacks; a
    seek to the position starts the fetch again at once, and skips nothing."""
    settings = ProcessorSettings(kafka=KafkaConfig(bootstrap_servers="127.0.0.1:1"))
    txn = Transaction(settings, "t.commands", CallWatch(), lambda _: None, lambda: None)
    real = txn.consumer
    consumer = _PositionedConsumer({0: 17, 2: -1001, 4: 3})
    txn.consumer = cast(Consumer, consumer)
    try:
        txn.refetch([4, 0, 2])
        txn.refetch([])
    finally:
        txn.consumer = real
        txn.close(flush=False)
    assert consumer.sought == [(0, 17), (4, 3)]
