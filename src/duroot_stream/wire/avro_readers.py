"""The hand-written Avro readers, one per top-level record, beside the writers in
`avro.py` and held to the same schemas and fingerprints (see there).

Readers take the buffer and the body's position and return (value, end); running off
the end raises IndexError or `Truncated`. Logical types are not converted: `issued_at`
is milliseconds as an int, as in the domain model.
"""

from __future__ import annotations

import sys
from typing import Final

from duroot_stream.domain import (
    AbortExpired,
    Append,
    Command,
    Commit,
    Delete,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    End,
    ErrorCode,
    EventPayload,
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
    new_tuple,
)

from .avro import ERROR_BY_INDEX
from .binary import (
    Truncated,
    bad_branch,
    rint,
    rlong,
    ropt_str,
    rstr,
    skip_str,
)
from .codec_error import CodecError

__all__ = [
    "EventFacts",
    "read_command",
    "read_event",
    "read_event_facts",
    "read_event_head",
    "read_index_event",
    "read_reply",
]

# Bodies without fields: one shared instance each (they are frozen).
_COMMIT: Final = Commit()
_ABORT_EXPIRED: Final = AbortExpired()
_END_CMD: Final = End()
_DELETE: Final = Delete()
_COMMITTED: Final = DuRootCommitted()
_INDEX_DELETED: Final = IndexDeleted()


def read_command(buf: bytes, pos: int) -> tuple[Command, int]:
    command_id, pos = rstr(buf, pos)
    workflow_id, pos = rstr(buf, pos)
    expected_vid, pos = rstr(buf, pos)
    issued_at, pos = rlong(buf, pos)
    branch, pos = rlong(buf, pos)
    body: Init | Append | Commit | Fail | AbortExpired | End | Delete
    if branch == 1:
        paths, pos = _read_paths(buf, pos)
        body = Append(paths)
    elif branch == 0:
        registry_id, global_root, host, host_root, pos = _read_root(buf, pos)
        # Interned: many workflows name the same registry, host and root (a root is
        # du'ed again and again), and the processor holds one state per workflow. An
        # event's are not: the restore shares them for its own states (fold.py,
        # compaction.py), and sys.intern's table never shrinks.
        intern = sys.intern
        registry_id, global_root = intern(registry_id), intern(global_root)
        host, host_root = intern(host), intern(host_root)
        body = Init(registry_id, global_root, host, host_root)
    elif branch == 2:
        body = _COMMIT
    elif branch == 3:
        code, pos = rint(buf, pos)
        message, pos = rstr(buf, pos)
        body = Fail(code, message)
    elif branch == 4:
        body = _ABORT_EXPIRED
    elif branch == 5:
        body = _END_CMD
    elif branch == 6:
        body = _DELETE
    else:
        raise bad_branch("Command.command", branch)
    return Command(command_id, workflow_id, expected_vid, issued_at, body), pos


def _read_root(buf: bytes, pos: int) -> tuple[str, str, str, str, int]:
    """registry_id, global_root, host, host_root of Init or DuRootStarted."""
    registry_id, pos = rstr(buf, pos)
    global_root, pos = rstr(buf, pos)
    host, pos = rstr(buf, pos)
    host_root, pos = rstr(buf, pos)
    return registry_id, global_root, host, host_root, pos


def _read_paths(buf: bytes, pos: int) -> tuple[tuple[PathUsage, ...], int]:
    items: list[PathUsage] = []
    while True:
        n, pos = rlong(buf, pos)
        if n == 0:
            return tuple(items), pos
        if n < 0:  # a block with its size in bytes; the size is not needed
            n = -n
            _, pos = rlong(buf, pos)
        if 2 * n > len(buf) - pos:  # each PathUsage takes at least 2 bytes
            raise Truncated
        for _ in range(n):
            path, pos = rstr(buf, pos)
            usage, pos = rlong(buf, pos)
            items.append(PathUsage(path, usage))


def read_event(buf: bytes, pos: int) -> tuple[WorkflowEvent, int]:
    event_id, pos = rstr(buf, pos)
    parent, pos = rstr(buf, pos)
    workflow_id, pos = rstr(buf, pos)
    seq, pos = rlong(buf, pos)
    command_id, pos = rstr(buf, pos)
    branch, pos = rlong(buf, pos)
    payload: DuRootStarted | DuUpdated | DuRootCompleted | DuRootCommitted
    if branch == 1:
        path, pos = rstr(buf, pos)
        usage, pos = rlong(buf, pos)
        payload = new_tuple(DuUpdated, (path, usage))
    elif branch == 0:
        registry_id, global_root, host, host_root, pos = _read_root(buf, pos)
        payload = DuRootStarted(registry_id, global_root, host, host_root)
    elif branch == 2:
        code, pos = rint(buf, pos)
        message, pos = rstr(buf, pos)
        payload = DuRootCompleted(code, message)
    elif branch == 3:
        payload = _COMMITTED
    else:
        raise bad_branch("WorkflowEvent.payload", branch)
    event = new_tuple(WorkflowEvent, (event_id, parent, workflow_id, seq, command_id, payload))
    return event, pos


