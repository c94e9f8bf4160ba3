"""The headers: every name and its parser. Event headers round-trip and name
what is missing or bad; the reply route says what is wrong instead of
ignoring it; dead-letter headers round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from duroot_stream.domain import DuRootCommitted, WorkflowEvent
from duroot_stream.wire import CodecError, event_headers
from duroot_stream.wire.headers import (
    CORRELATION_ID,
    EVENT_TYPES,
    REPLY_PARTITION,
    REPLY_TOPIC,
    ROUTE_HEADER_NAMES,
    DeadLetter,
    DeadLetterReason,
    EventHeaders,
    HeaderList,
    ReplyRoute,
    RouteError,
    dead_letter_headers,
    last_values,
    parse_dead_letter,
    parse_event_headers,
    parse_reply_route,
    reply_route_headers,
)
from tests.wire.test_codec import EVENTS, ID1, ID2, ID3, WF

# --- event headers -----------------------------------------------------------------


def test_event_headers_round_trip() -> None:
    for event in EVENTS:
        headers = event_headers(event)
        assert [k for k, _ in headers] == [
            "event-type",
            "workflow-id",
            "vid",
            "parent",
            "seq",
            "command-id",
        ]
        assert all(isinstance(v, bytes) for _, v in headers)
        assert parse_event_headers(headers) == EventHeaders(
            event_type=EVENT_TYPES[type(event.payload)],
            workflow_id=event.workflow_id,
            vid=event.event_id,
            parent=event.parent,
            seq=event.seq,
            command_id=event.command_id,
        )


def test_event_header_values() -> None:
    headers = dict(event_headers(WorkflowEvent(ID2, ID1, WF, 1234, ID3, DuRootCommitted())))
    assert headers == {
        "event-type": b"COMMITTED",
        "workflow-id": WF.encode(),
        "vid": ID2.encode(),
        "parent": ID1.encode(),
        "seq": b"1234",
        "command-id": ID3.encode(),
    }
    assert set(EVENT_TYPES.values()) == {"STARTED", "UPDATED", "COMPLETED", "COMMITTED"}


def test_other_headers_are_ignored_and_the_last_counts() -> None:
    headers = [("traceparent", b"00-abc"), *event_headers(EVENTS[1]), ("seq", b"8")]
    parsed = parse_event_headers(headers)
    assert parsed.seq == 8
    assert parsed.vid == EVENTS[1].event_id


@pytest.mark.parametrize(
    "name", ["event-type", "workflow-id", "vid", "parent", "seq", "command-id"]
)
def test_missing_event_header(name: str) -> None:
    headers = [(k, v) for k, v in event_headers(EVENTS[1]) if k != name]
    with pytest.raises(CodecError, match=f"missing event header '{name}'"):
        parse_event_headers(headers)


def test_no_event_headers() -> None:
    with pytest.raises(CodecError, match="missing event header 'event-type'"):
        parse_event_headers(None)
    with pytest.raises(CodecError, match="missing event header"):
        parse_event_headers([])


@pytest.mark.parametrize(
    "name, value",
    [
        ("event-type", b"STARTED2"),
        ("seq", b"-1"),
        ("seq", b"1e3"),
        ("seq", "²".encode()),
        ("seq", b""),
        ("workflow-id", b"nope"),
        ("vid", b"x"),
        ("parent", b""),
        ("command-id", b"\xff"),
        ("vid", None),
    ],
)
def test_bad_event_header(name: str, value: bytes | None) -> None:
    headers = [(k, value if k == name else v) for k, v in event_headers(EVENTS[1])]
    with pytest.raises(CodecError, match=f"'{name}'"):
        parse_event_headers(headers)


# --- reply route ------------------------------------------------------------------


def route_of(headers: HeaderList | None) -> ReplyRoute | RouteError:
    """The route a record's headers ask for (the last value of each route header)."""
    return parse_reply_route(last_values(headers, ROUTE_HEADER_NAMES))


def test_reply_route_round_trip() -> None:
    headers = reply_route_headers("duroot.replies", 3, ID1)
    assert headers == [
        ("reply-topic", b"duroot.replies"),
        ("reply-partition", b"3"),
        ("correlation-id", ID1.encode()),
    ]
    assert route_of(headers) == ReplyRoute("duroot.replies", 3, ID1.encode())


def test_no_route_headers_is_the_replies_topic() -> None:
    assert route_of(None) == ReplyRoute(None, None, None)
    assert route_of([("traceparent", b"00-abc")]) == ReplyRoute(None, None, None)
    only_correlation: HeaderList = [(CORRELATION_ID, b"corr-1")]
    assert route_of(only_correlation) == ReplyRoute(None, None, b"corr-1")


