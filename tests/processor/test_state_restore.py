"""The restore from the state topic, through a real broker: a restarted processor reads
its workflows from the state records (no event read, no fallback), and they are the
fold of the events; a state record of an unknown schema, a marker beyond the events'
end, or an event written without its state (as by an older processor) makes that
partition fall back to the events (counted by reason), still right."""

from __future__ import annotations

import uuid

import pytest
from confluent_kafka import Producer

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    Append,
    Commit,
    Delete,
    DuUpdated,
    Init,
    PathUsage,
    WorkflowEvent,
)
from duroot_stream.ids import new_ulid
from duroot_stream.kafka import position
from duroot_stream.processor import Processor, restore_partitions
from duroot_stream.processor.restore_read import high_watermarks
from duroot_stream.wire import (
    MARKER_KEY,
    Codec,
    StateMarker,
    Topics,
    decode_marker,
    encode_marker,
    event_headers,
    partition_for,
)
from tests.kafka_helpers import read_all
from tests.processor_harness import (
    PARTITIONS,
    Requester,
    command,
    new_workflow_id,
    running_processor,
    vid_of,
)

pytestmark = pytest.mark.broker

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
PER_PARTITION = 3


def _histories(requester: Requester) -> None:
    """Workflows on every partition: initialized, appended, some committed; one deleted."""
    by_partition: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    while min(len(w) for w in by_partition.values()) < PER_PARTITION:
        wf = new_workflow_id()
        by_partition[partition_for(wf, PARTITIONS)].append(wf)
    for partition, workflows in by_partition.items():
        for i, wf in enumerate(workflows[:PER_PARTITION]):
            vid = vid_of(requester.request(command(wf, INIT)))
            vid = vid_of(requester.request(command(wf, Append((PathUsage("a", i),)), vid)))
            if i >= 1:
                vid = vid_of(requester.request(command(wf, Commit(), vid)))
            if i == 2 and partition == 0:
                assert requester.request(command(wf, Delete(), vid)).ok


def _markers(kafka: KafkaConfig) -> dict[int, StateMarker]:
    """The last marker of each partition of the state topic."""
    found: dict[int, StateMarker] = {}
    for message in read_all(kafka.bootstrap_servers, Topics(kafka.topic_prefix).state):
        value = message.value()
        if message.key() == MARKER_KEY and value is not None:
            found[position(message)[0]] = decode_marker(value)
    return found


def _restored_events(proc: Processor) -> dict[str, float]:
    registry = proc.metrics.registry
    return {
        str(p): registry.get_sample_value(
            "duroot_processor_restore_events_total", {"partition": str(p)}
        )
        or 0.0
        for p in range(PARTITIONS)
    }


def _fallbacks(proc: Processor, reason: str) -> float:
    value = proc.metrics.registry.get_sample_value(
        "duroot_processor_state_fallbacks_total", {"reason": reason}
    )
    return value or 0.0


def test_a_restart_restores_from_the_state_and_it_is_the_fold_of_the_events(
    kafka: KafkaConfig, requester: Requester
) -> None:
    topics, partitions = Topics(kafka.topic_prefix), list(range(PARTITIONS))
    with running_processor(kafka, instance_id="first") as first:
        assert first.metrics.registry.get_sample_value(
            "duroot_processor_state_fallbacks_total", {"reason": "no_marker"}
        ) == len(partitions), "a fresh deployment has no marker: folded, then snapshotted"
        _histories(requester)
    assert sorted(_markers(kafka)) == partitions, "a marker per partition"
    with running_processor(kafka, instance_id="second") as second:
        assert _restored_events(second) == dict.fromkeys(map(str, partitions), 0.0)
        assert _fallbacks(second, "no_marker") == _fallbacks(second, "undecodable") == 0
        held = second.workflow_count()
    codec = Codec()
    folded = restore_partitions(kafka, topics.events, partitions, codec)
    from_state = restore_partitions(
        kafka, topics.events, partitions, codec, state_topic=topics.state
    )
    assert {p: w for p, (w, _) in from_state.items()} == {p: w for p, (w, _) in folded.items()}
    assert all(events == 0 for _, events in from_state.values())
    assert held == sum(len(w) for w, _ in folded.values()) == PARTITIONS * PER_PARTITION - 1


def test_a_state_record_failing_a_check_falls_back_to_the_events(
    kafka: KafkaConfig, requester: Requester
) -> None:
    topics, partitions = Topics(kafka.topic_prefix), list(range(PARTITIONS))
    with running_processor(kafka, instance_id="first"):
        _histories(requester)
    markers = _markers(kafka)
    assert sorted(markers) == partitions
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    # Partition 0: a state in a schema this processor does not know.
    unknown = b"\xc3\x01" + bytes.fromhex("0123456789abcdef") + b"\x02x"
    wf0 = next(wf for wf in iter(new_workflow_id, None) if partition_for(wf, PARTITIONS) == 0)
    producer.produce(topics.state, unknown, wf0.encode(), partition=0)
    # Partition 1: a marker beyond the events' end (as after the events topic was recreated).
    beyond = StateMarker(10**9, "elsewhere", 0)
    producer.produce(topics.state, encode_marker(beyond), MARKER_KEY, partition=1)
    # Partition 2: an event after the marker without its state.
    codec = Codec()
    before = restore_partitions(kafka, topics.events, [2], codec)[2][0]
    held = next(iter(before.values()))
    late = WorkflowEvent(
        new_ulid(), held.vid, held.workflow_id, held.seq, new_ulid(), DuUpdated("late", 1)
    )
    value = codec.encode_event(late)
    headers: list[tuple[str, str | bytes | None]] = list(event_headers(late))
    producer.produce(topics.events, value, late.key.encode(), 2, headers=headers)
    producer.flush(10)
    folded = restore_partitions(kafka, topics.events, partitions, codec)
    assert folded[2][0][held.workflow_id].vid == late.event_id
    with running_processor(kafka, instance_id="second") as second:
        assert _fallbacks(second, "undecodable") == 1
        assert _fallbacks(second, "beyond_events_end") == 1
        assert _fallbacks(second, "events_without_state") == 1
        assert all(events > 0 for events in _restored_events(second).values())
        assert second.workflow_count() == sum(len(w) for w, _ in folded.values())
        # Folded, so snapshotted again with the next transaction of each partition.
        for partition in partitions:
            wf = next(
                wf
                for wf in iter(new_workflow_id, None)
                if partition_for(wf, PARTITIONS) == partition
            )
            assert requester.request(command(wf, INIT)).ok
    again = _markers(kafka)
    assert {again[p].written_by for p in partitions} == {"second"}
    assert again[1].events_end <= folded_end(kafka, 1)
    from_state = restore_partitions(
        kafka, topics.events, partitions, codec, state_topic=topics.state
    )
    folded = restore_partitions(kafka, topics.events, partitions, codec)
    assert {p: w for p, (w, _) in from_state.items()} == {p: w for p, (w, _) in folded.items()}
    assert all(events == 0 for _, events in from_state.values()), "the state is used again"


def folded_end(kafka: KafkaConfig, partition: int) -> int:
    events = Topics(kafka.topic_prefix).events
    return high_watermarks(kafka, events, [partition])[partition][1]
