"""The live reader's checks without Kafka: a valid history passes, and each kind of
violation it promises to catch is caught, naming the workflow, offset and fault. With
a broker: a reader that does not catch up says what librdkafka says of the partition."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence

import pytest
from confluent_kafka import Producer

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    WorkflowEvent,
    encode_ulid,
)
from duroot_stream.wire import Codec, Topics, event_headers, partition_for
from tests.kafka_helpers import wait_until
from tests.reliability.live import (
    METADATA_TIMEOUT_S,
    STATISTICS_INTERVAL_S,
    LiveReader,
    WorkflowChecker,
)
from tests.reliability.topic_reads import Record

PARTITIONS = 6
WF = str(uuid.UUID(int=7, version=4))
P = partition_for(WF, PARTITIONS)
CODEC = Codec()
COMMAND = encode_ulid((1 << 100) | 1)


def history(n_updates: int = 2) -> list[WorkflowEvent]:
    payloads: list[EventPayload] = [
        DuRootStarted(str(uuid.UUID(int=42)), "/g", "h", "/srv/x"),
        *(DuUpdated(f"p{i}", i * 1024) for i in range(n_updates)),
        DuRootCompleted(0, ""),
        DuRootCommitted(),
    ]
    events, parent = [], EVENT_EPOCH
    for seq, payload in enumerate(payloads):
        vid = encode_ulid((1 << 120) | (seq + 1))
        events.append(WorkflowEvent(vid, parent, WF, seq, COMMAND, payload))
        parent = vid
    return events


Item = WorkflowEvent | int  # an event, or a tombstone for that seq


def records(items: Sequence[Item], first_offset: int = 0) -> list[Record]:
    out = []
    for i, item in enumerate(items):
        offset = first_offset + 2 * i  # gaps, as transaction markers leave
        if isinstance(item, int):
            out.append(Record(P, offset, f"{WF}/{item}".encode(), None, {}))
        else:
            value = CODEC.encode_event(item)
            out.append(Record(P, offset, item.key.encode(), value, dict(event_headers(item))))
    return out


def check(items: list[Item]) -> WorkflowChecker:
    checker = WorkflowChecker(PARTITIONS)
    for r in records(items):
        checker.add(r.partition, r.offset, r.key or b"", r.value, r.headers)
    return checker


def test_a_valid_history_with_a_deletion_and_a_new_start_passes() -> None:
    first = history(3)
    again = history(1)  # started again after the deletion: seq 0, parent EVENT_EPOCH
    items: list[Item] = [*first, *range(len(first)), *again]
    checker = check(items)
    assert checker.violations == []
    assert (checker.events, checker.tombstones) == (len(first) + len(again), len(first))
    assert checker.check_final({P: records(items)}) == len(items)
    assert checker.violations == []


def swap(events: list[WorkflowEvent], i: int, j: int) -> list[Item]:
    out: list[Item] = list(events)
    out[i], out[j] = out[j], out[i]
    return out


BROKEN: dict[str, tuple[Callable[[list[WorkflowEvent]], list[Item]], str]] = {
    "gap": (lambda h: [h[0], *h[2:]], "seq 2, expected 1 (a gap)"),
    "twice": (lambda h: [h[0], h[1], h[1]], "seq 1, expected 2 (again)"),
    "reordered": (lambda h: swap(h, 1, 2), "seq 2, expected 1"),
    "chain": (lambda h: [h[0], h[1]._replace(parent=h[1].event_id)], "chain broken"),
    "invalid": (lambda h: [h[0], h[-1]], "seq 5, expected 1"),
    "type": (lambda h: [h[0], h[-1]._replace(seq=1, parent=h[0].event_id)], "COMMITTED after"),
    "early tombstone": (lambda h: [h[0], 0], "tombstone for seq 0 while INITIALIZED"),
    "tombstones out of order": (lambda h: [*h, 1], "tombstone for seq 1, expected 0"),
    "event while deleting": (lambda h: [*h, 0, h[0]], "in the middle of a deletion"),
}


@pytest.mark.parametrize("name", list(BROKEN))
def test_violations_are_caught_with_workflow_offset_and_what(name: str) -> None:
    make, what = BROKEN[name]
    checker = check(make(history(3)))
    assert checker.violation_count >= 1
    v = checker.violations[0]  # the first; later records are checked from there on
    assert (v.workflow, v.partition) == (WF, P) and what in v.what, v
    assert f"{WF} at events[{P}]@{v.offset}" in str(v)


def test_a_record_read_live_but_not_there_at_the_end_is_an_aborted_read() -> None:
    items: list[Item] = list(history(2))
    checker = check(items)
    final = records(items)
    aborted = final.pop(2)  # what a read_uncommitted reader could have seen
    checker.check_final({P: final})
    assert [v.offset for v in checker.violations] == [aborted.offset]
    assert "aborted" in checker.violations[0].what


def test_a_record_compacted_away_behind_its_tombstone_is_not_an_aborted_read() -> None:
    events = history(0)
    items: list[Item] = [*events, *range(len(events))]
    checker = check(items)
    final = records(items)
    del final[0]  # the cleaner removed the first event; its tombstone is still there
    checker.check_final({P: final})
    assert checker.violations == [] and checker.compacted == 1


def test_offsets_must_rise_and_records_be_on_their_partition() -> None:
    checker = WorkflowChecker(PARTITIONS)
    r0, r1 = records([*history(0)][:2])
    checker.add(P, 5, r0.key or b"", r0.value, r0.headers)
    checker.add(P, 5, r1.key or b"", r1.value, r1.headers)
    checker.add((P + 1) % PARTITIONS, 9, r1.key or b"", r1.value, r1.headers)
    whats = [v.what for v in checker.violations]
    assert "read out of order" in whats[0] and "not on the workflow's partition" in whats[1]


def test_headers_must_agree_with_the_body() -> None:
    events = history(0)
    r = records([events[0]])[0]
    bad = dict(r.headers, vid=events[1].event_id.encode())
    checker = WorkflowChecker(PARTITIONS)
    checker.add(P, 0, r.key or b"", r.value, bad)
    assert "disagree" in checker.violations[0].what


@pytest.mark.broker
def test_a_reader_that_does_not_catch_up_names_the_partition_and_its_fetch_state(
    reliability_kafka: KafkaConfig,
) -> None:
    events = history(1)
    producer = Producer(reliability_kafka.client())
    topic = Topics(reliability_kafka.topic_prefix).events
    for e in events:
        headers: list[tuple[str, str | bytes | None]] = list(event_headers(e))
        producer.produce(topic, CODEC.encode_event(e), e.key, partition=P, headers=headers)
    assert producer.flush(30) == 0
    producer.close()
    reader = LiveReader(reliability_kafka, PARTITIONS)
    reader.start()
    final = {P: [Record(P, len(events) + 10, b"k", b"v", {})]}
    try:
        # What the failure message reports: the records read, and librdkafka's
        # statistics (every STATISTICS_INTERVAL_S) saying the partition is fetched.
        wait_until(
            lambda: reader.checker.events == len(events) and _fetching(reader),
            timeout=METADATA_TIMEOUT_S + 3 * STATISTICS_INTERVAL_S,
            what="the reader at the end of the partition, its statistics in",
        )
        # A final read with one record more than the partition holds: never caught up.
        with pytest.raises(AssertionError) as raised:
            reader.finish(final, timeout=0.1)  # stops the reader
    finally:
        reader.stop()
    message = str(raised.value)
    assert f"{{{P}: ({len(events) - 1}, {len(events) + 10})}}" in message, message
    assert f"'p{P}': {{'fetch_state': 'active'" in message, message
    assert reader.checker.events == len(events) and reader.checker.violations == []


def _fetching(reader: LiveReader) -> bool:
    state = reader.fetch_states([P]).get(f"p{P}")
    return isinstance(state, dict) and state.get("fetch_state") == "active"
