"""The client library's pure parts: error mapping, command building, line checks."""

from __future__ import annotations

import uuid

import pytest

from duroot_stream.client import MAX_IN_FLIGHT, DuResult, DuRootClient
from duroot_stream.client.commands import canonical_uuid, make_command, path_usages
from duroot_stream.client.errors import (
    REJECTIONS,
    CommandRejected,
    ConflictInit,
    ConflictState,
    ConflictStateAdvanced,
    DuRootError,
    InvalidArgument,
    InvalidCommand,
    MalformedCommand,
    Uninitialized,
    VersionConflict,
    WorkflowConflict,
    WorkflowFailed,
    check_reply,
    rejection,
)
from duroot_stream.client.index import IndexEntry, merge
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import (
    NO_VC,
    RECENT_COMMANDS,
    Commit,
    ErrorCode,
    IndexCompleted,
    IndexDeleted,
    IndexPayload,
    IndexStarted,
    PathUsage,
    Rejected,
    Reply,
    StateCode,
    WorkflowIndexEvent,
)
from duroot_stream.ids import new_ulid

WF = "6f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
REG = "0b0c8d4e-1111-4222-8333-444455556666"


def _rejected(code: ErrorCode, message: str = "no") -> Reply:
    return Reply(new_ulid(), WF, False, None, code, message)


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (ErrorCode.CONFLICT_INIT, ConflictInit),
        (ErrorCode.CONFLICT_STATE, ConflictState),
        (ErrorCode.CONFLICT_STATE_ADVANCED, ConflictStateAdvanced),
        (ErrorCode.INVALID_COMMAND, InvalidCommand),
        (ErrorCode.UNINITIALIZED, Uninitialized),
        (ErrorCode.VERSION_CONFLICT, VersionConflict),
        (ErrorCode.INVALID_ARGUMENT, InvalidArgument),
        (ErrorCode.MALFORMED, MalformedCommand),
    ],
)
def test_every_error_code_has_its_exception(code: ErrorCode, cls: type[CommandRejected]) -> None:
    command = make_command(WF, Commit())
    with pytest.raises(cls) as raised:
        check_reply(_rejected(code, "what went wrong"), command)
    exc = raised.value
    assert type(exc) is cls and cls.code is code
    assert isinstance(exc, CommandRejected) and isinstance(exc, DuRootError)
    assert exc.rejected == Rejected(code, "what went wrong") and exc.command is command
    assert str(exc) == "what went wrong"


def test_a_refusal_without_a_code_is_not_a_rejection() -> None:
    # The processor names a code in every refusal; a reply without one is not its.
    with pytest.raises(DuRootError, match="without an error code") as raised:
        check_reply(Reply(new_ulid(), WF, False, None, None, "no"))
    assert not isinstance(raised.value, CommandRejected)


def test_the_table_covers_every_error_code() -> None:
    assert set(REJECTIONS) == set(ErrorCode)


def test_conflicts_share_a_base_class() -> None:
    for cls in (ConflictInit, ConflictState, ConflictStateAdvanced, VersionConflict):
        assert issubclass(cls, WorkflowConflict)
    for other in (InvalidArgument, InvalidCommand, MalformedCommand, Uninitialized):
        assert not issubclass(other, WorkflowConflict)


def test_version_conflict_carries_both_vids() -> None:
    stored, expected = new_ulid(), new_ulid()
    message = f"version conflict: stored vid {stored}, expected vid {expected}"
    exc = rejection(Rejected(ErrorCode.VERSION_CONFLICT, message))
    assert isinstance(exc, VersionConflict)
    assert (exc.stored_vid, exc.expected_vid) == (stored, expected)


def test_version_conflict_with_an_unexpected_message_falls_back_to_the_command() -> None:
    command = make_command(WF, Commit(), expected_vid=new_ulid())
    exc = rejection(Rejected(ErrorCode.VERSION_CONFLICT, "odd"), command)
    assert isinstance(exc, VersionConflict)
    assert exc.stored_vid is None and exc.expected_vid == command.expected_vid


def test_check_reply_returns_the_vid_of_an_accepting_reply() -> None:
    vid = new_ulid()
    assert check_reply(Reply(new_ulid(), WF, True, vid, None, "")) == vid
    with pytest.raises(DuRootError, match="no vid"):
        check_reply(Reply(new_ulid(), WF, True, None, None, ""))


