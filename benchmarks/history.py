"""Restart time against the length of history: restore of one partition holding
10,000,000 events.

The partition holds 50,000 small workflows of 100 events (Init, Appends of 10
paths, Commit), then one large workflow of 5,000,000 events (a du of five
million directories: Appends of 100 paths), written as the processor writes
them. `restore_partitions` reads it to its end, against a raw consume of the
same partition with the same consumer settings (`processor.raw_consume`),
taking turns: what a restart costs without a state topic. Then the fold's states
are written to the state topic as the processor's snapshot writes them (one record
per workflow and the marker), and `restore_partitions` with the state topic reads
them instead of the events: what a restart costs with it (`state_restore_s`).
Last, a takeover by a warm standby (`processor --standbys`): the state partition
read ahead to its end as a standby holds it, a tail of changed states written
after (`STANDBY_TAIL`), and `restore_partitions` reading on from there
(`standby_restore_s`), taking turns with a restore from the state alone.

Run: `python -m benchmarks.history [--quick]` (quick: a tenth of it), or
`make bench-history`; writes bench-results/history.json. Not part of
`make bench` (writing the events alone takes minutes).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict

from benchmarks.processor import raw_consume
from benchmarks.results import HistoryResult
from benchmarks.workload import (
    HistoryShape,
    Record,
    bootstrap,
    fresh_topics,
    log,
    machine_load,
    new_producer,
    produce_all,
    workflow_ids,
    write_histories,
    write_report,
)
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    WorkflowEvent,
    WorkflowState,
)
from duroot_stream.ids import MonotonicUlids, new_ulid
from duroot_stream.processor import restore_partitions
from duroot_stream.processor.restore_read import high_watermarks, read_to_end
from duroot_stream.processor.standby import Warm
from duroot_stream.processor.state_store import Snapshot, StateChangelog, StateRead
from duroot_stream.wire import Codec, Topics, event_headers

PATHS_PER_APPEND = 100
STANDBY_TAIL = 1_000  # states written after a standby's read: the last moments' tail


def large_workflow(topic: str, workflow_id: str, events: int) -> Iterator[Record]:
    """One workflow's `events` records, made as they are produced (not held)."""
    codec, new_id = Codec(), MonotonicUlids()
    head, command_id = EVENT_EPOCH, new_ulid()
    for seq in range(events):
        payload: EventPayload
        if seq == 0:
            payload = DuRootStarted(str(uuid.UUID(int=7)), "/big", "files.example.org", "/big")
        elif seq == events - 2:
            payload = DuRootCompleted(0, "")
        elif seq == events - 1:
            payload = DuRootCommitted()
        else:
            payload = DuUpdated(f"d{seq}", 4096 * seq)
        if seq % PATHS_PER_APPEND == 1 or seq >= events - 2:
            command_id = new_ulid()
        vid = new_id(head)
        event = WorkflowEvent(vid, head, workflow_id, seq, command_id, payload)
        head = vid
        key = f"{workflow_id}/{seq}".encode()
        yield topic, 0, key, codec.encode_event(event, validate=False), event_headers(event)


def write(config: KafkaConfig, small: int, large: int) -> int:
    topic = Topics(config.topic_prefix).events
    started = time.monotonic()
    written = write_histories(
        [(topic, 1)], config, workflow_ids(small, seed=4), HistoryShape(100, 10)
    )
    producer = new_producer(config, acks="all")
    written += produce_all(producer, large_workflow(topic, str(uuid.uuid4()), large))
    if producer.flush(300):
        raise RuntimeError("events not delivered")
    log(f"history: wrote {written:,} events in {time.monotonic() - started:.0f} s")
    return written


