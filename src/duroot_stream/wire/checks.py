"""The id checks of the four records: every id is canonical text by the domain's
one rule (`UUID_RE`, `ULID_RE`).

A command is checked for what the codec and the processor need to key, route
and answer it: `command_id`, `workflow_id`, `expected_vid`. Its other fields
(an Init's registry id among them) are the decider's to judge, which answers
INVALID_ARGUMENT; the codec does not dead-letter such a command as malformed.
Events, index events and replies are ours: every id in them is checked.
"""

from __future__ import annotations

from typing import Final

from duroot_stream.domain import (
    CROCKFORD,
    ULID_RE,
    UUID_RE,
    Command,
    DuRootStarted,
    Reply,
    WorkflowEvent,
    WorkflowIndexEvent,
)

from .codec_error import CodecError

__all__ = [
    "check_command",
    "check_event",
    "check_index_event",
    "check_reply",
    "is_ulid",
    "is_uuid",
    "show",
    "ulid_match",
    "uuid_match",
]

ulid_match: Final = ULID_RE.fullmatch
uuid_match: Final = UUID_RE.fullmatch
_CROCKFORD: Final = CROCKFORD.encode()
_UUID_CHARACTERS: Final = b"-0123456789abcdef"


# The rules of ULID_RE and UUID_RE without a regex: a match costs about twice as much,
# and every command has three ids (tests/wire hold them to the regexes).


def is_ulid(v: str) -> bool:
    """`ULID_RE.fullmatch(v)`: 26 Crockford characters, the first 0 to 7."""
    return (
        len(v) == 26
        and "0" <= v[0] <= "7"
        and v.isascii()
        and not v.encode().translate(None, _CROCKFORD)
    )


def is_uuid(v: str) -> bool:
    """`UUID_RE.fullmatch(v)`: lower-case hex digits in groups of 8-4-4-4-12."""
    return (
        len(v) == 36
        and v[8] == v[13] == v[18] == v[23] == "-"
        and v.count("-") == 4
        and v.isascii()
        and not v.encode().translate(None, _UUID_CHARACTERS)
    )


def show(v: object) -> str:
    """`repr(v)`, cut to fit in a message."""
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _ulid(field: str, v: str) -> None:
    if not isinstance(v, str) or ulid_match(v) is None:
        raise CodecError(f"invalid ULID text in {field}: {show(v)}")


def _uuid(field: str, v: str) -> None:
    if not isinstance(v, str) or uuid_match(v) is None:
        raise CodecError(f"invalid UUID text in {field}: {show(v)}")


# Each check is one fast test of all fields; only when it fails (or meets a
# value of the wrong type) do the field-by-field checks find what to report.


def check_command(c: Command) -> None:
    try:
        if is_ulid(c.command_id) and is_uuid(c.workflow_id) and is_ulid(c.expected_vid):
            return
    except TypeError:
        pass
    _ulid("command_id", c.command_id)
    _uuid("workflow_id", c.workflow_id)
    _ulid("expected_vid", c.expected_vid)


def check_event(e: WorkflowEvent) -> None:
    try:
        if (
            is_ulid(e.event_id)
            and is_ulid(e.parent)
            and is_uuid(e.workflow_id)
            and is_ulid(e.command_id)
            and e.seq >= 0
            and (type(e.payload) is not DuRootStarted or is_uuid(e.payload.registry_id))
        ):
            return
    except TypeError:
        pass
    _ulid("event_id", e.event_id)
    _ulid("parent", e.parent)
    _uuid("workflow_id", e.workflow_id)
    _ulid("command_id", e.command_id)
    if not isinstance(e.seq, int) or e.seq < 0:
        raise CodecError(f"invalid seq {show(e.seq)}")
    if isinstance(e.payload, DuRootStarted):
        _uuid("registry_id", e.payload.registry_id)


def check_index_event(e: WorkflowIndexEvent) -> None:
    try:
        if (
            is_ulid(e.event_id)
            and is_uuid(e.registry_id)
            and is_uuid(e.workflow_id)
            and is_ulid(e.workflow_event_id)
        ):
            return
    except TypeError:
        pass
    _ulid("event_id", e.event_id)
    _uuid("registry_id", e.registry_id)
    _uuid("workflow_id", e.workflow_id)
    _ulid("workflow_event_id", e.workflow_event_id)


def check_reply(r: Reply) -> None:
    if r.command_id is not None:
        _ulid("command_id", r.command_id)
    if r.workflow_id is not None:
        _uuid("workflow_id", r.workflow_id)
    if r.vid is not None:
        _ulid("vid", r.vid)
