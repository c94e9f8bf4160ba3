"""Where a command's reply goes: the route its headers ask for, if it may be followed.

A route is followed only to a topic that matches `--reply-topics` (default: the
replies topic and `<prefix>replies.*`), is none of the pipeline's own topics,
exists, and has the partition asked for (partition counts from metadata, cached,
refreshed at most every `METADATA_REFRESH_S` when a route misses). Otherwise the
reply goes to the replies topic keyed by command id, with a `reply-route-error`
header saying why; the metric counts it by reason, and the log says it at most
once a minute per topic.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaException

from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import (
    CORRELATION_ID,
    MAX_CORRELATION_ID_BYTES,
    REPLY_PARTITION,
    REPLY_ROUTE_ERROR,
    REPLY_TOPIC,
    HeaderList,
    ReplyRoute,
    RouteError,
    RouteProblem,
    Topics,
    parse_reply_route,
    partition_for,
)

from .settings import KAFKA_TIMEOUT_S

log = logging.getLogger("duroot.processor")

ANY_PARTITION = -1  # produce: let the partitioner (murmur2_random) pick by key
METADATA_REFRESH_S = 1.0  # a flood of routes to unknown topics asks the broker this often
METADATA_MAX_AGE_S = 60.0  # known counts are asked again after this long
ROUTE_LOG_S = 60.0  # one warning per topic this often
LOG_KEYS = 1_000  # topics remembered for the log limit (a flood of names stays bounded)
_ROUTE_HEADERS = frozenset((REPLY_TOPIC, REPLY_PARTITION, CORRELATION_ID))
# The old metric counted by header: kept, for the route errors a header's value causes.
_HEADER_PROBLEMS = frozenset(
    (
        RouteProblem.BAD_HEADER,
        RouteProblem.PARTITION_WITHOUT_TOPIC,
        RouteProblem.CORRELATION_ID_TOO_LONG,
    )
)


def default_reply_topics(topics: Topics) -> str:
    """The `--reply-topics` default: the replies topic and `<prefix>replies.*`."""
    return re.escape(topics.replies) + "|" + re.escape(topics.prefix) + "replies.*"


class Route(NamedTuple):
    """Where a reply is produced: topic, partition (ANY_PARTITION: by key), the
    correlation id echoed, and why the route asked for was not followed. A
    NamedTuple: one per command (a frozen dataclass costs twice as much to make)."""

    topic: str
    partition: int
    correlation_id: bytes | None
    error: str | None = None
    awaited: bool = True  # False: the command asked for no reply route at all

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        found: list[tuple[str, bytes | None]] = []
        if self.correlation_id:
            found.append((CORRELATION_ID, self.correlation_id))
        if self.error is not None:
            found.append((REPLY_ROUTE_ERROR, self.error.encode()))
        return found or None


class ReplyRoutes:
    def __init__(
        self,
        consumer: Consumer,
        topics: Topics,
        allowed: str | None,
        partition_counts: dict[str, int],
        metrics: ProcessorMetrics,
        count: Callable[..., None],
    ) -> None:
        self._consumer = consumer
        self._count = count  # Transaction.count: counted when the transaction commits
        self._metrics = metrics
        self._replies = topics.replies
        self._own = frozenset((topics.commands, topics.events, topics.index, topics.dlq))
        self._allowed = re.compile(allowed or default_reply_topics(topics))
        self._counts = {t: c for t, c in partition_counts.items() if t not in self._own}
        self._replies_partitions = partition_counts[topics.replies]
        self._refreshed = time.monotonic()
        self._logged: dict[str, float] = {}
        self._unlogged = 0
        # (reply-topic, reply-partition) header values -> the route they asked for,
        # checked against the metadata of `_refreshed` (cleared when it is read
        # again): a client's commands all ask for the same one.
        self._followed: dict[tuple[object, object], tuple[str, int]] = {}

    def route(self, headers: HeaderList, partition: int, offset: int) -> Route:
        """The route of a command's reply (at `partition`/`offset`); never raises."""
        found = {key: raw for key, raw in headers if key in _ROUTE_HEADERS}
        if found:
            asked_before = (found.get(REPLY_TOPIC), found.get(REPLY_PARTITION))
            followed = self._followed.get(asked_before)
            if followed is not None and time.monotonic() - self._refreshed <= METADATA_MAX_AGE_S:
                raw = found.get(CORRELATION_ID)
                correlation_id = (raw.encode() if isinstance(raw, str) else raw) or None
                if correlation_id is None or len(correlation_id) <= MAX_CORRELATION_ID_BYTES:
                    return Route(followed[0], followed[1], correlation_id)
        asked = parse_reply_route(headers)
        if isinstance(asked, RouteError):
            return self.rejected(asked, partition, offset, _shown_topic(headers))
        if asked.topic is None:
            if asked.correlation_id is None:  # keyed by command id
                return Route(self._replies, ANY_PARTITION, None, awaited=False)
            return Route(
                self._replies,
                partition_for(asked.correlation_id, self._replies_partitions),
                asked.correlation_id,
            )
        problem = self._check(asked)
        if problem is not None:
            return self.rejected(problem, partition, offset, asked.topic)
        assert asked.partition is not None  # a route with a topic has a partition
        if len(self._followed) >= LOG_KEYS:  # a flood of routes stays bounded
            self._followed.clear()
        self._followed[(found.get(REPLY_TOPIC), found.get(REPLY_PARTITION))] = (
            asked.topic,
            asked.partition,
        )
        return Route(asked.topic, asked.partition, asked.correlation_id)

    def rejected(self, error: RouteError, partition: int, offset: int, topic: str) -> Route:
        """The default route for a command whose route was not followed: counted, logged."""
        self._count(self._metrics.reply_route_errors, error.reason.value)
        if error.reason in _HEADER_PROBLEMS:  # the parser's message names the header first
            named = (
                h
                for h in (REPLY_PARTITION, CORRELATION_ID, REPLY_TOPIC)
                if repr(h) in error.message
            )
            self._count(self._metrics.reply_header_errors, next(named, REPLY_TOPIC))
        self._log(error, partition, offset, topic)
        return Route(self._replies, ANY_PARTITION, error.correlation_id, error.message)

    def _check(self, asked: ReplyRoute) -> RouteError | None:
        topic, partition = asked.topic or "", asked.partition or 0
        corr = asked.correlation_id
        if topic in self._own:
            return RouteError(
                f"reply topic {topic!r} is one of the pipeline's own topics",
                corr,
                RouteProblem.OWN_TOPIC,
            )
        if self._allowed.fullmatch(topic) is None:
            return RouteError(
                f"reply topic {topic!r} does not match --reply-topics {self._allowed.pattern!r}",
                corr,
                RouteProblem.NOT_ALLOWED,
            )
        count = self._partitions(topic, partition)
        if count is None:
            return RouteError(
                f"reply topic {topic!r} does not exist", corr, RouteProblem.UNKNOWN_TOPIC
            )
        if partition >= count:
            return RouteError(
                f"reply partition {partition} of {topic!r}, which has {count} partitions",
                corr,
                RouteProblem.PARTITION_OUT_OF_RANGE,
            )
        return None

    def _partitions(self, topic: str, partition: int) -> int | None:
        count = self._counts.get(topic)
        now = time.monotonic()
        stale = now - self._refreshed > METADATA_MAX_AGE_S
        missed = count is None or partition >= count
        if stale or (missed and now - self._refreshed > METADATA_REFRESH_S):
            self._refresh(now)
            count = self._counts.get(topic)
        return count

    def _refresh(self, now: float) -> None:
        self._refreshed = now
        self._followed.clear()  # checked against the counts read before
        try:
            md = self._consumer.list_topics(timeout=KAFKA_TIMEOUT_S)
        except KafkaException as exc:  # keep what is known; asked again after METADATA_REFRESH_S
            log.warning("reply topics' metadata not read", extra={"error": str(exc)})
            return
        self._counts = {
            name: len(t.partitions)
            for name, t in md.topics.items()
            if t.error is None and t.partitions and name not in self._own
        }

    def _log(self, error: RouteError, partition: int, offset: int, topic: str) -> None:
        now = time.monotonic()
        if now < self._logged.get(topic, 0.0):
            self._unlogged += 1
            return
        if len(self._logged) >= LOG_KEYS:
            self._logged = {t: at for t, at in self._logged.items() if at > now}
            if len(self._logged) >= LOG_KEYS:  # a flood of names: one line a minute for all
                topic = "*"
                if now < self._logged.get(topic, 0.0):
                    self._unlogged += 1
                    return
        log.warning(
            "reply route not followed: the reply goes to the replies topic",
            extra={
                "error": error.message,
                "reason": error.reason.value,
                "partition": partition,
                "offset": offset,
                "not_logged_before": self._unlogged,
            },
        )
        self._logged[topic] = now + ROUTE_LOG_S
        self._unlogged = 0


def _shown_topic(headers: HeaderList) -> str:
    """The reply-topic header as a log key (cut: a flood of huge values stays small)."""
    raw = next((v for k, v in reversed(list(headers)) if k == REPLY_TOPIC), None)
    if isinstance(raw, str):
        return raw[:250]
    return repr(raw[:250]) if raw is not None else "(none)"
