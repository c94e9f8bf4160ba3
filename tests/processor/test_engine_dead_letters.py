"""The engine on records it cannot apply, on the in-memory Kafka (no broker): each is
dead-lettered with its reason and where it was, and answered MALFORMED where a route
can be found; a dead letter too large to write is cut to fit (`dlq-truncated`); a bug
in `decide` is one record's (internal-error, logged once); a record Kafka refuses
part-way aborts the batch, which is redone with its command dead-lettered; a reply
its route refuses goes to the replies topic. Processing goes on after each."""

from __future__ import annotations

import logging
import uuid

import pytest

from duroot_stream.domain import (
    Append,
    Command,
    Decision,
    DuRootStarted,
    ErrorCode,
    IdSource,
    Init,
    PathUsage,
    WorkflowState,
    decide,
)
from duroot_stream.wire import (
    DLQ_TRUNCATED,
    REPLY_ROUTE_ERROR,
    DeadLetterReason,
    parse_dead_letter,
    partition_for,
    reply_route_headers,
)
from tests.processor.memory import MemoryProcessor, Written
from tests.processor_harness import command, new_workflow_id

INIT = Init(str(uuid.UUID(int=7)), "/g/root", "files1", "/data/root")
# The contract's limits (docs/contract.md, "Limits"), as the numbers it states.
CONTRACT_COMMAND_MAX_BYTES = 990_000
CONTRACT_DEAD_LETTER_MAX_BYTES = 990_000

Headers = list[tuple[str, str | bytes | None]]


def workflow_on(partition: int) -> str:
    """A new workflow id whose commands go to `partition` (of 3)."""
    return next(w for w in iter(new_workflow_id, "") if partition_for(w, 3) == partition)


def size(r: Written) -> int:
    headers = sum(len(k) + len(v or b"") for k, v in r.headers or ())
    return len(r.key or b"") + len(r.value or b"") + headers


def dead_letter(p: MemoryProcessor, partition: int, offset: int) -> Written:
    found = [
        r
        for r in p.kafka.records(p.topics.dlq)
        if (d := parse_dead_letter(r.headers)).partition == partition and d.offset == offset
    ]
    assert len(found) == 1, f"{len(found)} dead letters of {partition}/{offset}"
    return found[0]


Bad = tuple[DeadLetterReason, int, bytes | None, bytes | None]  # reason, partition, key, value


def bad_records(p: MemoryProcessor, wf: str) -> dict[str, Bad]:
    """Records that cannot be applied, by name, with their dead letter's reason."""
    good = p.codec.encode_command(command(wf, INIT))
    home, key = partition_for(wf, 3), wf.encode()
    undecodable, bad_key = DeadLetterReason.UNDECODABLE, DeadLetterReason.BAD_KEY
    return {
        "value-empty": (undecodable, home, key, b""),
        "value-null": (undecodable, home, key, None),
        "value-random": (undecodable, home, key, bytes(range(7, 60))),
        "value-truncated": (undecodable, home, key, good[:-5]),
        "value-fingerprint": (undecodable, home, key, b"\xc3\x01" + b"\x00" * 8 + good[10:]),
        "value-too-large": (
            DeadLetterReason.TOO_LARGE,
            home,
            key,
            b"\0" * (CONTRACT_COMMAND_MAX_BYTES + 1),
        ),
        "misrouted": (DeadLetterReason.MISROUTED, (home + 1) % 3, key, good),
        "key-null": (bad_key, home, None, good),
        "key-huge": (bad_key, home, b"x" * 10_000, good),
        "key-other-workflow": (bad_key, home, new_workflow_id().encode(), good),
    }


def test_records_that_cannot_be_applied_are_dead_lettered_answered_and_passed() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    bad = bad_records(p, wf)
    sent = {}
    for name, (_, partition, key, value) in bad.items():
        headers: Headers = [*reply_route_headers(p.topics.replies, 0, name), ("x-mine", b"kept")]
        sent[name] = p.kafka.send(partition, key, value, headers)
    after = command(wf, INIT)
    correlation = p.routed(after)
    assert p.run_batch()
    for name, message in sent.items():
        answer = p.reply(name)
        assert answer.error is ErrorCode.MALFORMED and not answer.ok, name
        assert answer.command_id is None and answer.message, name
        letter = dead_letter(p, message.partition() or 0, message.offset() or 0)
        found = parse_dead_letter(letter.headers)
        assert found.reason is bad[name][0], name
        assert (found.topic, found.error) == (p.topics.commands, answer.message), name
        if name != "value-too-large":  # kept whole: the original record and its headers
            assert (letter.key, letter.value) == (message.key(), message.value()), name
            assert letter.header("x-mine") == b"kept" and found.truncated is None, name
    assert p.reply(correlation).ok, "a valid command after the bad ones is applied"
    reasons = [parse_dead_letter(r.headers).reason for r in p.kafka.records(p.topics.dlq)]
    for reason in set(reasons):
        assert p.counted("dead_letters", {"reason": reason.value}) == reasons.count(reason)
    assert p.counted("commands", {"command": "unknown", "outcome": "malformed"}) == len(sent)
    assert [type(p.codec.decode_event(r.value).payload) for r in p.events_of(wf)] == [DuRootStarted]


def test_a_misrouted_command_marks_its_batch_for_the_partition_count_check() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    p.send(command(wf, INIT), partition=(partition_for(wf, 3) + 1) % 3)
    for message in p.kafka.consume():
        p.handler.handle(message)
    assert p.batches.batch.misrouted, "the loop checks the partition count before this commit"


