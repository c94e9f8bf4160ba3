"""Check what the processors wrote against the pure domain core.

The commands topic, read back in partition (offset) order, is what the
processors consumed. `replay` feeds it, per workflow in that order, through
`decide`/`evolve` with a deterministic id source, and walks the events and index
topics (read_committed) alongside:

- every event the core emits must be the next record of that workflow in the
  events topic: same key, seq, command id and payload, its parent the vid of the
  event before (the chain), headers agreeing with the body;
- likewise every index event (payload, registry, the vid it mirrors) and tombstone;
- nothing may be left over (a duplicate), nothing missing (a loss);
- every command record has exactly one reply (by correlation id), equal to the
  core's reply; a re-sent command id answered from the dedupe memory gets the
  reply of its first application, byte for byte;
- every record the core cannot decode (or that is on the wrong partition) has
  exactly one dead letter and a MALFORMED reply.

The core's ids differ from the processor's ULIDs, so the two are mapped onto each
other as the events are matched, and a command's `expected_vid` is translated
into the core's id before it is decided.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    EVENT_EPOCH,
    Accepted,
    Command,
    ErrorCode,
    Reply,
    WorkflowState,
    decide,
    encode_ulid,
    initial_state,
    reply_for,
)
from duroot_stream.kafka import headers as record_headers
from duroot_stream.processor import MAX_COMMAND_BYTES
from duroot_stream.wire import Codec, CodecError, Topics, parse_event_headers, partition_for

MAX_PROBLEMS = 30
_ULID = re.compile(r"[0-9A-HJKMNP-TV-Z]{26}")


@dataclass(frozen=True, slots=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


def read_topic(kafka: KafkaConfig, topic: str, timeout: float = 300.0) -> dict[int, list[Record]]:
    """Every committed record of `topic`, per partition in offset order."""
    consumer = Consumer(
        kafka.client(
            **{
                "group.id": f"reliability-read-{uuid.uuid4().hex}",  # assigned, never joined
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
            }
        )
    )
    try:
        partitions = list(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        out: dict[int, list[Record]] = {p: [] for p in partitions}
        pending = set()
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
            if high > low:
                pending.add(p)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic}: not at the end after {timeout:.0f} s")
            for m in consumer.consume(10_000, 1.0):
                error = m.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(m.partition())
                        continue
                    raise AssertionError(f"reading {topic}: {error}")
                p, offset = m.partition(), m.offset()
                assert p is not None and offset is not None, "a record has both"
                fields = {name: value or b"" for name, value in record_headers(m)}
                out[p].append(Record(p, offset, m.key(), m.value(), fields))
        return out
    finally:
        consumer.close()


def open_transactions(kafka: KafkaConfig, topics: list[str]) -> list[str]:
    """Partitions whose last stable offset is behind the high watermark."""
    committed = Consumer(
        kafka.client(**{"group.id": "reliability-lso", "isolation.level": "read_committed"})
    )
    uncommitted = Consumer(
        kafka.client(**{"group.id": "reliability-hw", "isolation.level": "read_uncommitted"})
    )
    try:
        behind = []
        for topic in topics:
            for p in committed.list_topics(topic, timeout=30).topics[topic].partitions:
                tp = TopicPartition(topic, p)
                lso = committed.get_watermark_offsets(tp, timeout=30)[1]
                hw = uncommitted.get_watermark_offsets(tp, timeout=30)[1]
                if lso != hw:
                    behind.append(f"{topic}[{p}] lso={lso} hw={hw}")
        return behind
    finally:
        committed.close()
        uncommitted.close()


def unconsumed_commands(kafka: KafkaConfig, group: str = "duroot-processor") -> list[str]:
    """Partitions of the command topic whose committed offset is not at the end."""
    topic = Topics(kafka.topic_prefix).commands
    consumer = Consumer(kafka.client(**{"group.id": group, "enable.auto.commit": False}))
    try:
        parts = [
            TopicPartition(topic, p)
            for p in consumer.list_topics(topic, timeout=30).topics[topic].partitions
        ]
        behind = []
        for tp in consumer.committed(parts, timeout=30):
            high = consumer.get_watermark_offsets(tp, timeout=30)[1]
            if tp.offset != high and not (tp.offset < 0 and high == 0):
                behind.append(f"{topic}[{tp.partition}] committed={tp.offset} end={high}")
        return behind
    finally:
        consumer.close()


class CountingIds:
    """The core's deterministic id source: ULIDs far above today's, counting up."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, previous: str) -> str:
        self.n += 1
        return encode_ulid((1 << 126) | self.n)


