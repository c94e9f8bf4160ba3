"""Warm standbys: the ring of members gives each instance the partitions of the N
after it; a restore reads on from where a standby's read of the state left off and
restores exactly what a read from the start does; and, with two processors, the one
with a standby takes over the other's partitions from what its standby read (real
broker)."""

from __future__ import annotations

import argparse
import uuid

import pytest
from confluent_kafka import Consumer, TopicPartition

from duroot_stream.cli.processor import _not_negative
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Append, Init, PathUsage
from duroot_stream.kafka import new_reader
from duroot_stream.processor import Processor, restore_partitions
from duroot_stream.processor.restore_read import high_watermarks
from duroot_stream.processor.standby import Warm, followed_partitions
from duroot_stream.processor.state_store import StateRead
from duroot_stream.wire import Codec, Topics, partition_for
from tests.kafka_helpers import wait_until
from tests.processor_harness import (
    PARTITIONS,
    Requester,
    captured_logs,
    command,
    new_workflow_id,
    running_processor,
    vid_of,
)

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
RING = [("a", [0, 1]), ("b", [2, 3]), ("c", [4]), ("d", [5])]


@pytest.mark.parametrize(
    ("own", "count", "followed"),
    [
        ("a", 1, {2, 3}),
        ("b", 1, {4}),
        ("d", 1, {0, 1}),  # the ring wraps
        ("a", 2, {2, 3, 4}),
        ("c", 3, {0, 1, 2, 3, 5}),
        ("c", 9, {0, 1, 2, 3, 5}),  # never more than the others
        ("e", 1, set()),  # not in the group yet
    ],
)
def test_the_ring_gives_each_member_the_partitions_of_the_next_n(
    own: str, count: int, followed: set[int]
) -> None:
    assert followed_partitions(RING, own, count) == followed


def test_a_member_twice_on_the_ring_is_one_and_its_own_partitions_are_not_followed() -> None:
    members = [("a", [0]), ("b", [1]), ("b", [2, 0]), ("c", [3])]
    assert followed_partitions(members, "a", 1) == {1, 2}
    assert followed_partitions(members, "a", 2) == {1, 2, 3}
    assert followed_partitions([("a", [0])], "a", 1) == set(), "alone: nothing to follow"


@pytest.mark.parametrize(("text", "count"), [("0", 0), ("1", 1), ("3", 3)])
def test_standbys_takes_a_count(text: str, count: int) -> None:
    assert _not_negative(text) == count


@pytest.mark.parametrize("text", ["-1", "one", "1.5", ""])
def test_standbys_refuses_anything_else(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        _not_negative(text)


def _workflows(requester: Requester, per_partition: int) -> dict[str, str]:
    """Workflows on every partition, initialized and appended: id -> head vid."""
    heads: dict[str, str] = {}
    counts = dict.fromkeys(range(PARTITIONS), 0)
    while min(counts.values()) < per_partition:
        wf = new_workflow_id()
        partition = partition_for(wf, PARTITIONS)
        if counts[partition] == per_partition:
            continue
        counts[partition] += 1
        vid = vid_of(requester.request(command(wf, INIT)))
        heads[wf] = vid_of(requester.request(command(wf, Append((PathUsage("a", 1),)), vid)))
    return heads


def _read_first(kafka: KafkaConfig, topic: str, partition: int, upto: int) -> StateRead:
    """A read of a state partition's records below `upto`, as a standby would have it."""
    read, codec = StateRead(), Codec()
    consumer: Consumer = new_reader(kafka)
    try:
        consumer.assign([TopicPartition(topic, partition, 0)])
        while read.records < upto:
            for message in consumer.consume(upto - read.records, timeout=1.0):
                assert message.error() is None, message.error()
                read.add(message, codec)
    finally:
        consumer.close()
    return read


@pytest.mark.broker
def test_a_restore_reads_on_from_a_standby_and_restores_what_a_cold_read_does(
    kafka: KafkaConfig, requester: Requester
) -> None:
    topics, codec = Topics(kafka.topic_prefix), Codec()
    with running_processor(kafka):
        _workflows(requester, 3)
    partitions = list(range(PARTITIONS))
    ends = high_watermarks(kafka, topics.state, partitions)
    cold = restore_partitions(kafka, topics.events, partitions, codec, state_topic=topics.state)
    halfway = {p: (high - low) // 2 for p, (low, high) in ends.items()}
    assert all(halfway.values()), "every state partition has records to split"
    warm = {
        p: Warm(_read_first(kafka, topics.state, p, halfway[p]), ends[p][0] + halfway[p])
        for p in partitions[:-1]
    }
    # The last one as read past the partition's end (the topic recreated): not used.
    warm[partitions[-1]] = Warm(StateRead(), ends[partitions[-1]][1] + 5)
    with captured_logs() as logs:
        restored = restore_partitions(
            kafka, topics.events, partitions, codec, state_topic=topics.state, warm=warm
        )
    assert {p: w for p, (w, _) in restored.items()} == {p: w for p, (w, _) in cold.items()}
    used = {r.partition: r.read_ahead for r in logs.records if r.getMessage() == "state used"}  # type: ignore[attr-defined]
    assert used == {**halfway, partitions[-1]: 0}
    assert [r.partition for r in logs.records if r.getMessage() == "standby state not used"] == [  # type: ignore[attr-defined]
        partitions[-1]
    ]


def _sample(processor: Processor, name: str) -> float:
    return processor.metrics.registry.get_sample_value(name) or 0.0


@pytest.mark.broker
def test_an_heir_takes_over_from_what_its_standby_read(
    kafka: KafkaConfig, requester: Requester
) -> None:
    with (
        running_processor(kafka, instance_id="a-heir", standbys=1) as heir,
        captured_logs() as logs,
    ):
        heads = _workflows(requester, 2)
        with running_processor(kafka, instance_id="b-leaver") as leaver:
            wait_until(
                lambda: (
                    leaver.owned_partitions()
                    and len(leaver.owned_partitions()) + len(heir.owned_partitions()) == PARTITIONS
                ),
                timeout=60,
                what="the partitions shared by the two",
            )
            moved = leaver.owned_partitions()
            held = [wf for wf in heads if partition_for(wf, PARTITIONS) in moved]
            wait_until(
                lambda: (
                    _sample(heir, "duroot_processor_standby_partitions") == len(moved)
                    and _sample(heir, "duroot_processor_standby_states") >= len(held)
                ),
                timeout=60,
                what="the heir's standby following the leaver's partitions to their states",
            )
            for wf in held:  # written while followed: read live, or in the takeover's tail
                reply = requester.request(command(wf, Append((PathUsage("b", 2),)), heads[wf]))
                heads[wf] = vid_of(reply)
            logs.records.clear()  # what follows the leaver's stop
        wait_until(
            lambda: heir.owned_partitions() == set(range(PARTITIONS)),
            timeout=60,
            what="the heir owning every partition",
        )
        assert _sample(heir, "duroot_processor_standby_takeovers_total") == len(moved)
        used = {r.partition: r.read_ahead for r in logs.records if r.getMessage() == "state used"}  # type: ignore[attr-defined]
        assert set(used) == moved
        assert all(ahead > 0 for ahead in used.values()), used
        for wf in held:  # the heir knows each moved workflow's latest head
            assert requester.request(command(wf, Append((PathUsage("c", 3),)), heads[wf])).ok
