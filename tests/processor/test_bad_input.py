"""Bad input against one processor process: malformed values, keys and headers
interleaved with valid commands.

It shows: the same processor process from start to end (never restarted), every
valid command applied exactly once with the right reply, every bad record answered
or dead-lettered with its reason, and the events and index topics holding only what
the processor meant to write there. Small in `make test`; `-m slow` runs it larger.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuRootStarted, ErrorCode, IndexStarted, Init
from duroot_stream.ids import new_ulid
from duroot_stream.processor import MAX_COMMAND_BYTES
from duroot_stream.wire import Codec, Topics, parse_dead_letter, parse_event_headers, partition_for
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import PARTITIONS, Requester, command, new_workflow_id, setup_topics
from tests.reliability.supervisor import ProcessorProcess

pytestmark = pytest.mark.broker

Headers = list[tuple[str, str | bytes | None]]
INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
ROUTE_NAMES = ("reply-topic", "reply-partition", "correlation-id")


@dataclass
class Case:
    """One record sent, and what must come of it."""

    kind: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    applied: str | None  # the workflow id its Init must start, or None: dead-lettered
    command_id: str | None = None
    reason: str | None = None  # the dead letter's reason
    correlation: bytes | None = None  # a MALFORMED reply is expected with this id
    offset: int = -1


def _route(topics: Topics, correlation: bytes) -> Headers:
    return [
        ("reply-topic", topics.replies.encode()),
        ("reply-partition", b"0"),
        ("correlation-id", correlation),
    ]


def _headers(m: Message) -> list[tuple[str, bytes | str | None]]:
    raw = m.headers() or []
    return list(raw.items()) if isinstance(raw, dict) else list(raw)


def _valid(kind: str, headers: Headers | None, topics: Topics) -> Case:
    wf = new_workflow_id()
    cmd = command(wf, INIT)
    route = _route(topics, cmd.command_id.encode()) if headers is None else headers
    return Case(
        kind,
        partition_for(wf, PARTITIONS),
        wf.encode(),
        Codec().encode_command(cmd),
        route,
        wf,
        cmd.command_id,
    )


def _dead(kind: str, reason: str, partition: int, key: bytes | None, value: bytes | None) -> Case:
    corr = f"bad-{new_ulid()}".encode()
    return Case(kind, partition, key, value, [], None, reason=reason, correlation=corr)


def bad_cases(topics: Topics) -> list[Case]:
    codec = Codec()
    wf = new_workflow_id()
    home = partition_for(wf, PARTITIONS)
    good = codec.encode_command(command(wf, INIT))
    cases = [
        _dead("value-empty", "undecodable", home, wf.encode(), b""),
        _dead("value-null", "undecodable", home, wf.encode(), None),
        _dead("value-random", "undecodable", home, wf.encode(), bytes(range(7, 90))),
        _dead("value-truncated", "undecodable", home, wf.encode(), good[:-5]),
        _dead("value-fingerprint", "undecodable", home, wf.encode(), b"\xc3\x01" + b"\0" * 8),
        _dead("value-too-large", "too-large", home, wf.encode(), b"\0" * (MAX_COMMAND_BYTES + 1)),
        _dead("value-misrouted", "misrouted", (home + 1) % PARTITIONS, wf.encode(), good),
        _dead("key-null", "bad-key", home, None, good),
        _dead("key-huge", "bad-key", home, b"k" * 100_000, good),
        _dead("key-not-uuid", "bad-key", home, b"not a uuid", good),
        _dead("key-other-workflow", "bad-key", home, new_workflow_id().encode(), good),
    ]
    for case in cases:
        assert case.correlation is not None
        case.headers = _route(topics, case.correlation)
    own = [topics.commands, topics.events, topics.index, topics.dlq]
    garbage = {
        "nul": b"a\x00b",
        "non-utf8": b"\xff\xfe",
        "empty": b"",
        "huge": b"9" * 100_000,
        "negative": b"-1",
        "out-of-range": b"999999",
        **{f"topic-{name.rsplit('.', 1)[-1]}": name.encode() for name in own},
    }
    for name in ROUTE_NAMES:
        for label, value in garbage.items():
            case = _valid(f"header-{name}-{label}", [], topics)
            assert case.command_id is not None
            route = dict(_route(topics, case.command_id.encode()))
            route[name] = value
            case.headers = list(route.items())
            cases.append(case)
    many = _valid("headers-thousands", None, topics)
    many.headers = [*many.headers, *((f"x-{i}", b"v") for i in range(3_000))]
    duplicated = _valid("headers-duplicates", None, topics)
    duplicated.headers = [("reply-topic", topics.events.encode()), *duplicated.headers]
    ours = _valid("headers-ours-garbage", None, topics)
    ours.headers = [
        *ours.headers,
        ("dlq-reason", b"\x00"),
        ("event-type", b"\xff"),
        ("vid", b"v" * 50_000),
        ("reply-route-error", None),
        ("reply-topic\x00x", b"y"),
    ]
    binary = _valid("headers-binary-values", None, topics)
    binary.headers = [*binary.headers, *((f"b-{i}", bytes(range(256))) for i in range(50))]
    return [*cases, many, duplicated, ours, binary]


@pytest.fixture
def processor(kafka: KafkaConfig, tmp_path: Path) -> Iterator[ProcessorProcess]:
    setup_topics(kafka)
    proc = ProcessorProcess("bad-input", kafka.bootstrap_servers, kafka.topic_prefix, tmp_path)
    proc.start()
    try:
        yield proc
    finally:
        proc.close()


def _send(kafka: KafkaConfig, cases: list[Case]) -> None:
    producer = Producer(
        {"bootstrap.servers": kafka.bootstrap_servers, "message.max.bytes": 2_000_000}
    )
    topic = Topics(kafka.topic_prefix).commands

    def delivered(case: Case) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(error: KafkaError | None, message: Message) -> None:
            assert error is None, f"{case.kind}: {error}"
            case.offset = message.offset() or 0

        return on_delivery

    for case in cases:
        producer.produce(
            topic,
            case.value,
            case.key,
            partition=case.partition,
            headers=case.headers,
            on_delivery=delivered(case),
        )
    assert producer.flush(30) == 0


@pytest.mark.parametrize(
    "valid, rounds",
    [pytest.param(20, 1, id="small"), pytest.param(400, 8, id="large", marks=pytest.mark.slow)],
)
def test_bad_input_never_stops_misroutes_or_corrupts(
    kafka: KafkaConfig,
    processor: ProcessorProcess,
    valid: int,
    rounds: int,
    capsys: pytest.CaptureFixture[str],
) -> None:
    topics = Topics(kafka.topic_prefix)
    requester = Requester(kafka)
    try:  # ready: a first command answered
        requester.request(command(new_workflow_id(), INIT), timeout=90)
    finally:
        requester.close()
    assert processor.process is not None
    pid = processor.process.pid
    topics_before = {t: len(read_all(kafka.bootstrap_servers, t)) for t in (topics.dlq,)}
    rng = random.Random(12)
    cases = [_valid("valid", None, topics) for _ in range(valid)]
    for _ in range(rounds):
        cases.extend(bad_cases(topics))
    rng.shuffle(cases)
    _send(kafka, cases)

    applied = {c.command_id: c for c in cases if c.applied is not None}
    dead = [c for c in cases if c.applied is None]

    def replies() -> dict[bytes, list[Message]]:
        found: dict[bytes, list[Message]] = {}
        for m in read_all(kafka.bootstrap_servers, topics.replies):
            found.setdefault(m.key() or b"", []).append(m)
            for k, v in _headers(m):
                if k == "correlation-id" and isinstance(v, bytes) and v.startswith(b"bad-"):
                    found.setdefault(v, []).append(m)
        return found

    def all_answered() -> dict[bytes, list[Message]]:
        found = replies()
        wanted = [c.encode() for c in applied if c] + [c.correlation or b"" for c in dead]
        return found if all(w in found for w in wanted) else {}

    found: dict[bytes, list[Message]] = wait_until(
        all_answered, timeout=120, interval=1, what="every record answered"
    )
    assert processor.running and processor.process.pid == pid and processor.starts == 1

    codec = Codec()
    for command_id, case in applied.items():
        assert command_id is not None
        [reply] = found[command_id.encode()]
        answer = codec.decode_reply(reply.value())
        assert answer.ok and answer.command_id == command_id, case.kind
        assert answer.workflow_id == case.applied, case.kind
    letters = {
        (d.partition, d.offset): d
        for d in (
            parse_dead_letter(_headers(m)) for m in read_all(kafka.bootstrap_servers, topics.dlq)
        )
    }
    assert len(letters) == len(dead) + topics_before[topics.dlq]
    for case in dead:
        letter = letters[(case.partition, case.offset)]
        assert letter.reason.value == case.reason, case.kind
        [reply] = found[case.correlation or b""]
        assert codec.decode_reply(reply.value()).error is ErrorCode.MALFORMED, case.kind
    # Events and index: only what the processor meant, once per applied command.
    started: Counter[str] = Counter()
    for m in read_all(kafka.bootstrap_servers, topics.events):
        h, event = parse_event_headers(_headers(m)), codec.decode_event(m.value())
        assert isinstance(event.payload, DuRootStarted) and h.workflow_id == event.workflow_id
        started[event.workflow_id] += 1
    workflows = {c.applied for c in applied.values() if c.applied is not None}
    assert all(started[w] == 1 for w in workflows), "every valid command applied once"
    assert len(started) == len(workflows) + 1  # and the readiness probe
    index = [
        codec.decode_index_event(m.value()) for m in read_all(kafka.bootstrap_servers, topics.index)
    ]
    assert all(isinstance(e.payload, IndexStarted) for e in index) and len(index) == len(started)

    kinds = Counter(c.kind.split("-", 1)[0] for c in cases)
    reasons = Counter(c.reason for c in dead)
    with capsys.disabled():
        print(
            f"\n[bad input] records={len(cases)} by kind={dict(kinds)} "
            f"dead letters by reason={dict(reasons)} applied={len(applied)} restarts=0"
        )
