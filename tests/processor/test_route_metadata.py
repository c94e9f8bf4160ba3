"""Reply routes against a broker (processor/routes.py): a private reply topic is
followed from the first command naming it, whether it was made before the
processor started or while it runs; a flood of routes to topics that do not exist
is answered on the replies topic, and the processor's metadata requests (counted
by librdkafka's statistics of its consumer) stay within the listing budget."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Init
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.processor.routes import LISTING_BURST, LISTINGS_PER_S
from duroot_stream.wire import Codec, Topics, partition_for, wait_visible
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import (
    PARTITIONS,
    Requester,
    command,
    header_value,
    new_workflow_id,
    record_headers,
    running_processor,
)

INIT = Init("00000000-0000-0000-0000-000000000001", "/data", "h1", "/srv/data")
STATS_WAIT_S = 30.0  # a few of the consumer's statistics intervals (5 s)


def make_topic(kafka: KafkaConfig, name: str, partitions: int) -> None:
    """Make a topic as a client making its own reply topic would: created, then visible."""
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap_servers})
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result()
    wait_visible(admin, [name])


def send_routed(
    requester: Requester, topic: str, partition: int, flush: bool = True
) -> tuple[str, bytes]:
    """An Init of a new workflow asking for its reply at `topic`/`partition`; returns
    its command id and the correlation id it carries."""
    cmd = command(new_workflow_id(), INIT)
    correlation = f"corr-{cmd.command_id}".encode()
    requester.producer.produce(
        requester.topics.commands,
        Codec().encode_command(cmd),
        cmd.workflow_id.encode(),
        partition=partition_for(cmd.workflow_id, PARTITIONS),
        headers=[
            ("reply-topic", topic.encode()),
            ("reply-partition", str(partition).encode()),
            ("correlation-id", correlation),
        ],
    )
    if flush:
        requester.producer.flush(10)
    return cmd.command_id, correlation


def replies_with(kafka: KafkaConfig, topic: str, correlations: set[bytes]) -> list[Message]:
    """The replies in `topic` echoing one of `correlations`."""
    return [
        m
        for m in read_all(kafka.bootstrap_servers, topic)
        if dict(record_headers(m)).get("correlation-id") in correlations
    ]


def assert_answered_there(kafka: KafkaConfig, topic: str, partition: int, command_id: str) -> None:
    """The command's reply is at `topic`/`partition`, followed (no route error), and
    not on the replies topic."""
    correlation = f"corr-{command_id}".encode()
    (reply,) = wait_until(
        lambda: replies_with(kafka, topic, {correlation}), what=f"the reply in {topic}"
    )
    assert reply.partition() == partition
    assert "reply-route-error" not in dict(record_headers(reply))
    decoded = Codec().decode_reply(reply.value())
    assert decoded.ok and decoded.command_id == command_id
    replies = Topics(kafka.topic_prefix).replies
    assert replies_with(kafka, replies, {correlation}) == []


def test_a_reply_topic_made_before_the_start_is_followed_from_the_first_command(
    kafka: KafkaConfig, requester: Requester
) -> None:
    mine = requester.topics.replies + ".early"
    make_topic(kafka, mine, 2)
    # Sent before the processor starts: the first command it reads.
    command_id, _ = send_routed(requester, mine, 1)
    with running_processor(kafka):
        assert_answered_there(kafka, mine, 1, command_id)


def test_a_reply_topic_made_while_the_processor_runs_is_followed_from_the_first_command(
    kafka: KafkaConfig, requester: Requester
) -> None:
    replies = requester.topics.replies
    late = replies + ".late"
    with running_processor(kafka):
        # A route the cache misses just before: metadata is read for it, and the
        # topic made right after must not wait for a later reading.
        _, asked = send_routed(requester, replies + ".nobody", 0)
        make_topic(kafka, late, 1)
        command_id, _ = send_routed(requester, late, 0)
        assert_answered_there(kafka, late, 0, command_id)
        (refused,) = replies_with(kafka, replies, {asked})
        assert b"does not exist" in header_value(refused, "reply-route-error")


class MetadataRequests:
    """The metadata requests the processor's consumer has sent, from librdkafka's
    statistics (`brokers.*.req.Metadata`) as its `stats_cb` receives them."""

    def __init__(self, on_statistics: Callable[[ProcessorMetrics, str], None]) -> None:
        self._on_statistics = on_statistics
        self._lock = threading.Lock()
        self.snapshots: list[tuple[float, int]] = []  # (librdkafka's clock in s, requests)

    def record(self, metrics: ProcessorMetrics, stats_json: str) -> None:
        self._on_statistics(metrics, stats_json)
        stats = json.loads(stats_json)
        sent = sum(b.get("req", {}).get("Metadata", 0) for b in stats["brokers"].values())
        with self._lock:
            self.snapshots.append((stats["ts"] / 1e6, sent))

    def next_after(self, seen: int) -> tuple[float, int]:
        """The first snapshot after the `seen` first ones (waited for)."""

        def taken() -> tuple[float, int] | None:
            with self._lock:
                return self.snapshots[seen] if len(self.snapshots) > seen else None

        found = wait_until(taken, timeout=STATS_WAIT_S, what="the consumer's statistics")
        assert found is not None  # wait_until returns only a truthy result
        return found


def test_a_flood_of_routes_to_topics_that_do_not_exist_asks_the_broker_within_the_budget(
    kafka: KafkaConfig, requester: Requester, monkeypatch: pytest.MonkeyPatch
) -> None:
    flood = 500
    replies = requester.topics.replies
    requests = MetadataRequests(ProcessorMetrics.on_statistics)

    def on_statistics(metrics: ProcessorMetrics, stats_json: str) -> None:
        requests.record(metrics, stats_json)

    monkeypatch.setattr(ProcessorMetrics, "on_statistics", on_statistics)
    with running_processor(kafka):
        started_at, before = requests.next_after(0)
        seen = len(requests.snapshots)
        sent: dict[bytes, str] = {}
        for i in range(flood):
            command_id, correlation = send_routed(requester, f"{replies}.nobody-{i}", 0, False)
            sent[correlation] = command_id
        requester.producer.flush(10)

        def all_answered() -> list[Message]:
            found = replies_with(kafka, replies, set(sent))
            return found if len(found) >= flood else []

        answered = wait_until(all_answered, timeout=60, what=f"{flood} replies on {replies}")
        ended_at, after = requests.next_after(max(seen, len(requests.snapshots)))
    assert len(answered) == flood
    for reply in answered:
        assert b"does not exist" in header_value(reply, "reply-route-error")
        decoded = Codec().decode_reply(reply.value())
        assert decoded.ok and decoded.command_id == sent[header_value(reply, "correlation-id")]
        assert reply.key() == decoded.command_id.encode()
    # Listings for routes that miss, plus a few of librdkafka's own (leader queries).
    budget = LISTING_BURST + LISTINGS_PER_S * (ended_at - started_at) + 5
    assert after - before <= budget, f"{after - before} metadata requests for {flood} routes"
    assert after - before < flood / 4
