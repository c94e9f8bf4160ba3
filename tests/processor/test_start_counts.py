"""The processor refuses to start when the commands, events, index and state topics'
partition counts differ (docs/contract.md, Partitioning), naming each count:
every pair, on real topics, and the comparison (`wire.partition_problems`) alone."""

from __future__ import annotations

import re
import threading
import uuid

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.processor import Processor, ProcessorSettings
from duroot_stream.wire import TopicCheckError, Topics, partition_problems, wait_visible
from tests.kafka_helpers import wait_until

START_WAIT_S = 60.0  # the check reads metadata (KAFKA_TIMEOUT_S, 30 s) before anything else

# (commands, events, index, state): each pair differing once.
MISMATCHES = {
    "commands-events": (3, 2, 3, 3),
    "commands-index": (3, 3, 2, 3),
    "events-index": (2, 2, 3, 2),
    "commands-state": (3, 3, 3, 2),
    "events-state": (2, 3, 2, 2),
    "index-state": (2, 2, 2, 3),
}
Counts = tuple[int, int, int, int]


def counted(topics: Topics, commands: int, events: int, index: int, state: int) -> dict[str, int]:
    return {
        topics.commands: commands,
        topics.events: events,
        topics.index: index,
        topics.replies: 5,  # keyed by command id: may differ
        topics.dlq: 1,
        topics.state: state,
    }


def pattern(topics: Topics, commands: int, events: int, index: int, state: int) -> str:
    """What the refusal says: every count, by topic (a regular expression)."""
    return re.escape(
        f"{topics.commands} has {commands}, {topics.events} has {events}, "
        f"{topics.index} has {index}, {topics.state} has {state}; they must be equal"
    )


@pytest.mark.parametrize("counts", MISMATCHES.values(), ids=MISMATCHES.keys())
def test_the_comparison_names_each_count_when_any_two_differ(counts: Counts) -> None:
    topics = Topics("p.")
    (problem,) = partition_problems(topics, counted(topics, *counts))
    assert problem.startswith(
        f"partitions: p.commands has {counts[0]}, p.events has {counts[1]}, "
        f"p.index has {counts[2]}, p.state has {counts[3]}; they must be equal"
    )
    assert partition_problems(topics, counted(topics, 3, 3, 3, 3)) == []


@pytest.mark.parametrize("counts", MISMATCHES.values(), ids=MISMATCHES.keys())
def test_the_processor_refuses_to_start_when_any_two_counts_differ(
    kafka: KafkaConfig, counts: Counts
) -> None:
    topics = Topics(kafka.topic_prefix)
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    made = counted(topics, *counts)
    futures = admin.create_topics([NewTopic(name, n, 1) for name, n in made.items()])
    for future in futures.values():
        future.result()
    wait_visible(admin, list(made))
    settings = ProcessorSettings(kafka=kafka, instance_id=f"t-{uuid.uuid4().hex[:6]}")
    processor = Processor(settings)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            processor.run()
        except BaseException as exc:  # the refusal, checked below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until(
        lambda: errors or processor.ready.is_set(), timeout=START_WAIT_S, what="start or refusal"
    )
    if not errors:  # it started: stop it before failing
        processor.stop()
        thread.join(START_WAIT_S)
        pytest.fail(f"the processor started with partition counts {counts}")
    thread.join(START_WAIT_S)
    (error,) = errors
    assert isinstance(error, TopicCheckError), repr(error)
    assert re.search(pattern(topics, *counts), str(error)), str(error)
    assert processor.failed