@dataclass
class Report:
    commands: int = 0  # records on the commands topic
    valid: int = 0
    malformed: int = 0
    resent: int = 0  # command records whose command id was seen before
    dedupe_replies: int = 0  # answered from the dedupe memory, identical to the first
    events_expected: int = 0
    events_found: int = 0
    lost: int = 0
    duplicated: int = 0
    index_expected: int = 0
    index_found: int = 0
    replies: int = 0
    missing_replies: int = 0
    extra_replies: int = 0
    dead_letters: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # reply error codes (and "ok")
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)

    def summary(self) -> str:
        return (
            f"commands={self.commands} (valid {self.valid}, malformed {self.malformed}, "
            f"re-sent ids {self.resent}, answered from dedupe {self.dedupe_replies}) "
            f"events expected={self.events_expected} found={self.events_found} "
            f"lost={self.lost} duplicated={self.duplicated} "
            f"index expected={self.index_expected} found={self.index_found} "
            f"replies={self.replies} missing={self.missing_replies} extra={self.extra_replies} "
            f"dead letters={self.dead_letters} outcomes={dict(sorted(self.errors.items()))} "
            f"problems={self.problem_count}"
        )


@dataclass
class _Stream:
    """One workflow's records in a topic, and how far the replay has matched them."""

    records: list[Record] = field(default_factory=list)
    at: int = 0

    def next(self) -> Record | None:
        if self.at >= len(self.records):
            return None
        self.at += 1
        return self.records[self.at - 1]


def replay(
    kafka: KafkaConfig,
    events: dict[int, list[Record]] | None = None,
    reply_topics: tuple[str, ...] = (),
) -> Report:
    """Read the five topics and check them against the domain core (module docstring).
    `events`: the events topic if already read; `reply_topics`: the clients' own."""
    topics = Topics(kafka.topic_prefix)
    commands = read_topic(kafka, topics.commands)
    if events is None:
        events = read_topic(kafka, topics.events)
    index = read_topic(kafka, topics.index)
    replies = read_topic(kafka, topics.replies)
    for name in reply_topics:  # replies are matched by correlation id, wherever they are
        for p, records in read_topic(kafka, name).items():
            replies.setdefault(p, []).extend(records)
    dlq = read_topic(kafka, topics.dlq)
    return check(commands, events, index, replies, dlq, len(commands), len(index))


