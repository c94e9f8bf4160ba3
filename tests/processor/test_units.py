"""Processor parts that need no broker: the restore's offset lookup, and which produce
errors mean that the open transaction has already failed (abort and redo)."""

from __future__ import annotations

from typing import cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from duroot_stream.processor.faults import transaction_failed
from duroot_stream.processor.restore import offsets


class _LeaderComingUp:
    """Answers watermark requests like a partition whose leader is not elected yet, then not."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def get_watermark_offsets(
        self, partition: TopicPartition, timeout: float | None = None, cached: bool = False
    ) -> tuple[int, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE))
        return 3, 17


def test_restore_offsets_retry_while_the_leader_is_not_available() -> None:
    consumer = _LeaderComingUp(failures=2)
    assert offsets(cast(Consumer, consumer), "t.events", 0) == (3, 17)
    assert consumer.calls == 3


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
