"""The id checks of the four records: every id is canonical text by the domain's
one rule (`UUID_RE`, `ULID_RE`).

A command is checked for what the codec and the processor need to key, route
and answer it: `command_id`, `workflow_id`, `expected_vid`. Its other fields
(an Init's registry id among them) are the decider's to judge, which answers
INVALID_ARGUMENT; the codec does not dead-letter such a command as malformed.
Events, index events and replies are ours: every id in them is checked.
"""

from __future__ import annotations

from duroot_stream.domain import (
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
    "show",
    "ulid_match",
    "uuid_match",
]

ulid_match = ULID_RE.fullmatch
uuid_match = UUID_RE.fullmatch


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
        if ulid_match(c.command_id) and uuid_match(c.workflow_id) and ulid_match(c.expected_vid):
            return
    except TypeError:
        pass
    _ulid("command_id", c.command_id)
    _uuid("workflow_id", c.workflow_id)
    _ulid("expected_vid", c.expected_vid)


def check_event(e: WorkflowEvent) -> None:
    try:
        if (
            ulid_match(e.event_id)
            and ulid_match(e.parent)
            and uuid_match(e.workflow_id)
            and ulid_match(e.command_id)
            and e.seq >= 0
            and (type(e.payload) is not DuRootStarted or uuid_match(e.payload.registry_id))
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
            ulid_match(e.event_id)
            and uuid_match(e.registry_id)
            and uuid_match(e.workflow_id)
            and ulid_match(e.workflow_event_id)
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
