"""Every Kafka header the project writes or reads, named once, with its parser.

- Event headers (on `events`): `event-type`, `workflow-id`, `vid`, `parent`,
  `seq`, `command-id`, so that state can be rebuilt, and events routed,
  without decoding the Avro body; written with the event's record
  (`event_records.py`).
- Reply route headers (on `commands`), the request-reply convention of
  Spring Kafka's ReplyingKafkaTemplate: `reply-topic`, `reply-partition`,
  `correlation-id`; the reply carries `correlation-id` back, and
  `reply-route-error` when the route asked for was not followed.
- Dead-letter headers (on `commands.dlq`), added to the original record's:
  `dlq-error`, `dlq-reason`, `dlq-topic`, `dlq-partition`, `dlq-offset`, and
  `dlq-truncated` when the record was cut to fit; `dlq-replays`, the times
  `duroot-stream dlq replay` sent the record back (kept when it is
  dead-lettered again).
- Trace context (W3C Trace Context, any record): `traceparent` and
  `tracestate`, carried from a command onto its events, index events, reply
  and dead letter; W3C's names, named in `duroot_stream.tracing` (a layer
  below this one), read from a record by `trace.trace_carrier`.

Values are UTF-8 text, numbers in decimal. Of a repeated header the last
counts; headers of other names are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from duroot_stream.domain import (
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
)

from .checks import show, ulid_match, uuid_match
from .codec_error import CodecError

__all__ = [
    "COMMAND_ID",
    "CORRELATION_ID",
    "DLQ_ERROR",
    "DLQ_OFFSET",
    "DLQ_PARTITION",
    "DLQ_REASON",
    "DLQ_REPLAYS",
    "DLQ_TOPIC",
    "DLQ_TRUNCATED",
    "EVENT_HEADER_NAMES",
    "EVENT_TYPE",
    "EVENT_TYPES",
    "MAX_CORRELATION_ID_BYTES",
    "PARENT",
    "REPLY_PARTITION",
    "REPLY_ROUTE_ERROR",
    "REPLY_TOPIC",
    "ROUTE_HEADER_NAMES",
    "SEQ",
    "VID",
    "WORKFLOW_ID",
    "DeadLetter",
    "DeadLetterReason",
    "EventHeaders",
    "HeaderList",
    "ReplyRoute",
    "RouteError",
    "RouteProblem",
    "copyable_headers",
    "dead_letter_headers",
    "last_values",
    "parse_dead_letter",
    "parse_event_headers",
    "parse_reply_route",
    "reply_route_headers",
]

# Headers as confluent-kafka gives and takes them.
HeaderList = Sequence[tuple[str, bytes | str | None]]

EVENT_TYPE: Final = "event-type"
WORKFLOW_ID: Final = "workflow-id"
VID: Final = "vid"
PARENT: Final = "parent"
SEQ: Final = "seq"
COMMAND_ID: Final = "command-id"
EVENT_HEADER_NAMES: Final = (EVENT_TYPE, WORKFLOW_ID, VID, PARENT, SEQ, COMMAND_ID)

REPLY_TOPIC: Final = "reply-topic"
REPLY_PARTITION: Final = "reply-partition"
CORRELATION_ID: Final = "correlation-id"
REPLY_ROUTE_ERROR: Final = "reply-route-error"
# A correlation id is echoed byte for byte (Spring's are 16 binary bytes): of
# any content, but not of any length (it rides on every reply).
MAX_CORRELATION_ID_BYTES: Final = 255

DLQ_ERROR: Final = "dlq-error"
DLQ_REASON: Final = "dlq-reason"
DLQ_TOPIC: Final = "dlq-topic"
DLQ_PARTITION: Final = "dlq-partition"
DLQ_OFFSET: Final = "dlq-offset"
DLQ_TRUNCATED: Final = "dlq-truncated"
DLQ_REPLAYS: Final = "dlq-replays"
_DLQ_NAMES: Final = (DLQ_ERROR, DLQ_REASON, DLQ_TOPIC, DLQ_PARTITION, DLQ_OFFSET)
_EVENT_NAMES: Final = frozenset(EVENT_HEADER_NAMES)
ROUTE_HEADER_NAMES: Final = frozenset((REPLY_TOPIC, REPLY_PARTITION, CORRELATION_ID))
_DEAD_LETTER_NAMES: Final = frozenset((*_DLQ_NAMES, DLQ_TRUNCATED))

_INT32_MAX: Final = (1 << 31) - 1
_INT64_MAX: Final = (1 << 63) - 1
# Kafka's rule for topic names (`Topic.validate`): at most 249 of these characters.
_TOPIC_NAME: Final = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def last_values(headers: HeaderList | None, names: frozenset[str]) -> dict[str, bytes | str | None]:
    """The last value of each header in `names` that is present (one pass: the
    processor picks a command's route and trace headers at once)."""
    return {key: raw for key, raw in headers or () if key in names}


def header_text(what: str, key: str, raw: bytes | str | None) -> str:
    if raw is None:
        raise CodecError(f"{what} header {key!r} has no value")
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode()
    except UnicodeDecodeError:
        raise CodecError(f"{what} header {key!r} is not UTF-8: {show(raw)}") from None


def _number(what: str, key: str, text: str, limit: int) -> int:
    """A header's non-negative decimal number, up to `limit`."""
    if text.isascii() and text.isdigit() and len(text) <= 19 and int(text) <= limit:
        return int(text)
    raise CodecError(f"bad {what} header {key!r}: {show(text)} is not a decimal number")


# --- event headers ----------------------------------------------------------------

EVENT_TYPES: dict[type, str] = {
    DuRootStarted: "STARTED",
    DuUpdated: "UPDATED",
    DuRootCompleted: "COMPLETED",
    DuRootCommitted: "COMMITTED",
}
_EVENT_TYPE_NAMES: Final = frozenset(EVENT_TYPES.values())


@dataclass(frozen=True, slots=True)
class EventHeaders:
    """An event's Kafka headers: enough to rebuild state and route it unread."""

    event_type: str  # "STARTED" | "UPDATED" | "COMPLETED" | "COMMITTED"
    workflow_id: str
    vid: str  # = the event's event_id
    parent: str
    seq: int
    command_id: str


def parse_event_headers(headers: HeaderList | None) -> EventHeaders:
    """Read an event's headers. Raises CodecError naming a missing or bad header."""
    raw = last_values(headers, _EVENT_NAMES)
    missing = [name for name in EVENT_HEADER_NAMES if name not in raw]
    if missing:
        raise CodecError(f"missing event header {missing[0]!r}")
    found = {key: header_text("event", key, raw[key]) for key in EVENT_HEADER_NAMES}
    event_type = found[EVENT_TYPE]
    if event_type not in _EVENT_TYPE_NAMES:
        raise CodecError(f"bad event header 'event-type': {show(event_type)}")
    seq = _number("event", SEQ, found[SEQ], _INT64_MAX)
    for name, check in (
        (WORKFLOW_ID, uuid_match),
        (VID, ulid_match),
        (PARENT, ulid_match),
        (COMMAND_ID, ulid_match),
    ):
        if check(found[name]) is None:
            raise CodecError(f"bad event header {name!r}: {show(found[name])}")
    return EventHeaders(
        event_type=event_type,
        workflow_id=found[WORKFLOW_ID],
        vid=found[VID],
        parent=found[PARENT],
        seq=seq,
        command_id=found[COMMAND_ID],
    )


# --- reply route ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplyRoute:
    """Where a command's sender waits for the reply, as its headers say.

    No route headers: `ReplyRoute(None, None, None)`, the reply goes to the
    replies topic keyed by the command id.
    """

    topic: str | None  # None: the replies topic
    # None: the replies topic's partition for the correlation id (murmur2), or
    # for the key when there is no correlation id either.
    partition: int | None
    correlation_id: bytes | None  # echoed byte for byte in the reply's header


class RouteProblem(StrEnum):
    """Why a reply route was not followed (a bounded metric label)."""

    BAD_HEADER = "bad-header"  # no value, not UTF-8, not a topic name or partition number
    PARTITION_WITHOUT_TOPIC = "partition-without-topic"
    CORRELATION_ID_TOO_LONG = "correlation-id-too-long"
    # Found by the processor, which knows the topics:
    OWN_TOPIC = "own-topic"  # commands, events, index or dead-letter topic
    NOT_ALLOWED = "not-allowed"  # does not match --reply-topics
    UNKNOWN_TOPIC = "unknown-topic"
    PARTITION_OUT_OF_RANGE = "partition-out-of-range"
    UNDELIVERABLE = "undeliverable"  # Kafka refused the reply record there


@dataclass(frozen=True, slots=True)
class RouteError:
    """Route headers that cannot be followed; `message` says which and why."""

    message: str
    correlation_id: bytes | None  # still known: the sender may match a reply by it
    reason: RouteProblem = RouteProblem.BAD_HEADER


def reply_route_headers(topic: str, partition: int, correlation_id: str) -> list[tuple[str, bytes]]:
    """The route headers of a command whose reply is awaited on `topic`/`partition`."""
    return [
        (REPLY_TOPIC, topic.encode()),
        (REPLY_PARTITION, str(partition).encode()),
        (CORRELATION_ID, correlation_id.encode()),
    ]


def parse_reply_route(found: Mapping[str, bytes | str | None]) -> ReplyRoute | RouteError:
    """The route a command's headers ask for, given the last value of each of its
    route headers (`last_values(headers, ROUTE_HEADER_NAMES)`); a RouteError when they cannot be
    followed (a topic name Kafka refuses, a partition that is no number, a
    partition without a topic, a correlation id too long to echo). `reply-topic`
    without `reply-partition` means partition 0. Whether the topic may take
    replies, and has that partition, is the processor's to check."""
    correlation = found.get(CORRELATION_ID)
    correlation_id = (correlation.encode() if isinstance(correlation, str) else correlation) or None
    if correlation_id is not None and len(correlation_id) > MAX_CORRELATION_ID_BYTES:
        return RouteError(
            f"reply route header {CORRELATION_ID!r} of {len(correlation_id)} bytes, more than "
            f"{MAX_CORRELATION_ID_BYTES}",
            None,
            RouteProblem.CORRELATION_ID_TOO_LONG,
        )
    if REPLY_TOPIC not in found:
        if REPLY_PARTITION in found:
            return RouteError(
                f"reply route header {REPLY_PARTITION!r} without {REPLY_TOPIC!r}",
                correlation_id,
                RouteProblem.PARTITION_WITHOUT_TOPIC,
            )
        return ReplyRoute(None, None, correlation_id)
    try:
        name = header_text("reply route", REPLY_TOPIC, found[REPLY_TOPIC])
        if _TOPIC_NAME.fullmatch(name) is None or name in (".", ".."):
            raise CodecError(
                f"bad reply route header {REPLY_TOPIC!r}: {show(name)} is not a Kafka topic name"
            )
        partition = found.get(REPLY_PARTITION, "0")  # a topic without a partition: its partition 0
        number = header_text("reply route", REPLY_PARTITION, partition)
        return ReplyRoute(
            name, _number("reply route", REPLY_PARTITION, number, _INT32_MAX), correlation_id
        )
    except CodecError as exc:
        return RouteError(str(exc), correlation_id)


# --- dead letters -----------------------------------------------------------------


class DeadLetterReason(StrEnum):
    """Why a command was dead-lettered (the `dlq-reason` header)."""

    TOO_LARGE = "too-large"  # more bytes than an event may take
    UNDECODABLE = "undecodable"  # not a Command the codec can read
    MISROUTED = "misrouted"  # on another partition than murmur2 puts its workflow
    BAD_KEY = "bad-key"  # the record's key is not the command's workflow id
    BAD_HEADERS = "bad-headers"  # the record's headers cannot be read
    INTERNAL_ERROR = "internal-error"  # the processor failed on it (a bug): see its log


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """What the dead-letter headers say about a record: why, and where it was."""

    reason: DeadLetterReason
    error: str  # what was wrong, for people
    topic: str  # where the original record is
    partition: int
    offset: int
    truncated: str | None = None  # "<n> bytes": the record was cut to fit; see the original


def dead_letter_headers(d: DeadLetter) -> list[tuple[str, bytes]]:
    """The headers a dead letter adds to the original record's."""
    headers = [
        (DLQ_ERROR, d.error.encode()),
        (DLQ_REASON, d.reason.value.encode()),
        (DLQ_TOPIC, d.topic.encode()),
        (DLQ_PARTITION, str(d.partition).encode()),
        (DLQ_OFFSET, str(d.offset).encode()),
    ]
    if d.truncated is not None:
        headers.append((DLQ_TRUNCATED, d.truncated.encode()))
    return headers


def copyable_headers(headers: HeaderList) -> list[tuple[str, bytes | None]]:
    """The headers of `headers` that can be produced again (librdkafka takes a
    header name as C text: one with a NUL byte cannot be)."""
    return [
        (key, raw.encode() if isinstance(raw, str) else raw)
        for key, raw in headers
        if isinstance(key, str) and "\x00" not in key
    ]


def parse_dead_letter(headers: HeaderList | None) -> DeadLetter:
    """Read a dead letter's headers. Raises CodecError naming a missing or bad one."""
    raw = last_values(headers, _DEAD_LETTER_NAMES)
    missing = [name for name in _DLQ_NAMES if name not in raw]
    if missing:
        raise CodecError(f"missing dead-letter header {missing[0]!r}")
    found = {key: header_text("dead-letter", key, value) for key, value in raw.items()}
    try:
        reason = DeadLetterReason(found[DLQ_REASON])
    except ValueError:
        raise CodecError(
            f"bad dead-letter header 'dlq-reason': {show(found[DLQ_REASON])}"
        ) from None
    return DeadLetter(
        reason,
        found[DLQ_ERROR],
        found[DLQ_TOPIC],
        _number("dead-letter", DLQ_PARTITION, found[DLQ_PARTITION], _INT32_MAX),
        _number("dead-letter", DLQ_OFFSET, found[DLQ_OFFSET], _INT64_MAX),
        found.get(DLQ_TRUNCATED),
    )
