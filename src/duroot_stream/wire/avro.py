"""The hand-written Avro coders: one writer and one reader per top-level record,
each implementing exactly the current schema in `schemas/` (pinned by its
fingerprint in `schemas.CODED_FINGERPRINTS`; the tests check every coder byte
for byte against fastavro).

They exist because encoding and decoding run per command in the processor's
hot path: on an `Append` event, fastavro's `schemaless_writer` (parsed schema,
tuple-notation union, dict built by hand) takes about 3 times as long as
`write_event`, and its reader returns dicts that still have to become model
values.

Writers take the framing prefix and a model value and return the message.
Readers take the buffer and the body's position and return (value, end);
running off the end raises IndexError or `Truncated`. Logical types are not
converted: `issued_at` is milliseconds as an int, as in the domain model.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

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

from .binary import (
    BYTE,
    END,
    NULL,
    TAG,
    Truncated,
    bad_branch,
    rint,
    rlong,
    ropt_str,
    rstr,
    skip_str,
    wint,
    wlong,
    wopt_str,
    wstr,
)
from .codec_error import CodecError

__all__ = [
    "EventFacts",
    "read_command",
    "read_event",
    "read_event_facts",
    "read_index_event",
    "read_reply",
    "write_command",
    "write_event",
    "write_events",
    "write_index_event",
    "write_reply",
]

# --- writing ---------------------------------------------------------------------


def write_command(prefix: bytes, c: Command) -> bytes:
    b = c.body
    match b:  # union branches in schema order: Init, Append, Commit, Fail, ...
        case Append():
            body = TAG[1] + _write_paths(b.paths)
        case Init():
            body = b"".join(
                (TAG[0], wstr(b.registry_id), wstr(b.global_root), wstr(b.host), wstr(b.host_root))
            )
        case Commit():
            body = TAG[2]
        case Fail():
            body = TAG[3] + wint(b.code, "Fail.code") + wstr(b.message)
        case AbortExpired():
            body = TAG[4]
        case End():
            body = TAG[5]
        case Delete():
            body = TAG[6]
        case _:
            raise CodecError(f"not a command body: {type(b).__name__}")
    return b"".join(
        (
            prefix,
            wstr(c.command_id),
            wstr(c.workflow_id),
            wstr(c.expected_vid),
            wlong(c.issued_at, "issued_at"),
            body,
        )
    )


def _write_paths(paths: tuple[PathUsage, ...]) -> bytes:
    """An array of PathUsage, in one block."""
    if not paths:
        return END
    parts = [wlong(len(paths), "array length")]
    for p in paths:
        parts.append(wstr(p.path))
        parts.append(wlong(p.usage, "PathUsage.usage"))
    parts.append(END)
    return b"".join(parts)


def write_event(prefix: bytes, e: WorkflowEvent) -> bytes:
    return write_events(prefix, (e,))[0]


def write_events(prefix: bytes, events: Sequence[WorkflowEvent]) -> list[bytes]:
    """Each event as `write_event` writes it; what one decision's events share (workflow
    id, command id, the parent = the previous event id) is encoded once."""
    out: list[bytes] = []
    workflow_id: str | None = None
    command_id: str | None = None
    wf = cmd = previous = b""
    previous_id: str | None = None
    # Unpacked: the tuple's fields at once, cheaper than six attribute reads.
    for event_id, parent_id, event_workflow, seq, event_command, p in events:
        if event_workflow != workflow_id or event_command != command_id:
            workflow_id, command_id = event_workflow, event_command
            wf, cmd = wstr(workflow_id), wstr(command_id)
        parent = previous if parent_id == previous_id else wstr(parent_id)
        previous, previous_id = wstr(event_id), event_id
        if type(p) is DuUpdated:  # the common case, one per path: its fields inline
            path, usage = p
            encoded = path.encode()
            n = len(encoded)
            out.append(
                b"".join(
                    (
                        prefix,
                        previous,
                        parent,
                        wf,
                        wlong(seq, "seq"),
                        cmd,
                        TAG[1],
                        BYTE[n << 1] if n < 64 else wlong(n, "string length"),
                        encoded,
                        wlong(usage, "DuUpdated.usage"),
                    )
                )
            )
        else:
            body = (prefix, previous, parent, wf, wlong(seq, "seq"), cmd, _payload(p))
            out.append(b"".join(body))
    return out


def _payload(p: object) -> bytes:
    """The `payload` union of a WorkflowEvent (its last field), but DuUpdated."""
    match p:
        case DuRootStarted():
            return b"".join(
                (TAG[0], wstr(p.registry_id), wstr(p.global_root), wstr(p.host), wstr(p.host_root))
            )
        case DuRootCompleted():
            return TAG[2] + wint(p.status_code, "status_code") + wstr(p.status_message)
        case DuRootCommitted():
            return TAG[3]
    raise CodecError(f"not an event payload: {type(p).__name__}")


def write_index_event(prefix: bytes, e: WorkflowIndexEvent) -> bytes:
    p = e.payload
    match p:  # index.DuRootStarted, index.DuRootCompleted, index.DuRootDeleted
        case IndexStarted():
            payload = b"".join((TAG[0], wstr(p.global_root), wstr(p.host), wstr(p.host_root)))
        case IndexCompleted():
            payload = TAG[1] + wint(p.status_code, "status_code") + wstr(p.status_message)
        case IndexDeleted():
            payload = TAG[2]
        case _:
            raise CodecError(f"not an index payload: {type(p).__name__}")
    return b"".join(
        (
            prefix,
            wstr(e.event_id),
            wstr(e.registry_id),
            wstr(e.workflow_id),
            wstr(e.workflow_event_id),
            payload,
        )
    )


# The ErrorCode enum's symbols in schema order (pinned by the fingerprint).
_ERROR_SYMBOLS = (
    "CONFLICT_INIT",
    "CONFLICT_STATE",
    "CONFLICT_STATE_ADVANCED",
    "INVALID_COMMAND",
    "UNINITIALIZED",
    "VERSION_CONFLICT",
    "INVALID_ARGUMENT",
    "MALFORMED",
)
_ERROR_BY_INDEX = tuple(ErrorCode[s] for s in _ERROR_SYMBOLS)
_ERROR_INDEX = {code: TAG[1] + wlong(i, "") for i, code in enumerate(_ERROR_BY_INDEX)}


def write_reply(prefix: bytes, r: Reply) -> bytes:
    if r.error is None:
        error = NULL
    else:
        error = _ERROR_INDEX.get(r.error, b"")
        if not error:
            raise CodecError(f"not an ErrorCode: {r.error!r}")
    return b"".join(
        (
            prefix,
            wopt_str(r.command_id),
            wopt_str(r.workflow_id),
            b"\x01" if r.ok else b"\x00",
            wopt_str(r.vid),
            error,
            wstr(r.message),
        )
    )


# --- reading ------------------------------------------------------------------


# Bodies without fields: one shared instance each (they are frozen).
_COMMIT, _ABORT_EXPIRED, _END_CMD, _DELETE = Commit(), AbortExpired(), End(), Delete()
_COMMITTED, _INDEX_DELETED = DuRootCommitted(), IndexDeleted()


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
    """registry_id, global_root, host, host_root of Init or DuRootStarted.

    Interned: many workflows name the same registry, host and root (a root is
    du'ed again and again), and the processor holds one state per workflow.
    """
    registry_id, pos = rstr(buf, pos)
    global_root, pos = rstr(buf, pos)
    host, pos = rstr(buf, pos)
    host_root, pos = rstr(buf, pos)
    intern = sys.intern
    return intern(registry_id), intern(global_root), intern(host), intern(host_root), pos


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
_PAYLOAD_TYPES: tuple[type[EventPayload], ...] = (
    DuRootStarted,
    DuUpdated,
    DuRootCompleted,
    DuRootCommitted,
)  # union branches in schema order


# Avro string lengths (zig-zag varints, one byte each) of a ULID and a UUID text.
_ULID_LEN, _UUID_LEN = 26 << 1, 36 << 1


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
        if not 0 <= index < len(_ERROR_BY_INDEX):
            raise CodecError(f"invalid ErrorCode index {index} in Reply.error")
        error = _ERROR_BY_INDEX[index]
    elif branch != 0:
        raise bad_branch("Reply.error", branch)
    message, pos = rstr(buf, pos)
    return Reply(command_id, workflow_id, ok_byte == 1, vid, error, message), pos
