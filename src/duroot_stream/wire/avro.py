"""The hand-written Avro coders: one writer (here) and one reader (`avro_readers.py`)
per top-level record,
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
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
)

from .binary import (
    BYTE,
    END,
    NULL,
    TAG,
    wint,
    wlong,
    wopt_str,
    wstr,
)
from .codec_error import CodecError

__all__ = [
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
# The ErrorCode of each enum index of the schema (the reader maps back by it).
ERROR_BY_INDEX = tuple(ErrorCode[s] for s in _ERROR_SYMBOLS)
_ERROR_INDEX = {code: TAG[1] + wlong(i, "") for i, code in enumerate(ERROR_BY_INDEX)}


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