def test_make_command_canonicalises_the_workflow_id() -> None:
    command = make_command(WF.upper(), Commit())
    assert command.workflow_id == WF
    assert command.expected_vid == NO_VC
    assert len(command.command_id) == 26
    assert command.issued_at > 1_600_000_000_000
    assert make_command(WF, Commit()).command_id != command.command_id


def test_canonical_uuid_rejects_what_is_not_a_uuid() -> None:
    assert canonical_uuid(str(uuid.UUID(WF)).replace("-", "")) == WF
    with pytest.raises(ValueError, match="registry id 'nope' is not a UUID"):
        canonical_uuid("nope", "registry id")


def test_path_usages_accepts_pairs_and_keeps_paths_as_given() -> None:
    odd = "new\nline/ü/\t tab"
    assert path_usages([(odd, 1), PathUsage("x", 0)]) == (PathUsage(odd, 1), PathUsage("x", 0))


@pytest.mark.parametrize("usage", [-1, 1.5, True, "7", 2**63])
def test_path_usages_rejects_bad_usages_before_anything_is_sent(usage: object) -> None:
    with pytest.raises(ValueError, match="is not a byte count"):
        path_usages([("a", usage)])  # type: ignore[list-item]


def test_du_result_raise_for_status() -> None:
    ok = DuResult(WF, [], new_ulid(), True, 0, "", StateCode.TERMINATED)
    assert ok.raise_for_status() is ok and not ok.failed
    running = DuResult(WF, [], new_ulid(), False, None, "", StateCode.APPENDING)
    assert not running.failed
    failed = DuResult(WF, [], new_ulid(), True, 1, "du failed: boom", StateCode.TERMINATED)
    with pytest.raises(WorkflowFailed, match=r"status 1.*du failed: boom") as info:
        failed.raise_for_status()
    assert info.value.status_code == 1


# Nothing listens here: a client that tried to send would fail with Unavailable.
NOWHERE = KafkaConfig(bootstrap_servers="127.0.0.1:9", topic_prefix="nowhere.")


@pytest.mark.parametrize(
    ("paths", "message"),
    [
        ([("a", -1)], "is not a byte count"),
        ([(b"a", 1)], "is not text"),
        ([], "no paths"),
    ],
)
def test_append_checks_the_lines_like_append_many_before_sending(
    paths: list[tuple[object, int]], message: str
) -> None:
    with DuRootClient(NOWHERE, timeout=1) as client:
        for append in (client.append, client.append_many):
            with pytest.raises(ValueError, match=message):
                append(WF, paths)  # type: ignore[arg-type]
        assert client.reply_partition == -1  # never connected: nothing was sent


def test_append_many_keeps_at_most_half_the_dedupe_bound_in_flight() -> None:
    assert MAX_IN_FLIGHT == RECENT_COMMANDS // 2
    with DuRootClient(NOWHERE, timeout=1) as client:
        for bad in (0, MAX_IN_FLIGHT + 1, RECENT_COMMANDS):
            with pytest.raises(ValueError, match=rf"max_in_flight must be 1\.\.{MAX_IN_FLIGHT}"):
                client.append_many(WF, [("a", 1), ("b", 2)], batch_size=1, max_in_flight=bad)
        assert client.reply_partition == -1


def _index_event(payload: IndexPayload, registry_id: str = REG) -> WorkflowIndexEvent:
    return WorkflowIndexEvent(new_ulid(), registry_id, WF, new_ulid(), payload)


def test_an_index_entry_keeps_what_started_said_through_completion_and_deletion() -> None:
    started = _index_event(IndexStarted("/g", "h", "/srv"))
    completed = _index_event(IndexCompleted(1, "boom"))
    deleted = _index_event(IndexDeleted())
    entry = merge(merge(merge(None, started), completed), deleted)
    assert entry == IndexEntry(
        WF, REG, deleted, "/g", "h", "/srv", started.workflow_event_id,
        completed.workflow_event_id, 1, "boom",
    )  # fmt: skip
    assert entry.state == "deleted"


def test_an_index_entry_of_another_registry_starts_afresh() -> None:
    started = _index_event(IndexStarted("/g", "h", "/srv"))
    completed = _index_event(IndexCompleted(0, ""), registry_id=str(uuid.uuid4()))
    entry = merge(merge(None, started), completed)
    assert (entry.global_root, entry.started_vid, entry.status_code) == (None, None, 0)
    assert entry.state == "completed"
    # Compaction left only COMPLETED: the entry has no STARTED fields.
    assert merge(None, completed) == entry
