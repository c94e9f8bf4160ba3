"""The reliability verifier on hand-made topics: a history as the contract has it
passes, and each mistake a processor could make is found. Its own pieces against
known answers: Kafka's murmur2 test vectors, fastavro's fingerprints. (The records
are made with the project's codec: test data, not the verifier's decoder.)"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

from duroot_stream.domain import (
    NO_VC,
    Append,
    Command,
    CommandBody,
    Commit,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    ErrorCode,
    EventPayload,
    IndexCompleted,
    IndexPayload,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
    encode_ulid,
)
from duroot_stream.wire import Codec, event_headers, partition_for
from tests.reliability.contract_wire import murmur2, partition_of, record_type
from tests.reliability.topic_reads import Record
from tests.reliability.verdicts import Report
from tests.reliability.verify import check

PARTITIONS = 3
CODEC = Codec()
WF = str(uuid.UUID(int=11, version=4))
REGISTRY = str(uuid.UUID(int=12, version=4))
P = partition_for(WF, PARTITIONS)
Topic = dict[int, list[Record]]
Headers = dict[str, str]


def ulid(n: int) -> str:
    return encode_ulid((1 << 120) | n)


@dataclass
class Topics:
    """What a processor wrote for the commands sent, built up command by command."""

    commands: Topic = field(default_factory=lambda: {p: [] for p in range(PARTITIONS)})
    events: Topic = field(default_factory=lambda: {p: [] for p in range(PARTITIONS)})
    index: Topic = field(default_factory=lambda: {p: [] for p in range(PARTITIONS)})
    replies: Topic = field(default_factory=lambda: {0: []})
    dlq: Topic = field(default_factory=lambda: {0: []})
    vid: str = "0" * 26
    seq: int = 0

    def command(self, n: int, body: CommandBody, expected: str = NO_VC, cid: int = -1) -> Command:
        cmd = Command(ulid(1000 + (n if cid < 0 else cid)), WF, expected, 0, body)
        self.add(self.commands, P, WF, CODEC.encode_command(cmd), {"correlation-id": f"c{n}"})
        return cmd

    def events_of(self, cmd: Command, *payloads: EventPayload) -> list[str]:
        ids = []
        for payload in payloads:
            e = WorkflowEvent(ulid(self.seq + 1), self.vid, WF, self.seq, cmd.command_id, payload)
            headers = {k: (v or b"").decode() for k, v in event_headers(e)}
            self.add(self.events, P, e.key, CODEC.encode_event(e), headers)
            self.vid, self.seq = e.event_id, self.seq + 1
            ids.append(e.event_id)
        return ids

    def index_of(self, n: int, mirrored: str, payload: IndexPayload) -> None:
        e = WorkflowIndexEvent(ulid(500 + n), REGISTRY, WF, mirrored, payload)
        self.add(self.index, P, WF, CODEC.encode_index_event(e), {})

    def reply(self, n: int, answer: Reply) -> None:
        self.add(self.replies, 0, "", CODEC.encode_reply(answer), {"correlation-id": f"c{n}"})

    def malformed(self, n: int, value: bytes, reason: str) -> None:
        offset = len(self.commands[P])
        self.add(self.commands, P, WF, value, {"correlation-id": f"c{n}"})
        dead = {"dlq-reason": reason, "dlq-partition": str(P), "dlq-offset": str(offset)}
        self.add(self.dlq, 0, WF, value, dead)
        self.reply(n, Reply(None, None, False, None, ErrorCode.MALFORMED, "not a command"))

    def add(self, topic: Topic, p: int, key: str, value: bytes | None, headers: Headers) -> None:
        raw = {k: v.encode() for k, v in headers.items()}
        topic[p].append(Record(p, len(topic[p]), key.encode(), value, raw))

    def check(self) -> Report:
        t = self
        return check(t.commands, t.events, t.index, t.replies, t.dlq, PARTITIONS, PARTITIONS)


def history() -> Topics:
    """Init; an Append of two paths; an Append with a stale vid; the first Append again
    (same command id: answered from the dedupe memory); a Commit; a record that is no
    command."""
    t = Topics()
    init = t.command(0, Init(REGISTRY, "/g", "h", "/r"))
    [started] = t.events_of(init, DuRootStarted(REGISTRY, "/g", "h", "/r"))
    t.index_of(0, started, IndexStarted("/g", "h", "/r"))
    t.reply(0, Reply(init.command_id, WF, True, started, None, ""))
    append = t.command(1, Append((PathUsage("a", 1), PathUsage("b", 2))), expected=started)
    *_, appended = t.events_of(append, DuUpdated("a", 1), DuUpdated("b", 2))
    t.reply(1, Reply(append.command_id, WF, True, appended, None, ""))
    stale = t.command(2, append.body, expected=started)
    conflict = f"version conflict: stored vid {appended}, expected vid {started}"
    t.reply(2, Reply(stale.command_id, WF, False, None, ErrorCode.VERSION_CONFLICT, conflict))
    t.command(3, append.body, expected=started, cid=1)  # command 1 again
    t.reply(3, Reply(append.command_id, WF, True, appended, None, ""))
    commit = t.command(4, Commit(), expected=appended)
    completed, committed = t.events_of(commit, DuRootCompleted(0, ""), DuRootCommitted())
    t.index_of(4, completed, IndexCompleted(0, ""))
    t.reply(4, Reply(commit.command_id, WF, True, committed, None, ""))
    t.malformed(5, b"\xc3\x01 not a command", "undecodable")
    return t


def test_a_history_as_the_contract_has_it_passes() -> None:
    report = history().check()
    assert report.problems == [] and report.problem_count == 0
    assert (report.commands, report.valid, report.malformed, report.dead_letters) == (6, 5, 1, 1)
    events = (report.events_expected, report.events_found, report.lost, report.duplicated)
    assert events == (5, 5, 0, 0)
    assert (report.index_expected, report.resent, report.dedupe_replies) == (2, 1, 1)
    assert dict(report.errors) == {"ok": 4, "VERSION_CONFLICT": 1, "MALFORMED": 1}
    assert report.dead_letter_reasons == {"c5": "undecodable"}


def _set(topic: Topic, p: int, i: int, **changes: object) -> None:
    topic[p][i] = replace(topic[p][i], **changes)  # type: ignore[arg-type]


def _answer(t: Topics, n: int, **changes: object) -> None:
    """Reply `n` with its fields changed."""
    [i] = [i for i, r in enumerate(t.replies[0]) if r.headers["correlation-id"] == f"c{n}".encode()]
    old = CODEC.decode_reply(t.replies[0][i].value)
    _set(t.replies, 0, i, value=CODEC.encode_reply(replace(old, **changes)))  # type: ignore[arg-type]


def _negative_branch_applied(t: Topics) -> None:
    """A command whose union index is -1 (fastavro would read the last branch, Delete),
    taken for a Delete by the processor: answered, not dead-lettered."""
    value = CODEC.encode_command(Command(ulid(1099), WF, NO_VC, 0, Commit()))
    t.add(t.commands, P, WF, value[:-1] + b"\x01", {"correlation-id": "c9"})
    t.reply(9, Reply(ulid(1099), WF, False, None, ErrorCode.CONFLICT_STATE, ""))


MISTAKES: dict[str, tuple[Callable[[Topics], object], str]] = {
    "an event lost": (lambda t: t.events[P].pop(2), "lost=1"),
    "an event twice": (lambda t: t.events[P].append(t.events[P][-1]), "duplicated=1"),
    "an event elsewhere": (
        lambda t: t.events[(P + 1) % PARTITIONS].append(t.events[P].pop()),
        "not its workflow's",
    ),
    "a broken chain": (
        lambda t: _set(t.events, P, 2, value=t.events[P][1].value),
        "expected DuUpdated",
    ),
    "a wrong outcome": (
        lambda t: _answer(t, 2, error=ErrorCode.CONFLICT_STATE),
        "expected {",
    ),
    "a conflict naming other vids": (
        lambda t: _answer(t, 2, message="version conflict"),
        "VERSION_CONFLICT message",
    ),
    "a dedupe reply unlike the first": (lambda t: _answer(t, 3, message="again"), "re-sent"),
    "a wrong dead-letter reason": (
        lambda t: _set(t.dlq, 0, 0, headers={**t.dlq[0][0].headers, "dlq-reason": b"misrouted"}),
        "the contract says 'undecodable'",
    ),
    "no dead letter": (lambda t: t.dlq[0].pop(), "0 matching dead letters"),
    "an index record missing": (lambda t: t.index[P].pop(), "index DuRootCompleted"),
    "a negative union branch applied": (_negative_branch_applied, "0 matching dead letters"),
}


@pytest.mark.parametrize("name", list(MISTAKES))
def test_each_mistake_is_found(name: str) -> None:
    make, found = MISTAKES[name]
    t = history()
    make(t)
    report = t.check()
    assert report.problem_count > 0 or report.lost or report.duplicated
    text = f"lost={report.lost} duplicated={report.duplicated}\n" + "\n".join(report.problems)
    assert found in text, text


def test_the_fingerprints_are_fastavros() -> None:
    for name in ("Command", "WorkflowEvent", "WorkflowIndexEvent", "Reply"):
        rt = record_type(name)
        current = fingerprint(to_parsing_canonical_form(rt.reader), "CRC-64-AVRO")
        assert current in {fp.hex() for fp in rt.writers}, name


def test_murmur2_gives_the_java_clients_values() -> None:
    # Kafka's clients/src/test/.../UtilsTest.testMurmur2
    cases = {
        "21": -973932308,
        "foobar": -790332482,
        "a-little-bit-long-string": -985981536,
        "a-little-bit-longer-string": -1486304829,
        "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
        "abc": 479470107,
    }
    assert {k: murmur2(k.encode()) for k in cases} == cases
    ids = [str(uuid.UUID(int=i * 7919, version=4)) for i in range(500)]
    assert [partition_of(i, 6) for i in ids] == [partition_for(i, 6) for i in ids]