def test_a_dead_letter_too_large_to_write_is_cut_to_fit_and_says_so() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    whole = 999_900  # consumed fine; with the dead-letter headers above what Kafka takes
    headers: Headers = [*reply_route_headers(p.topics.replies, 0, "big"), ("x-mine", b"h" * 500)]
    message = p.kafka.send(partition_for(wf, 3), wf.encode(), b"v" * whole, headers)
    assert p.run_batch()
    assert p.reply("big").error is ErrorCode.MALFORMED
    letter = dead_letter(p, message.partition() or 0, message.offset() or 0)
    found = parse_dead_letter(letter.headers)
    assert found.reason is DeadLetterReason.TOO_LARGE
    original = whole + len(wf) + sum(len(k) + len(v or b"") for k, v in headers)
    assert found.truncated == f"{original} bytes"
    assert letter.header(DLQ_TRUNCATED) == f"{original} bytes".encode()
    assert size(letter) <= CONTRACT_DEAD_LETTER_MAX_BYTES
    assert letter.value == b"v" * len(letter.value or b"") and letter.key == wf.encode()
    assert letter.header("x-mine") is None, "the original headers are dropped: see dlq-offset"


def test_a_dead_letter_whose_headers_cannot_be_written_is_cut_too() -> None:
    p, wf = MemoryProcessor(), new_workflow_id()
    headers: Headers = [("reply-topic\x00x", b"y"), ("x-mine", b"kept?")]
    message = p.kafka.send(partition_for(wf, 3), b"not the workflow id", b"", headers)
    assert p.run_batch()
    letter = dead_letter(p, message.partition() or 0, message.offset() or 0)
    found = parse_dead_letter(letter.headers)
    assert found.reason is DeadLetterReason.UNDECODABLE and found.truncated is not None
    assert all("\x00" not in k for k, _ in letter.headers or ())


def test_a_bug_in_decide_is_dead_lettered_logged_once_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="duroot.processor")
    wf = new_workflow_id()
    failing = [command(wf, Append((PathUsage("a", 1),))) for _ in range(2)]

    def buggy(state: WorkflowState, cmd: Command, new_id: IdSource) -> Decision:
        if cmd in failing:
            raise RuntimeError(f"decide failed for {cmd.command_id}")
        return decide(state, cmd, new_id)

    p = MemoryProcessor(decide=buggy)
    first = p.request(command(wf, INIT))
    state = p.state(wf)
    bad = [p.request(c) for c in failing]
    assert all(r.error is ErrorCode.MALFORMED and "decide failed" in r.message for r in bad)
    assert p.state(wf) is state
    assert p.request(command(wf, Append((PathUsage("b", 2),)), first.vid or "")).ok
    letters = [parse_dead_letter(r.headers).reason for r in p.kafka.records(p.topics.dlq)]
    assert letters == [DeadLetterReason.INTERNAL_ERROR] * 2
    assert p.counted("dead_letters", {"reason": "internal-error"}) == 2
    assert len([r for r in caplog.records if r.exc_info is not None]) == 1, "logged once"


@pytest.mark.parametrize("other_first", [True, False], ids=["before-it", "after-it"])
def test_a_record_refused_part_way_aborts_the_batch_which_is_redone_without_it(
    other_first: bool,
) -> None:
    p = MemoryProcessor()
    # Consumed partition by partition: `other` handled before the failing command, or
    # fetched with it and not handled yet when the batch aborts (then its partition
    # must be rewound too, or it is never handled).
    wf, other = (
        (workflow_on(2), workflow_on(0)) if other_first else (workflow_on(0), workflow_on(2))
    )
    # Its STARTED event is written, then Kafka refuses its index record.
    index = p.topics.index
    p.kafka.refuse = lambda r: "refused" if r.topic == index and r.key == wf.encode() else None
    poisoned = p.routed(command(wf, INIT))
    fetched = p.routed(command(other, INIT))
    assert not p.run_batch(), "the batch with the half-written command aborted"
    assert len(p.kafka.aborts) == 1 and "failed part-way" in p.kafka.aborts[0]
    assert p.kafka.records(p.topics.events) == [] and p.state(other) is None
    assert p.run_batch(), "redone"
    assert p.reply(fetched).ok
    assert p.reply(poisoned).error is ErrorCode.MALFORMED
    [letter] = p.kafka.records(p.topics.dlq)
    assert parse_dead_letter(letter.headers).reason is DeadLetterReason.INTERNAL_ERROR
    assert p.events_of(wf) == [] and p.state(wf) is None
    assert len(p.events_of(other)) == 1
    assert p.counted("commands", {"command": "Init", "outcome": "ok"}) == 1


def test_a_reply_its_route_refuses_goes_to_the_replies_topic_saying_why() -> None:
    private = "mem.replies.private"  # allowed by --reply-topics' default
    p = MemoryProcessor(extra_topics={private: 1})
    p.kafka.refuse = lambda r: "refused" if r.topic == private else None
    wf = new_workflow_id()
    cmd = command(wf, INIT)
    p.send(cmd, headers=[*reply_route_headers(private, 0, "mine")])
    assert p.run_batch()
    [written] = p.kafka.records(p.topics.replies)
    assert written.key == cmd.command_id.encode()
    assert written.header("correlation-id") == b"mine"
    assert b"not accepted" in (written.header(REPLY_ROUTE_ERROR) or b"")
    assert p.codec.decode_reply(written.value).ok
    assert p.counted("reply_route_errors", {"reason": "undeliverable"}) == 1
    assert len(p.events_of(wf)) == 1, "the command is applied all the same"