def run(quick: bool) -> HistoryResult:
    small, large = (5_000, 500_000) if quick else (50_000, 5_000_000)
    rounds = 1 if quick else 2
    with bootstrap() as servers:
        config = fresh_topics(servers, 1)
        events = write(config, small, large)
        topic = Topics(config.topic_prefix).events
        load = machine_load("the restore of a long history")
        restore_s = raw_s = float("inf")
        for _ in range(rounds):  # taking turns, best of each
            t0 = time.monotonic()
            restored = restore_partitions(config, topic, [0], Codec())
            restore_s = min(restore_s, time.monotonic() - t0)
            workflows, records = restored[0]
            assert records == events and len(workflows) == small + 1, (records, len(workflows))
            t0 = time.monotonic()
            assert raw_consume(config, topic, [0]) == events
            raw_s = min(raw_s, time.monotonic() - t0)
            log(f"history: restore {restore_s:.1f} s, raw consume {raw_s:.1f} s (best so far)")
        state_s, standby_s = restore_from_state(config, restored[0][0], events, rounds)
    return HistoryResult(
        events=events,
        workflows=small + 1,
        restore_s=round(restore_s, 2),
        restore_events_per_s=round(events / restore_s),
        raw_consume_s=round(raw_s, 2),
        raw_consume_events_per_s=round(events / raw_s),
        restore_ratio=round(raw_s / restore_s, 3),
        state_restore_s=round(state_s, 3),
        standby_restore_s=round(standby_s, 3),
        load_before=load,
    )


def restore_from_state(
    config: KafkaConfig, workflows: dict[str, WorkflowState], events: int, rounds: int
) -> tuple[float, float]:
    """Write `workflows` to the state topic as a snapshot covering `events` (one
    transaction, as the processor's); then, taking turns, the best of `rounds`
    restores from it, and of `rounds` from a standby's read of it plus a tail."""
    topics = Topics(config.topic_prefix)
    producer = new_producer(config, acks="all", **{"transactional.id": f"bench-{uuid.uuid4()}"})
    producer.init_transactions(60)
    changelog = StateChangelog(topics.state, "bench")

    def write(records: list[tuple[str, int, bytes | None, bytes | None, None]]) -> None:
        producer.begin_transaction()
        # No tombstone here: every key and value is there.
        produce_all(producer, ((t, p, k or b"", v or b"", []) for t, p, k, v, _ in records))
        producer.commit_transaction(120)

    snapshot = changelog.snapshot(0, workflows, Snapshot(events), set())
    write(snapshot)
    codec, best, warm_best = Codec(), float("inf"), float("inf")
    tail = dict(list(workflows.items())[:STANDBY_TAIL])
    for _ in range(rounds):
        t0 = time.monotonic()
        restored = restore_partitions(config, topics.events, [0], codec, state_topic=topics.state)
        best = min(best, time.monotonic() - t0)
        states, records = restored[0]
        assert records == 0 and states == workflows, (records, len(states))
        ends = high_watermarks(config, topics.state, [0])
        ahead = StateRead()
        read_to_end(config, topics.state, ends, {0: ahead}, codec, 60.0)
        write(changelog.changed([(0, wf) for wf in tail], {0: workflows}))
        t0 = time.monotonic()
        restored = restore_partitions(
            config,
            topics.events,
            [0],
            codec,
            state_topic=topics.state,
            warm={0: Warm(ahead, ends[0][1])},
        )
        warm_best = min(warm_best, time.monotonic() - t0)
        states, records = restored[0]
        assert records == 0 and states == workflows, (records, len(states))
        log(
            f"history: restore from {len(snapshot):,} state records {best:.2f} s, from a "
            f"standby and a tail of {len(tail):,} {warm_best:.2f} s (best so far)"
        )
    return best, warm_best


def main(argv: Sequence[str] = ()) -> HistoryResult:
    quick = "--quick" in argv
    result = run(quick)
    for name, value in asdict(result).items():
        if isinstance(value, int | float):
            print(f"{name:<28} {value:>14,.2f}")
    print(f"wrote {write_report('history', quick, result)}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