# (event_id, workflow_id, seq, command_id, payload type): see Codec.event_facts.
EventFacts = tuple[str, str, int, str, type[EventPayload]]
# (workflow_id, seq, the command id's start and end, payload type): see Codec.event_head.
EventHead = tuple[str, int, int, int, type[EventPayload]]
_PAYLOAD_TYPES: tuple[type[EventPayload], ...] = (
    DuRootStarted,
    DuUpdated,
    DuRootCompleted,
    DuRootCommitted,
)  # union branches in schema order


# Avro string lengths (zig-zag varints, one byte each) of a ULID and a UUID text.
_ULID_LEN: Final = 26 << 1
_UUID_LEN: Final = 36 << 1


def read_event_facts(buf: bytes, pos: int) -> EventFacts:
    if buf[pos] == _ULID_LEN and buf[pos + 27] == _ULID_LEN and buf[pos + 54] == _UUID_LEN:
        # The common layout, read by position: event id and parent (ULIDs), then
        # the workflow id (a UUID); the parent is skipped, not decoded.
        event_id = buf[pos + 1 : pos + 27].decode()
        workflow_id = buf[pos + 55 : pos + 91].decode()
        pos += 91
    else:
        event_id, pos = rstr(buf, pos)
        pos = skip_str(buf, pos)  # parent
        workflow_id, pos = rstr(buf, pos)
    seq, pos = rlong(buf, pos)
    command_id, pos = rstr(buf, pos)
    branch = buf[pos]  # a one-byte varint: 0, 2, 4 or 6
    if branch & 1 or branch >= 2 * len(_PAYLOAD_TYPES):
        raise bad_branch("WorkflowEvent.payload", branch)
    return event_id, workflow_id, seq, command_id, _PAYLOAD_TYPES[branch >> 1]


def read_event_head(buf: bytes, pos: int) -> EventHead:
    """The common layout only (see read_event_facts); any other gives a start of 0.
    The command id's start and end take in its length, so two events name the same
    command when their bytes between them are equal: nothing is decoded but the
    workflow id."""
    if buf[pos] != _ULID_LEN or buf[pos + 27] != _ULID_LEN or buf[pos + 54] != _UUID_LEN:
        return "", 0, 0, 0, DuUpdated
    workflow_id = buf[pos + 55 : pos + 91].decode()
    seq, start = rlong(buf, pos + 91)
    length, end = rlong(buf, start)
    end += length
    branch = buf[end]
    if length < 0 or branch & 1 or branch >= 2 * len(_PAYLOAD_TYPES):
        return "", 0, 0, 0, DuUpdated
    return workflow_id, seq, start, end, _PAYLOAD_TYPES[branch >> 1]


def read_index_event(buf: bytes, pos: int) -> tuple[WorkflowIndexEvent, int]:
    event_id, pos = rstr(buf, pos)
    registry_id, pos = rstr(buf, pos)
    workflow_id, pos = rstr(buf, pos)
    workflow_event_id, pos = rstr(buf, pos)
    branch, pos = rlong(buf, pos)
    payload: IndexStarted | IndexCompleted | IndexDeleted
    if branch == 0:
        global_root, pos = rstr(buf, pos)
        host, pos = rstr(buf, pos)
        host_root, pos = rstr(buf, pos)
        payload = IndexStarted(global_root, host, host_root)
    elif branch == 1:
        code, pos = rint(buf, pos)
        message, pos = rstr(buf, pos)
        payload = IndexCompleted(code, message)
    elif branch == 2:
        payload = _INDEX_DELETED
    else:
        raise bad_branch("WorkflowIndexEvent.payload", branch)
    return WorkflowIndexEvent(event_id, registry_id, workflow_id, workflow_event_id, payload), pos


def read_reply(buf: bytes, pos: int) -> tuple[Reply, int]:
    command_id, pos = ropt_str(buf, pos, "Reply.command_id")
    workflow_id, pos = ropt_str(buf, pos, "Reply.workflow_id")
    ok_byte = buf[pos]
    if ok_byte > 1:
        raise CodecError(f"invalid boolean byte 0x{ok_byte:02x} in Reply.ok")
    vid, pos = ropt_str(buf, pos + 1, "Reply.vid")
    branch, pos = rlong(buf, pos)
    error: ErrorCode | None = None
    if branch == 1:
        index, pos = rlong(buf, pos)
        if not 0 <= index < len(ERROR_BY_INDEX):
            raise CodecError(f"invalid ErrorCode index {index} in Reply.error")
        error = ERROR_BY_INDEX[index]
    elif branch != 0:
        raise bad_branch("Reply.error", branch)
    message, pos = rstr(buf, pos)
    return Reply(command_id, workflow_id, ok_byte == 1, vid, error, message), pos
