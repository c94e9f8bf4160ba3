"""The records of a decision's events, made in one pass: each event's key
(`<workflow-id>/<seq>`), its value (Avro, as the `WorkflowEvent` schema says) and
its headers (`headers.py` names them), ready to produce.

One pass because it runs per path of an Append: the bytes an event shares with its
headers and with the next event (its id is the next one's parent, its seq text is in
its key and its `seq` header) are made once, and what one decision's events share
(the workflow and command ids, the event type) once for all of them. The single
event's value and headers (`encode_event`, `event_headers`) are this pass over one
event, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final, cast

from duroot_stream.domain import DuUpdated, WorkflowEvent

from .avro import write_event_payload
from .binary import BYTE, TAG, wlong
from .codec_error import CodecError
from .headers import COMMAND_ID, EVENT_TYPE, EVENT_TYPES, PARENT, SEQ, VID, WORKFLOW_ID

__all__ = ["EventRecord", "event_headers", "event_records"]

# (topic, partition, key, value, headers): a record as the processor produces it.
EventRecord = tuple[str, int, bytes, bytes, list[tuple[str, bytes | None]]]

_EVENT_TYPE_HEADERS: Final = {cls: (EVENT_TYPE, name.encode()) for cls, name in EVENT_TYPES.items()}


def event_records(
    prefix: bytes, events: Sequence[WorkflowEvent], topic: str, partition: int
) -> list[EventRecord]:
    """The records of `events` on `topic` [`partition`], values framed with `prefix`."""
    out: list[EventRecord] = []
    payload_type: type | None = None
    workflow_id: str | None = None
    command_id: str | None = None
    previous_id: str | None = None
    previous = wf = cmd = key_prefix = b""
    # Typed `object`: a tuple-typed local is held unboxed in the compiled build and
    # boxed anew (a tuple made) at each use, here three per event.
    type_header: object = (EVENT_TYPE, b"")
    workflow_header: object = type_header
    command_header: object = type_header
    updated = DuUpdated  # a NamedTuple: read from the module once, not per event
    # Unpacked: the tuple's fields at once, cheaper than six attribute reads.
    for event_id, parent_id, event_workflow, seq, event_command, p in events:
        if type(p) is not payload_type:
            payload_type = type(p)
            found = _EVENT_TYPE_HEADERS.get(payload_type)
            if found is None:
                raise CodecError(f"not an event payload: {payload_type.__name__}")
            type_header = found
        if event_workflow != workflow_id or event_command != command_id:
            workflow_id, command_id = event_workflow, event_command
            workflow_bytes, command_bytes = workflow_id.encode(), command_id.encode()
            wf, cmd = _avro_string(workflow_bytes), _avro_string(command_bytes)
            workflow_header = (WORKFLOW_ID, workflow_bytes)
            command_header = (COMMAND_ID, command_bytes)
            key_prefix = workflow_bytes + b"/"
        parent = previous if parent_id == previous_id else parent_id.encode()
        vid = event_id.encode()
        seq_text = str(seq).encode()
        # The seq's varint in the value: up to two bytes as two pieces of the join
        # (no bytes made for it), longer ones written whole.
        if 0 <= seq < 0x40:
            seq_low, seq_high = BYTE[seq << 1], b""
        elif 0 < seq < 0x2000:
            seq_low, seq_high = BYTE[((seq << 1) & 0x7F) | 0x80], BYTE[seq >> 6]
        else:
            seq_low, seq_high = wlong(seq, "seq"), b""
        if type(p) is updated:  # the common case, one per path: its fields inline
            path, usage = p
            text = path.encode()
            tag, length, tail = TAG[1], _length(len(text)), wlong(usage, "DuUpdated.usage")
        else:  # the payload written whole
            tag, length, text, tail = write_event_payload(p), b"", b"", b""
        value = b"".join(
            (
                prefix,
                _length(len(vid)),
                vid,
                _length(len(parent)),
                parent,
                wf,
                seq_low,
                seq_high,
                cmd,
                tag,
                length,
                text,
                tail,
            )
        )
        headers = cast(
            list[tuple[str, bytes | None]],
            [
                type_header,
                workflow_header,
                (VID, vid),
                (PARENT, parent),
                (SEQ, seq_text),
                command_header,
            ],
        )
        out.append((topic, partition, key_prefix + seq_text, value, headers))
        previous, previous_id = vid, event_id
    return out


def event_headers(e: WorkflowEvent) -> list[tuple[str, bytes]]:
    """The Kafka headers of an event (UTF-8 values, `seq` in decimal)."""
    # Every value is bytes; the records say `| None` for the produce call's type.
    return cast(list[tuple[str, bytes]], event_records(b"", (e,), "", 0)[0][4])


def _length(n: int) -> bytes:
    """An Avro string's length prefix."""
    return BYTE[n << 1] if n < 64 else wlong(n, "string length")


def _avro_string(encoded: bytes) -> bytes:
    return _length(len(encoded)) + encoded
