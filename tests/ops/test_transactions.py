"""Open and hanging transactions, for real: a producer that wrote in a transaction
and was SIGKILLed, its transaction left open for 15 minutes. The processor's
monitor sees the last stable offset stand still; `duroot-stream transactions
find-open` (Kafka's TransactionsCommand from the cached jars) names it and how
to end it; `fence` and `abort` end it; the producer renewal of the processor
aborts its own open transaction the same way."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient

from duroot_stream.cli import main as cli
from duroot_stream.config import KafkaConfig
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.ops import transactions
from duroot_stream.processor import ProcessorSettings
from duroot_stream.processor.batch import Batches
from duroot_stream.processor.hanging import HangingMonitor, StallTracker, list_offsets
from duroot_stream.processor.kafka_transaction import Transaction
from duroot_stream.processor.state_store import StateChangelog
from duroot_stream.processor.watchdog import CallTimedOut, CallWatch, Worker
from duroot_stream.processor.workflows import Workflows
from duroot_stream.wire import Topics
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import setup_topics
from tests.transaction_helpers import leave_open_transaction

pytestmark = pytest.mark.broker


@pytest.fixture
def topics(kafka: KafkaConfig) -> Iterator[Topics]:
    setup_topics(kafka)
    yield Topics(kafka.topic_prefix)


def run_cli(
    capsys: pytest.CaptureFixture[str], kafka: KafkaConfig, *argv: str
) -> tuple[int, str, str]:
    """`duroot-stream transactions ARGV` in-process: exit code, standard output and
    standard error (the root logger is restored by tests/conftest.py)."""
    capsys.readouterr()
    prefix = ["--topic-prefix", kafka.topic_prefix]
    code = cli.main(["transactions", *argv, "-b", kafka.bootstrap_servers, *prefix])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def unstable(kafka: KafkaConfig, topic: str) -> list[tuple[str, int, int, int]]:
    return transactions.unstable_partitions(kafka, [topic])


def test_find_open_names_a_killed_producers_transaction_and_fence_ends_it(
    kafka: KafkaConfig, topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    leave_open_transaction(kafka, topics.events, 1, count=5, txn_id=f"{kafka.topic_prefix}gone")
    assert unstable(kafka, topics.events) == [(topics.events, 1, 0, 5)]

    code, out, _ = run_cli(capsys, kafka, "find-open", "--older-than", "0")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split("\t")[:3] == ["topic", "partition", "last-stable"]
    row = lines[1].split("\t")
    assert row[:4] == [topics.events, "1", "0", "5"] and row[5] == "0"  # starts at offset 0
    assert row[7] == f"{kafka.topic_prefix}gone"
    assert f"fence --transactional-id {kafka.topic_prefix}gone" in out
    # The coordinator knows it: open, not hanging by Kafka's (KIP-664) definition.
    code, out, _ = run_cli(capsys, kafka, "find-hanging", "--max-transaction-timeout", "0")
    assert code == 0 and "no hanging transactions" in out
    assert out.splitlines()[0].split("\t")[:2] == ["Topic", "Partition"]

    gone = f"{kafka.topic_prefix}gone"
    code, out, _ = run_cli(capsys, kafka, "fence", "--transactional-id", gone)
    assert code == 0, out
    wait_until(lambda: not unstable(kafka, topics.events), timeout=60, what="the LSO at the end")
    assert read_all(kafka.bootstrap_servers, topics.events) == []  # aborted, never visible
    code, out, _ = run_cli(capsys, kafka, "find-open", "--older-than", "0")
    assert code == 0 and "no open transactions" in out


def test_abort_ends_the_transaction_at_its_start_offset(
    kafka: KafkaConfig, topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    leave_open_transaction(kafka, topics.index, 2, count=3, txn_id=f"{kafka.topic_prefix}x")
    [found] = transactions.open_transactions(kafka, [topics.index])
    assert (found.partition, found.producer.transaction_start) == (2, 0)

    args = ["abort", "--topic", topics.index, "--partition", "2", "--start-offset", "0"]
    code, out, _ = run_cli(capsys, kafka, *args)
    assert code == 0 and "aborted the transaction" in out
    wait_until(lambda: not unstable(kafka, topics.index), timeout=60, what="the LSO at the end")
    assert read_all(kafka.bootstrap_servers, topics.index) == []


def test_abort_without_its_flags_is_a_usage_error(
    kafka: KafkaConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(capsys, kafka, "abort", "--partition", "1")
    assert code == 2 and out == ""
    assert "give --topic, --start-offset" in err, err


def test_the_monitor_reports_a_last_stable_offset_that_stands_still(
    kafka: KafkaConfig, topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="duroot.processor")
    metrics = ProcessorMetrics()
    monitor = HangingMonitor(
        kafka, topics.events, lambda: [0, 1, 2], metrics, limit_s=1.0, interval_s=0.2
    )
    leave_open_transaction(kafka, topics.events, 0, count=4, txn_id=f"{kafka.topic_prefix}m")
    monitor.start()
    try:
        stall = wait_until(lambda: monitor.hanging.get(0), timeout=60, what="partition 0 hanging")
    finally:
        monitor.stop()
    assert stall is not None and (stall.stable, stall.high) == (0, 4) and stall.seconds > 1.0
    assert set(monitor.hanging) == {0}  # the others are stable
    value = metrics.registry.get_sample_value
    assert value("duroot_processor_unstable_messages", {"partition": "0"}) == 4
    # The gauge is rounded to tenths: a stall of 1.04 s reads 1.0.
    assert (value("duroot_processor_unstable_seconds", {"partition": "0"}) or 0) >= 1.0
    assert value("duroot_processor_unstable_seconds", {"partition": "1"}) == 0
    [record] = [r for r in caplog.records if r.getMessage().startswith("hanging transaction")]
    assert (record.__dict__["partition"], record.__dict__["last_stable_offset"]) == (0, 0)

    transactions.fence(kafka, f"{kafka.topic_prefix}m")
    admin = AdminClient(kafka.client())

    def settled() -> dict[int, tuple[int, int]] | None:
        offsets = list_offsets(admin, topics.events, [0, 1])
        return offsets if offsets[0][0] == offsets[0][1] else None  # the marker counts

    offsets = wait_until(settled, timeout=60, what="the LSO at the end")
    assert offsets is not None
    assert monitor.check(offsets, time.monotonic()) == [] and not monitor.hanging
    assert value("duroot_processor_unstable_seconds", {"partition": "0"}) == 0
    monitor.check({1: (0, 0)}, time.monotonic())  # partition 0 no longer owned
    assert value("duroot_processor_unstable_messages", {"partition": "0"}) is None


def test_a_renewed_producer_aborts_the_open_transaction_of_the_one_it_replaces(
    kafka: KafkaConfig, topics: Topics
) -> None:
    metrics = ProcessorMetrics()
    settings = ProcessorSettings(kafka=kafka, instance_id="renewal")
    txn = Transaction(
        settings,
        topics.commands,
        CallWatch(),
        metrics.on_statistics,
        metrics.producer_renewals.inc,
    )
    changelog = StateChangelog(topics.state, settings.instance_id)
    batches = Batches(txn, Workflows(metrics), metrics, changelog)
    try:
        txn.init()
        batches.begin()
        batches.produce([(topics.replies, 0, b"k", b"dropped", None)])
        txn.producer.flush(30)  # in the log, inside the open transaction
        assert unstable(kafka, topics.replies)
        # What librdkafka reports when every broker went away (a broker restart).
        txn._on_producer_error(KafkaError(KafkaError._ALL_BROKERS_DOWN), txn.renewals)
        assert batches.commit() is False  # renewed instead: the batch is to be redone
        assert txn.renewals == 1 and not batches.open
        assert metrics.registry.get_sample_value("duroot_processor_producer_renewals_total") == 1
        assert (
            metrics.registry.get_sample_value(
                "duroot_processor_transactions_total", {"result": "aborted"}
            )
            == 1
        )
        wait_until(lambda: not unstable(kafka, topics.replies), timeout=60, what="LSO at the end")

        batches.begin()
        batches.produce([(topics.replies, 0, b"k", b"kept", None)])
        assert batches.commit() is True
        values = [m.value() for m in read_all(kafka.bootstrap_servers, topics.replies)]
        assert values == [b"kept"]
    finally:
        txn.close()


def test_stall_tracker_counts_only_a_last_stable_offset_that_stands_still() -> None:
    tracker = StallTracker()
    assert tracker.observe(0, 5, 9, now=100.0).seconds == 0  # first look
    assert tracker.observe(0, 5, 12, now=130.0).seconds == 30  # stands at 5
    assert tracker.observe(0, 6, 12, now=131.0).seconds == 0  # moved: a busy partition
    assert tracker.observe(0, 6, 13, now=140.0).seconds == 9
    assert tracker.observe(0, 13, 13, now=141.0).seconds == 0  # at the end: stable
    assert tracker.observe(0, 13, 14, now=200.0).seconds == 0
    assert tracker.observe(1, 2, 3, now=200.0).seconds == 0
    assert tracker.keep([1]) == [0]


def test_worker_returns_raises_and_gives_up_a_call_that_blocks() -> None:
    worker = Worker("test-calls")
    assert worker.run(lambda: 42, timeout=10) == 42
    with pytest.raises(ZeroDivisionError):
        worker.run(lambda: 1 // 0, timeout=10)
    release = time.monotonic() + 2.0
    with pytest.raises(CallTimedOut):
        worker.run(lambda: time.sleep(max(0.0, release - time.monotonic())), timeout=0.2)
    worker.close()
    fresh = Worker("test-calls-2")  # what `renew` does: the blocked one stays behind
    assert fresh.run(lambda: "next", timeout=10) == "next"
    fresh.close()
