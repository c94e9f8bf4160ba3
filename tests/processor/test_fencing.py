"""Who an heir may fence (fencing.py): only an owner named by our own offset
metadata, not this instance, and not still in the group; and that the metadata names
the owner, from the moment it has restored its partitions."""

from __future__ import annotations

import argparse
import uuid

import pytest
from confluent_kafka import KafkaException, Producer, TopicPartition

from duroot_stream.cli.processor import _seconds_or_off
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Init
from duroot_stream.kafka import new_consumer
from duroot_stream.processor.fencing import Owner, dead_owners, owner_metadata, parse_owner
from duroot_stream.processor.settings import KAFKA_TIMEOUT_S
from duroot_stream.wire import Topics
from tests.kafka_helpers import wait_until
from tests.processor.test_zombie import workflow_per_partition
from tests.processor_harness import PARTITIONS, Requester, command, running_processor

OWN = "duroot-processor-heir"


def test_owner_metadata_round_trips() -> None:
    metadata = owner_metadata("duroot-processor-host-a", "rdkafka-1234")
    assert parse_owner(metadata) == Owner("duroot-processor-host-a", "rdkafka-1234")


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        "",
        "mark-of-another-tool",
        "duroot-owner ",
        "duroot-owner only-one",
        "duroot-owner a b c",
    ],
)
def test_metadata_not_ours_names_nobody(metadata: str | None) -> None:
    assert parse_owner(metadata) is None


def test_a_dead_owner_is_fenced_once_for_all_its_partitions() -> None:
    dead = Owner("duroot-processor-a", "member-a")
    found = dead_owners({0: dead, 3: dead, 4: None}, OWN, {"member-h"}, {OWN})
    assert found == {"duroot-processor-a": [0, 3]}


def test_an_owner_still_in_the_group_is_never_fenced() -> None:
    by_member = Owner("duroot-processor-b", "member-b")
    by_client = Owner("duroot-processor-c", "member-c-before-its-restart")
    found = dead_owners(
        {1: by_member, 2: by_client}, OWN, {"member-b", "member-c2"}, {"duroot-processor-c"}
    )
    assert found == {}


def test_this_instance_never_fences_itself() -> None:
    assert dead_owners({5: Owner(OWN, "member-gone")}, OWN, set(), set()) == {}


@pytest.mark.parametrize(("text", "seconds"), [("off", None), ("0.5", 0.5), ("2", 2.0)])
def test_fence_after_takes_seconds_or_off(text: str, seconds: float | None) -> None:
    assert _seconds_or_off(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-1", ""])
def test_fence_after_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _seconds_or_off(text)


@pytest.mark.broker
def test_a_new_owner_claims_its_partitions_before_it_handles_a_command(
    kafka: KafkaConfig, requester: Requester
) -> None:
    """The committed offsets name their owner (fencing.py): those of the last
    instance that committed, and, once another takes the partitions over, that one,
    before any command of its own is open in a transaction."""
    workflows = workflow_per_partition(PARTITIONS)
    with running_processor(kafka, instance_id="first") as first:
        for wf in workflows:
            assert requester.request(command(wf, Init(str(uuid.uuid4()), "/g/" + wf, "h", "/r"))).ok
        assert owners(kafka) == {p: first.settings.transactional_id for p in range(PARTITIONS)}
    with running_processor(kafka, instance_id="second") as second:
        # Ready: every partition restored, and claimed; no command sent since.
        assert owners(kafka) == {p: second.settings.transactional_id for p in range(PARTITIONS)}


def owners(kafka: KafkaConfig) -> dict[int, str]:
    """The transactional ids named by the group's committed offsets, per partition."""
    consumer = new_consumer(
        kafka,
        **{"group.id": "duroot-processor", "isolation.level": "read_uncommitted"},
    )
    try:
        wanted = [TopicPartition(Topics(kafka.topic_prefix).commands, p) for p in range(PARTITIONS)]
        found = consumer.committed(wanted, timeout=30)
    finally:
        consumer.close()
    named = {tp.partition: parse_owner(tp.metadata) for tp in found}
    return {p: owner.transactional_id for p, owner in named.items() if owner is not None}


@pytest.mark.broker
def test_a_dead_owners_transaction_without_offsets_yet_is_fenced_too(
    kafka: KafkaConfig, requester: Requester
) -> None:
    """An instance that dies after producing into a transaction, before it sent its
    offsets, leaves them stable: only the events partition's last stable offset is
    held back. The restore that waits there fences the owner the offsets name, and
    so is ready long before that transaction's timeout."""
    for wf in workflow_per_partition(PARTITIONS):
        with running_processor(kafka, instance_id="first"):
            assert requester.request(command(wf, Init(str(uuid.uuid4()), "/g/" + wf, "h", "/r"))).ok
    dead = Producer(
        kafka.client(
            **{"transactional.id": "duroot-processor-first", "transaction.timeout.ms": 600_000}
        )
    )
    dead.init_transactions(30)
    dead.begin_transaction()
    dead.produce(Topics(kafka.topic_prefix).events, b"an event of the open batch", b"k", 0)
    dead.flush(30)
    # Ready (every partition restored) within running_processor's 60 s, where waiting
    # for the broker would take the dead transaction's 600 s.
    with running_processor(kafka, instance_id="second") as second:
        wait_until(  # the fencing producer may finish after the abort it began
            lambda: second.metrics.previous_owners_fenced._value.get() >= 1,
            timeout=KAFKA_TIMEOUT_S,
            what="the fencing of the dead owner to finish",
        )
    with pytest.raises(KafkaException, match="fenced"):
        dead.commit_transaction(30)