def check(
    commands: dict[int, list[Record]],
    events: dict[int, list[Record]],
    index: dict[int, list[Record]],
    replies: dict[int, list[Record]],
    dlq: dict[int, list[Record]],
    partitions: int,
    index_partitions: int,
) -> Report:
    codec = Codec()
    report = Report()
    new_id = CountingIds()
    to_actual: dict[str, str] = {EVENT_EPOCH: EVENT_EPOCH}
    to_model: dict[str, str] = {EVENT_EPOCH: EVENT_EPOCH}

    # The processors' output, per workflow, in offset order.
    event_streams: dict[str, _Stream] = defaultdict(_Stream)
    found_events: Counter[tuple[str, str, object]] = Counter()
    for p, records in events.items():
        for r in records:
            key = (r.key or b"").decode(errors="replace")
            workflow = key.split("/", 1)[0]
            event_streams[workflow].records.append(r)
            if partition_for(workflow, partitions) != p:
                report.problem(f"event {key} on partition {p}, not its workflow's")
            if r.value is not None:
                report.events_found += 1
                found_events[(workflow, key, _event_body(codec, r))] += 1
    index_streams: dict[str, _Stream] = defaultdict(_Stream)
    for p, records in index.items():
        for r in records:
            workflow = (r.key or b"").decode(errors="replace")
            index_streams[workflow].records.append(r)
            report.index_found += r.value is not None
            if partition_for(workflow, index_partitions) != p:
                report.problem(f"index record of {workflow} on partition {p}")
    reply_by_corr: dict[bytes, list[Record]] = defaultdict(list)
    for records in replies.values():
        for r in records:
            reply_by_corr[r.headers.get("correlation-id", b"")].append(r)
            report.replies += 1
    dead_by_origin: dict[tuple[int, int], list[Record]] = defaultdict(list)
    for records in dlq.values():
        for r in records:
            origin = (int(r.headers["dlq-partition"]), int(r.headers["dlq-offset"]))
            dead_by_origin[origin].append(r)
            report.dead_letters += 1

    # The core's replay, command record by command record.
    states: dict[str, WorkflowState] = {}
    expected_events: Counter[tuple[str, str, object]] = Counter()
    first_reply: dict[str, bytes] = {}  # command id -> the reply bytes of its application
    seen_ids: set[str] = set()
    answered: set[bytes] = set()
    # A client that sends a command again (no reply in time) keeps its command id and
    # correlation id: then one reply per record, in the same order.
    per_corr = Counter(r.headers.get("correlation-id", b"") for rs in commands.values() for r in rs)
    nth: Counter[bytes] = Counter()
    for p in sorted(commands):
        for r in commands[p]:
            report.commands += 1
            corr = r.headers.get("correlation-id", b"")
            answered.add(corr)
            found = reply_by_corr.get(corr, [])
            i, nth[corr] = nth[corr], nth[corr] + 1
            if len(found) != per_corr[corr]:
                report.problem(
                    f"command {p}@{r.offset} (corr {corr!r}): {len(found)} replies "
                    f"for {per_corr[corr]} records"
                )
                if len(found) < per_corr[corr]:
                    report.missing_replies += i >= len(found)
                else:
                    report.extra_replies += (len(found) - per_corr[corr]) * (i == 0)
            reply_record = found[i] if i < len(found) else None
            actual_reply = codec.decode_reply(reply_record.value) if reply_record else None
            dead = dead_by_origin.pop((p, r.offset), [])
            command = _decode(codec, r, partitions)
            if command is None:  # malformed: dead-lettered and answered MALFORMED
                report.malformed += 1
                report.errors["MALFORMED"] += 1
                if len(dead) != 1 or not _dead_letter_of(dead[0], r):
                    report.problem(f"malformed {p}@{r.offset}: {len(dead)} matching dead letters")
                if actual_reply is not None and actual_reply.error is not ErrorCode.MALFORMED:
                    report.problem(f"malformed {p}@{r.offset} answered {actual_reply}")
                continue
            report.valid += 1
            if dead:
                report.problem(f"valid command {p}@{r.offset} dead-lettered")
            if command.command_id in seen_ids:
                report.resent += 1
            seen_ids.add(command.command_id)

            wf = command.workflow_id
            state = states.get(wf) or initial_state(wf)
            model_command = Command(
                command.command_id,
                wf,
                to_model.get(command.expected_vid, command.expected_vid),
                command.issued_at,
                command.body,
            )
            decision = decide(state, model_command, new_id)
            expected = reply_for(model_command, decision)
            if isinstance(decision, Accepted) and not decision.duplicate:
                states[wf] = decision.state
                _match_events(decision, event_streams[wf], codec, to_actual, to_model, report)
                _match_index(decision, index_streams[wf], codec, to_actual, report)
                for e in decision.events:
                    expected_events[(wf, e.key, (e.seq, e.command_id, e.payload))] += 1
                report.events_expected += len(decision.events)
                report.index_expected += len(decision.index_events)
            expected = _in_actual_ids(expected, to_actual)
            report.errors[expected.error.value if expected.error else "ok"] += 1
            if actual_reply is None:
                continue
            if actual_reply != expected:
                report.problem(
                    f"{type(command.body).__name__} {command.command_id} on {wf} "
                    f"({p}@{r.offset}): reply {actual_reply}, the core says {expected}"
                )
            assert reply_record is not None
            if isinstance(decision, Accepted) and decision.duplicate:
                report.dedupe_replies += 1
                if reply_record.value != first_reply.get(command.command_id):
                    report.problem(f"re-sent {command.command_id}: reply differs from the first")
            elif isinstance(decision, Accepted) and decision.events:
                first_reply[command.command_id] = reply_record.value or b""

    # Leftovers: output nobody asked for.
    for wf, stream in event_streams.items():
        left = len(stream.records) - stream.at
        if left:
            report.problem(f"{wf}: {left} event records beyond what the core emits")
    for wf, stream in index_streams.items():
        left = len(stream.records) - stream.at
        if left:
            report.problem(f"{wf}: {left} index records beyond what the core emits")
    for corr in set(reply_by_corr) - answered:
        report.extra_replies += len(reply_by_corr[corr])
        report.problem(f"reply to a correlation id no command record has: {corr!r}")
    for origin, dead in dead_by_origin.items():
        report.problem(f"{len(dead)} dead letters for {origin}, not a command record")
    report.lost = sum((expected_events - found_events).values())
    report.duplicated = sum((found_events - expected_events).values())
    return report


