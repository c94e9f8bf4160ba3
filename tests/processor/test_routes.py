"""Reply routes (processor/routes.py), without Kafka: a route followed before is
remembered (the same answers as a route checked afresh, forgotten when metadata is
read again); a route the cache cannot follow lists the topics at once, within a
budget; a route error is logged at most once a minute per topic. The clock is a
test's own. Against a broker: test_route_metadata.py."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any, cast

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException

from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.processor.routes import (
    LISTING_BURST,
    LISTINGS_PER_S,
    METADATA_MAX_AGE_S,
    MISSED_S,
    ROUTE_LOG_S,
    ReplyRoutes,
    Route,
)
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
    """`list_topics` of a cluster whose topics are `counts` (name -> partitions);
    `failing`: it raises as librdkafka does when the broker does not answer."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.asked = 0
        self.failing = False

    def list_topics(self, timeout: float) -> Any:
        self.asked += 1
        if self.failing:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))
        return SimpleNamespace(
            topics={
                name: SimpleNamespace(error=None, partitions=dict.fromkeys(range(n)))
                for name, n in self.counts.items()
            }
        )


class Clock:
    """The routes' clock, moved by the test."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def routes(
    metadata: Metadata, clock: Clock | None = None
) -> tuple[ReplyRoutes, list[tuple[Any, ...]]]:
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
        clock or Clock(),
    )
    return made, counted


def asking(topic: str, partition: str, correlation: bytes) -> dict[str, bytes | str | None]:
    """A command's route headers as the engine gives them (`wire.last_values`)."""
    return {
        REPLY_TOPIC: topic.encode(),
        REPLY_PARTITION: partition.encode(),
        CORRELATION_ID: correlation,
    }


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
    clock = Clock()
    made, counted = routes(metadata, clock)
    assert made.route(asking(TOPICS.replies, "3", b"c1"), 0, 1).error is None
    clock.now += METADATA_MAX_AGE_S + 1
    route = made.route(asking(TOPICS.replies, "3", b"c2"), 0, 2)
    assert metadata.asked == 1
    assert route.error is not None and "does not exist" in route.error
    assert counted[0][1] == RouteProblem.UNKNOWN_TOPIC.value


def test_a_topic_made_after_the_start_is_followed_from_its_first_command() -> None:
    metadata = Metadata({})
    made, counted = routes(metadata)  # the start: only the pipeline's own counts known
    metadata.counts[TOPICS.replies + ".mine"] = 2
    route = made.route(asking(TOPICS.replies + ".mine", "1", b"c1"), 0, 1)
    assert route == Route(TOPICS.replies + ".mine", 1, b"c1")
    assert metadata.asked == made.listings == 1
    assert counted == []


def test_a_partition_added_since_the_last_listing_is_followed_at_once() -> None:
    metadata = Metadata({TOPICS.replies + ".mine": 1})
    made, _ = routes(metadata)
    assert made.route(asking(TOPICS.replies + ".mine", "0", b"c1"), 0, 1).error is None
    metadata.counts[TOPICS.replies + ".mine"] = 3
    assert made.route(asking(TOPICS.replies + ".mine", "2", b"c2"), 0, 2).error is None
    assert metadata.asked == 2


def test_a_topic_a_listing_did_not_show_is_refused_without_asking_for_a_while() -> None:
    metadata = Metadata({})
    clock = Clock()
    made, counted = routes(metadata, clock)
    late = TOPICS.replies + ".late"
    first = made.route(asking(late, "0", b"c1"), 0, 1)
    assert first.error is not None and "does not exist" in first.error
    metadata.counts[late] = 1  # made after the listing
    clock.now += MISSED_S / 2
    assert made.route(asking(late, "0", b"c2"), 0, 2).error is not None
    assert metadata.asked == 1, "asked again within MISSED_S"
    clock.now += MISSED_S / 2
    assert made.route(asking(late, "0", b"c3"), 0, 3) == Route(late, 0, b"c3")
    assert metadata.asked == 2
    assert [c[1] for c in counted] == [RouteProblem.UNKNOWN_TOPIC.value] * 2


def test_a_flood_of_routes_to_topics_that_do_not_exist_lists_within_the_budget() -> None:
    metadata = Metadata({})
    clock = Clock()
    made, counted = routes(metadata, clock)
    flood = 1_000
    for second in range(3):
        for i in range(flood):
            name = f"{TOPICS.replies}.nobody-{second}-{i}"
            route = made.route(asking(name, "0", b"c"), 0, i)
            assert route.topic == TOPICS.replies and route.partition == -1
            assert route.error is not None and "does not exist" in route.error
        clock.now += 1.0
    assert metadata.asked == made.listings == LISTING_BURST + 2 * LISTINGS_PER_S
    assert len(counted) == 3 * flood
    assert {c[1] for c in counted} == {RouteProblem.UNKNOWN_TOPIC.value}


def test_a_listing_that_fails_refuses_the_route_and_empties_the_budget() -> None:
    metadata = Metadata({TOPICS.replies + ".a": 1, TOPICS.replies + ".b": 1})
    metadata.failing = True
    clock = Clock()
    made, counted = routes(metadata, clock)
    assert made.route(asking(TOPICS.replies + ".a", "0", b"c1"), 0, 1).error is not None
    assert made.route(asking(TOPICS.replies + ".b", "0", b"c2"), 0, 2).error is not None
    assert metadata.asked == 1, "a second listing right after one that failed"
    metadata.failing = False
    clock.now += 1 / LISTINGS_PER_S
    assert made.route(asking(TOPICS.replies + ".b", "0", b"c3"), 0, 3).error is None
    assert metadata.asked == 2
    assert len(counted) == 2


def test_a_route_error_is_logged_at_most_once_a_minute_per_topic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    made, counted = routes(Metadata({}), clock)
    caplog.set_level(logging.WARNING, logger="duroot.processor")

    def refuse(topic: str) -> None:  # a topic not allowed: refused without metadata
        assert made.route(asking(topic, "0", b"c"), 0, 0).error is not None

    def logged() -> list[tuple[str, int]]:
        return [
            (str(getattr(r, "error", "")).split("'")[1], getattr(r, "not_logged_before", -1))
            for r in caplog.records
            if r.getMessage().startswith("reply route not followed")
        ]

    refuse("a")
    refuse("a")
    clock.now += 30
    refuse("b")  # another topic: its own minute
    refuse("a")
    clock.now += ROUTE_LOG_S - 30 - 0.001
    refuse("a")
    assert logged() == [("a", 0), ("b", 1)]
    clock.now += 0.001
    refuse("a")  # a minute after the first line
    refuse("b")
    assert logged() == [("a", 0), ("b", 1), ("a", 2)]
    clock.now += 30
    refuse("b")
    assert logged() == [("a", 0), ("b", 1), ("a", 2), ("b", 1)]
    assert len(counted) == 8
