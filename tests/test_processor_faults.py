"""Processor faults found in review, each with the behaviour that fixes it (real broker)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootCompleted, Init
from duroot_stream.kafka import header_bytes
from duroot_stream.processor import ProcessorFatal
from duroot_stream.wire import Codec, Topics, partition_for

from .kafka_helpers import read_all, wait_until
from .processor_harness import (
    PARTITIONS,
    Requester,
    command,
    new_workflow_id,
    running_processor,
    setup_topics,
    workflow_events,
)

pytestmark = pytest.mark.broker

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")


@pytest.fixture
def requester(kafka: KafkaConfig) -> Iterator[Requester]:
    setup_topics(kafka)
    r = Requester(kafka)
    yield r
    r.close()


def test_aborted_garbage_collection_is_redone_in_the_next_batch_and_counted_once(
    kafka: KafkaConfig, requester: Requester
) -> None:
    interval = 8.0
    commits: list[float] = []  # when each transaction came to its commit
    armed = threading.Event()

    def abort_armed() -> bool:
        commits.append(time.monotonic())
        if armed.is_set():
            armed.clear()
            return True
        return False

    wf = new_workflow_id()
    with running_processor(
        kafka, gc_interval_s=interval, max_active_s=0.001, abort_before_commit=abort_armed
    ) as proc:
        assert requester.request(command(wf, INIT)).ok
        before = len(commits)
        armed.set()  # nothing else is sent: the next transaction is the GC pass's
        wait_until(
            lambda: len(commits) >= before + 2,
            timeout=3 * interval,
            what="the GC transaction, aborted, and its redo",
        )
        wait_until(lambda: proc.workflow_count() == 1 and not armed.is_set(), what="the abort")
        expired = wait_until(
            lambda: [
                e.payload
                for _, e in workflow_events(kafka, wf)
                if isinstance(e.payload, DuRootCompleted)
            ],
            what="the expiry event",
        )
        gc_counted = proc.metrics.gc_commands.labels("AbortExpired")._value.get()
    aborted_at, redone_at = commits[before], commits[before + 1]
    assert redone_at - aborted_at < interval / 2, "the redo waited for the next GC pass"
    assert expired == [DuRootCompleted(104, "expired")]
    assert gc_counted == 1, "the aborted GC command was counted too"


def test_unparsable_reply_partition_is_logged_counted_and_the_correlation_id_echoed(
    kafka: KafkaConfig, requester: Requester, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="duroot.processor")
    topics = Topics(kafka.topic_prefix)
    wf = new_workflow_id()
    cmd = command(wf, INIT)
    with running_processor(kafka) as proc:
        requester.producer.produce(
            topics.commands,
            Codec().encode_command(cmd),
            wf.encode(),
            partition=partition_for(wf, PARTITIONS),
            headers=[
                ("reply-topic", topics.replies.encode()),
                ("reply-partition", b"zero"),
                ("correlation-id", b"corr-bad-partition"),
            ],
        )
        requester.producer.flush(10)

        def echoed() -> list[Message]:
            return [
                m
                for m in read_all(kafka.bootstrap_servers, topics.replies)
                if header_bytes(m, "correlation-id") == b"corr-bad-partition"
            ]

        replies = wait_until(echoed, what="the reply with the correlation id")
        counted = proc.metrics.reply_header_errors.labels("reply-partition")._value.get()
    assert len(replies) == 1
    reply = Codec().decode_reply(replies[0].value() or b"")
    assert reply.ok and reply.command_id == cmd.command_id
    assert replies[0].partition() == partition_for("corr-bad-partition", PARTITIONS)
    assert counted == 1
    warnings = [r for r in caplog.records if getattr(r, "header", None) == "reply-partition"]
    assert len(warnings) == 1 and "b'zero'" in str(getattr(warnings[0], "value", ""))


def _grow_commands_topic(kafka: KafkaConfig, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    name = Topics(kafka.topic_prefix).commands
    for future in admin.create_partitions([NewPartitions(name, partitions)]).values():
        future.result(30)


def test_added_partitions_stop_the_processor_instead_of_dead_lettering(
    kafka: KafkaConfig, requester: Requester
) -> None:
    grown = PARTITIONS + 1  # doubling would keep every old workflow where it was
    # A new workflow that a client knowing the new count routes to an old partition,
    # which is not where the processor's old count puts it.
    wf = next(
        w
        for w in (new_workflow_id() for _ in range(1000))
        if partition_for(w, grown) < PARTITIONS
        and partition_for(w, grown) != partition_for(w, PARTITIONS)
    )
    with (
        pytest.raises(ProcessorFatal, match="partition count must never change"),
        running_processor(kafka) as proc,
    ):
        _grow_commands_topic(kafka, grown)
        requester.send(command(wf, INIT), partition=partition_for(wf, grown))
        wait_until(lambda: proc.failed, timeout=60, what="the processor to stop")
    assert read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).dlq) == []


def test_assigned_partition_beyond_the_count_stops_the_processor(
    kafka: KafkaConfig, requester: Requester
) -> None:
    # Metadata refreshed often, so the group sees the new partitions soon.
    fast = KafkaConfig(
        bootstrap_servers=kafka.bootstrap_servers,
        topic_prefix=kafka.topic_prefix,
        overrides={"topic.metadata.refresh.interval.ms": "500"},
    )
    with (
        pytest.raises(ProcessorFatal, match=f"has partition {2 * PARTITIONS - 1}"),
        running_processor(fast) as proc,
    ):
        _grow_commands_topic(kafka, 2 * PARTITIONS)
        wait_until(lambda: proc.failed, timeout=60, what="the processor to stop")