def _dead_letter_of(dead: Record, r: Record) -> bool:
    """The original key and bytes; or, marked `dlq-truncated`, their beginnings."""
    if "dlq-truncated" in dead.headers:
        return (r.key or b"").startswith(dead.key or b"") and (r.value or b"").startswith(
            dead.value or b""
        )
    return dead.key == r.key and dead.value == r.value


def _decode(codec: Codec, r: Record, partitions: int) -> Command | None:
    """The command, or None where the processor must dead-letter the record."""
    if len(r.value or b"") > MAX_COMMAND_BYTES:
        return None
    try:
        command = codec.decode_command(r.value or b"")
    except CodecError:
        return None
    if (r.key or b"") != command.workflow_id.encode():
        return None  # bad-key: a command is keyed by its workflow id
    if partition_for(command.workflow_id, partitions) != r.partition:
        return None
    return command


def _event_body(codec: Codec, r: Record) -> object:
    try:
        e = codec.decode_event(r.value)
    except CodecError as exc:
        return f"undecodable: {exc}"
    return (e.seq, e.command_id, e.payload)


def _match_events(
    decision: Accepted,
    stream: _Stream,
    codec: Codec,
    to_actual: dict[str, str],
    to_model: dict[str, str],
    report: Report,
) -> None:
    for e in decision.events:
        r = stream.next()
        where = f"{e.workflow_id}/{e.seq} (command {e.command_id})"
        if r is None:
            report.problem(f"event {where}: missing")
            return
        if r.value is None:
            report.problem(f"event {where}: a tombstone for {r.key!r} instead")
            continue
        actual = codec.decode_event(r.value)
        parent = to_actual.get(e.parent)
        same = (
            r.key == e.key.encode()
            and actual.seq == e.seq
            and actual.command_id == e.command_id
            and actual.payload == e.payload
            and actual.parent == parent
        )
        if not same:
            report.problem(f"event {where}: found {actual} at offset {r.offset}, core {e}")
        if not actual.event_id > actual.parent:
            report.problem(f"event {where}: id {actual.event_id} not above parent")
        h = parse_event_headers(list(r.headers.items()))
        if (h.vid, h.parent, h.seq, h.command_id, h.workflow_id) != (
            actual.event_id,
            actual.parent,
            actual.seq,
            actual.command_id,
            actual.workflow_id,
        ):
            report.problem(f"event {where}: headers {h} disagree with the body")
        if e.event_id in to_actual or actual.event_id in to_model:
            report.problem(f"event {where}: vid {actual.event_id} seen twice")
        to_actual[e.event_id] = actual.event_id
        to_model[actual.event_id] = e.event_id
    for key in decision.deleted_keys:
        r = stream.next()
        if r is None or r.value is not None or r.key != key.encode():
            report.problem(f"tombstone {key}: found {r and (r.key, r.offset)}")


def _match_index(
    decision: Accepted, stream: _Stream, codec: Codec, to_actual: dict[str, str], report: Report
) -> None:
    for e in decision.index_events:
        r = stream.next()
        where = f"index {type(e.payload).__name__} of {e.workflow_id}"
        if r is None or r.value is None:
            report.problem(f"{where}: found {r and r.offset}")
            continue
        actual = codec.decode_index_event(r.value)
        if (
            actual.payload != e.payload
            or actual.registry_id != e.registry_id
            or actual.workflow_event_id != to_actual.get(e.workflow_event_id)
        ):
            report.problem(f"{where}: found {actual}, core {e}")
    if decision.index_tombstone:
        r = stream.next()
        if r is None or r.value is not None:
            report.problem(f"index tombstone of {decision.state.workflow_id}: found {r}")


def _in_actual_ids(reply: Reply, to_actual: dict[str, str]) -> Reply:
    """The core's reply with the core's vids replaced by the processor's."""
    vid = None if reply.vid is None else to_actual.get(reply.vid, f"<unmapped {reply.vid}>")
    message = _ULID.sub(lambda m: to_actual.get(m.group(0), m.group(0)), reply.message)
    return Reply(reply.command_id, reply.workflow_id, reply.ok, vid, reply.error, message)
