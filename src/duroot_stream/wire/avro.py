"""The hand-written Avro coders: one writer (here; an event's in `event_records.py`)
and one reader (`avro_readers.py`) per top-level record, each implementing
exactly the current schema in `schemas/` (pinned by its fingerprint in
`schemas.CODED_FINGERPRINTS`; the tests check every coder byte for byte against
fastavro).

They exist because encoding and decoding run per command in the processor's
hot path: on an `Append` event, fastavro's `schemaless_writer` (parsed schema,
tuple-notation union, dict built by hand) takes about 3 times as long as
`event_records`, and its reader returns dicts that still have to become model
values.

Writers take the framing prefix and a model value and return the message.
Readers take the buffer and the body's position and return (value, end);
running off the end raises IndexError or `Truncated`. Logical types are not
converted: `issued_at` is milliseconds as an int, as in the domain model.
"""

from __future__ import annotations

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
    End,
    ErrorCode,
    Fail,
    IndexCompleted,
    IndexDeleted,
    IndexStarted,
    Init,
    PathUsage,
    Reply,
    WorkflowIndexEvent,
)

from .binary import (
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
    "write_event_payload",
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


def write_event_payload(p: object) -> bytes:
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
_ERROR_SYMBOLS: Final = (
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
ERROR_BY_INDEX: Final = tuple(ErrorCode[s] for s in _ERROR_SYMBOLS)
_ERROR_INDEX: Final = {code: TAG[1] + wlong(i, "") for i, code in enumerate(ERROR_BY_INDEX)}


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
