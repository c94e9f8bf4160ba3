"""Where a command's reply goes: the route its headers ask for, if it may be followed.

A route is followed only to a topic that matches `--reply-topics` (default: the
replies topic and `<prefix>replies.*`), is none of the pipeline's own topics,
exists, and has the partition asked for. Otherwise the reply goes to the replies
topic keyed by command id, with a `reply-route-error` header saying why; the
metric counts it by reason, and the log says it at most once a minute per topic.

Partition counts come from metadata listings of all topics, cached. A route the
cache cannot follow (a topic it has not seen, or too few partitions) lists the
topics at once, so a topic made before its first command is followed from that
command on, after any start. A topic a listing did not show is refused without
asking again for `MISSED_S`, and listings for routes that miss take tokens from
one bucket (`LISTING_BURST`, refilled at `LISTINGS_PER_S`): a flood of names that
do not exist asks the broker no more often than that. Never `list_topics(topic)`:
librdkafka then keeps a handle for every topic so asked, and asks the broker about
all of them twice a second from then on.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from confluent_kafka import Consumer, KafkaException

from duroot_stream.domain import new_tuple
from duroot_stream.metrics import ProcessorMetrics
from duroot_stream.wire import (
    CORRELATION_ID,
    MAX_CORRELATION_ID_BYTES,
    REPLY_PARTITION,
    REPLY_ROUTE_ERROR,
    REPLY_TOPIC,
    ReplyRoute,
    RouteError,
    RouteProblem,
    Topics,
    parse_reply_route,
    partition_for,
)

log = logging.getLogger("duroot.processor")

ANY_PARTITION: Final = -1  # produce: let the partitioner (murmur2_random) pick by key
METADATA_MAX_AGE_S: Final = 60.0  # known counts are listed again after this long
MISSED_S: Final = 1.0  # a topic a listing did not show is refused this long without asking
# Listings for routes that miss, over all topics, after a burst. A listing waits
# behind the consumer's parked fetch (fetch.wait.max.ms, 500 ms), in the batch:
# a flood of names spends at most about half the processor's time on them.
LISTINGS_PER_S: Final = 1.0
LISTING_BURST: Final = 5
LISTING_TIMEOUT_S: Final = 5.0  # a listing blocks the batch: refuse the route rather than wait
ROUTE_LOG_S: Final = 60.0  # one warning per topic this often
LOG_KEYS: Final = 1_000  # topics remembered for the log limit (a flood of names stays bounded)
# The old metric counted by header: kept, for the route errors a header's value causes.
_HEADER_PROBLEMS: Final = frozenset(
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
    NamedTuple: one per command (a frozen dataclass costs twice as much to make),
    made from a tuple where it is hot (`new_tuple`: its own `__new__` is Python)."""

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._clock = clock
        self._count = count  # Transaction.count: counted when the transaction commits
        self._metrics = metrics
        self._replies = topics.replies
        self._own = frozenset((topics.commands, topics.events, topics.index, topics.dlq))
        self._allowed = re.compile(allowed or default_reply_topics(topics))
        self._counts = {t: c for t, c in partition_counts.items() if t not in self._own}
        self._replies_partitions = partition_counts[topics.replies]
        self._listed = clock()  # when `_counts` was read
        self._missed: dict[str, float] = {}  # topic -> when a listing did not show it
        self._tokens, self._filled = float(LISTING_BURST), self._listed
        self.listings = 0  # metadata requests made: what a flood of names costs the broker
        self._logged: dict[str, float] = {}
        self._unlogged = 0
        # (reply-topic, reply-partition) header values -> the route they asked for,
        # checked against the metadata of `_listed` (cleared when it is read
        # again): a client's commands all ask for the same one.
        self._followed: dict[tuple[object, object], tuple[str, int]] = {}
        self._keyed = Route(self._replies, ANY_PARTITION, None, awaited=False)  # no route asked

    def route(self, found: Mapping[str, bytes | str | None], partition: int, offset: int) -> Route:
        """The route of a command's reply (at `partition`/`offset`), given the last value
        of each of its route headers (`wire.last_values`: headers of other names may
        be there too); never raises."""
        # Only routes with a reply-topic are cached: (None, ...) is never found.
        followed = self._followed.get((found.get(REPLY_TOPIC), found.get(REPLY_PARTITION)))
        if followed is not None and self._clock() - self._listed <= METADATA_MAX_AGE_S:
            raw = found.get(CORRELATION_ID)
            correlation_id = (raw.encode() if isinstance(raw, str) else raw) or None
            if correlation_id is None or len(correlation_id) <= MAX_CORRELATION_ID_BYTES:
                return new_tuple(Route, (followed[0], followed[1], correlation_id, None, True))
        asked = parse_reply_route(found)
        if isinstance(asked, RouteError):
            return self.rejected(asked, partition, offset, _shown_topic(found))
        if asked.topic is None:
            if asked.correlation_id is None:  # keyed by command id
                return self._keyed
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
                f"reply topic {topic!r} does not exist (in the metadata read "
                f"{self._clock() - self._listed:.1f} s ago)",
                corr,
                RouteProblem.UNKNOWN_TOPIC,
            )
        if partition >= count:
            return RouteError(
                f"reply partition {partition} of {topic!r}, which has {count} partitions",
                corr,
                RouteProblem.PARTITION_OUT_OF_RANGE,
            )
        return None

    def _partitions(self, topic: str, partition: int) -> int | None:
        """The partition count of `topic` if it exists: listed afresh when the counts
        are old, or when they cannot follow the route and `_may_list` says yes."""
        now = self._clock()
        stale = now - self._listed > METADATA_MAX_AGE_S
        if stale or (not self._follows(topic, partition) and self._may_list(topic, now)):
            self._list(now)
            if not self._follows(topic, partition):
                if len(self._missed) >= LOG_KEYS:  # only listings add: few are recent
                    self._missed = {t: at for t, at in self._missed.items() if now - at < MISSED_S}
                self._missed[topic] = now
        return self._counts.get(topic)

    def _follows(self, topic: str, partition: int) -> bool:
        count = self._counts.get(topic)
        return count is not None and partition < count

    def _may_list(self, topic: str, now: float) -> bool:
        """Whether a route that misses may list the topics: not one a listing missed
        within `MISSED_S`, and a token left in the bucket (taken)."""
        missed = self._missed.get(topic)
        if missed is not None and now - missed < MISSED_S:
            return False
        self._tokens = min(LISTING_BURST, self._tokens + (now - self._filled) * LISTINGS_PER_S)
        self._filled = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _list(self, now: float) -> None:
        """Read the partition count of every topic (kept as it was when that fails)."""
        self._listed = now
        self._followed.clear()  # checked against the counts read before
        self.listings += 1
        try:
            md = self._consumer.list_topics(timeout=LISTING_TIMEOUT_S)
        except KafkaException as exc:
            self._tokens = 0.0  # the broker is not answering: no more listings for a while
            log.warning("reply topics' metadata not read", extra={"error": str(exc)})
            return
        self._counts = {
            name: len(t.partitions)
            for name, t in md.topics.items()
            if t.error is None and t.partitions and name not in self._own
        }

    def _log(self, error: RouteError, partition: int, offset: int, topic: str) -> None:
        now = self._clock()
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


def _shown_topic(found: Mapping[str, bytes | str | None]) -> str:
    """The reply-topic header as a log key (cut: a flood of huge values stays small)."""
    raw = found.get(REPLY_TOPIC)
    if isinstance(raw, str):
        return raw[:250]
    return repr(raw[:250]) if raw is not None else "(none)"
