"""Reply routes followed before are remembered (processor/routes.py), without Kafka:
the same answers as a route checked afresh, and forgotten when metadata is read again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from confluent_kafka import Consumer

from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.processor.routes import METADATA_MAX_AGE_S, ReplyRoutes, Route
from duroot_stream.wire import (
    CORRELATION_ID,
    MAX_CORRELATION_ID_BYTES,
    REPLY_PARTITION,
    REPLY_TOPIC,
    RouteProblem,
    Topics,
)

TOPICS = Topics("t.")


class Metadata:
    """`list_topics` of a cluster whose topics are `counts` (name -> partitions)."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.asked = 0

    def list_topics(self, timeout: float) -> Any:
        self.asked += 1
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(n)))
                for name, n in self.counts.items()
            }
        )


def routes(metadata: Metadata) -> tuple[ReplyRoutes, list[tuple[Any, ...]]]:
    counted: list[tuple[Any, ...]] = []
    counts = {
        t: 4 for t in (TOPICS.commands, TOPICS.events, TOPICS.index, TOPICS.replies, TOPICS.dlq)
    }
    made = ReplyRoutes(
        cast(Consumer, metadata),
        TOPICS,
        None,
        counts,
        ProcessorMetrics(),
        lambda *args, **kwargs: counted.append(args),
    )
    return made, counted


def asking(topic: str, partition: str, correlation: bytes) -> list[tuple[str, bytes | None]]:
    return [
        (REPLY_TOPIC, topic.encode()),
        (REPLY_PARTITION, partition.encode()),
        (CORRELATION_ID, correlation),
    ]


def test_a_route_followed_before_is_followed_with_each_command_s_own_correlation_id() -> None:
    made, counted = routes(Metadata({}))
    first = made.route(asking(TOPICS.replies, "3", b"c1"), 0, 1)
    again = made.route(asking(TOPICS.replies, "3", b"c2"), 0, 2)
    assert first == Route(TOPICS.replies, 3, b"c1")
    assert again == Route(TOPICS.replies, 3, b"c2")
    assert counted == []


def test_a_remembered_route_still_refuses_a_too_long_correlation_id() -> None:
    made, counted = routes(Metadata({}))
    made.route(asking(TOPICS.replies, "3", b"c1"), 0, 1)
    route = made.route(asking(TOPICS.replies, "3", b"x" * (MAX_CORRELATION_ID_BYTES + 1)), 0, 2)
    assert route.error is not None and route.topic == TOPICS.replies and route.partition == -1
    assert counted[0][1] == RouteProblem.CORRELATION_ID_TOO_LONG.value


def test_a_remembered_route_is_checked_again_when_the_metadata_is_old() -> None:
    metadata = Metadata({})  # the replies topic has gone
    made, counted = routes(metadata)
    assert made.route(asking(TOPICS.replies, "3", b"c1"), 0, 1).error is None
    made._refreshed -= METADATA_MAX_AGE_S + 1
    route = made.route(asking(TOPICS.replies, "3", b"c2"), 0, 2)
    assert metadata.asked == 1
    assert route.error is not None and "does not exist" in route.error
    assert counted[0][1] == RouteProblem.UNKNOWN_TOPIC.value