def test_reply_route_defaults_and_repeats() -> None:
    assert route_of([(REPLY_TOPIC, "mine")]) == ReplyRoute("mine", 0, None)
    repeated: HeaderList = [
        (REPLY_TOPIC, b"first"),
        (REPLY_PARTITION, b"1"),
        (REPLY_TOPIC, b"second"),
        (REPLY_PARTITION, b"2"),
        (CORRELATION_ID, b""),  # empty: no correlation id
    ]
    assert route_of(repeated) == ReplyRoute("second", 2, None)


@pytest.mark.parametrize(
    "headers, message",
    [
        ([(REPLY_TOPIC, b"r"), (REPLY_PARTITION, b"x")], "'reply-partition': 'x' is not a decimal"),
        ([(REPLY_TOPIC, b"r"), (REPLY_PARTITION, b"-1")], "'reply-partition': '-1' is not"),
        ([(REPLY_TOPIC, b"r"), (REPLY_PARTITION, b"2147483648")], "'reply-partition'"),
        ([(REPLY_TOPIC, b"r"), (REPLY_PARTITION, None)], "'reply-partition' has no value"),
        ([(REPLY_TOPIC, b"\xff")], "'reply-topic' is not UTF-8"),
        ([(REPLY_TOPIC, b"")], "'reply-topic': '' is not a Kafka topic name"),
        ([(REPLY_TOPIC, b"a b")], "'reply-topic': 'a b' is not a Kafka topic name"),
        ([(REPLY_TOPIC, b"..")], "'reply-topic': '..' is not a Kafka topic name"),
        ([(REPLY_TOPIC, b"r" * 250)], "is not a Kafka topic name"),
        ([(REPLY_TOPIC, None)], "'reply-topic' has no value"),
        ([(REPLY_PARTITION, b"1")], "'reply-partition' without 'reply-topic'"),
    ],
)
def test_a_route_that_cannot_be_followed_says_why(headers: HeaderList, message: str) -> None:
    route = route_of([*headers, (CORRELATION_ID, b"corr-1")])
    assert isinstance(route, RouteError)
    assert message in route.message
    assert route.correlation_id == b"corr-1"  # the sender can still be answered


# --- dead letters -----------------------------------------------------------------


@pytest.mark.parametrize("truncated", [None, "1000123 bytes"])
def test_dead_letter_headers_round_trip(truncated: str | None) -> None:
    letter = DeadLetter(
        DeadLetterReason.MISROUTED, "arrived on 2", "duroot.commands", 1, 42, truncated
    )
    headers = dead_letter_headers(letter)
    names = ["dlq-error", "dlq-reason", "dlq-topic", "dlq-partition", "dlq-offset"]
    assert [k for k, _ in headers] == names + (["dlq-truncated"] if truncated else [])
    assert dict(headers)["dlq-reason"] == b"misrouted"
    original: HeaderList = [("reply-topic", b"r")]
    assert parse_dead_letter([*original, *headers]) == letter


def test_dead_letter_reasons_are_the_documented_ones() -> None:
    # What other languages are told (docs/contract.md, asyncapi.yaml) is what is written.
    root = Path(__file__).resolve().parents[2]
    contract = (root / "docs" / "contract.md").read_text(encoding="utf-8")
    asyncapi = (root / "asyncapi.yaml").read_text(encoding="utf-8")
    for reason in DeadLetterReason:
        assert f"`{reason.value}`" in contract, reason
    enum_line = next(line for line in asyncapi.splitlines() if "enum: [undecodable" in line)
    listed = {r.strip() for r in enum_line.split("[", 1)[1].rstrip("]").split(",")}
    assert listed == {r.value for r in DeadLetterReason}


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("dlq-reason", b"lost", "bad dead-letter header 'dlq-reason': 'lost'"),
        ("dlq-partition", b"p", "bad dead-letter header 'dlq-partition'"),
        ("dlq-offset", b"-1", "bad dead-letter header 'dlq-offset'"),
        ("dlq-error", b"\xff", "dead-letter header 'dlq-error' is not UTF-8"),
    ],
)
def test_bad_dead_letter_header(name: str, value: bytes, message: str) -> None:
    letter = DeadLetter(DeadLetterReason.UNDECODABLE, "x", "duroot.commands", 0, 7)
    headers = [(k, value if k == name else v) for k, v in dead_letter_headers(letter)]
    with pytest.raises(CodecError, match=message):
        parse_dead_letter(headers)


def test_missing_dead_letter_header() -> None:
    letter = DeadLetter(DeadLetterReason.TOO_LARGE, "x", "duroot.commands", 0, 7)
    headers = [(k, v) for k, v in dead_letter_headers(letter) if k != "dlq-offset"]
    with pytest.raises(CodecError, match="missing dead-letter header 'dlq-offset'"):
        parse_dead_letter(headers)
