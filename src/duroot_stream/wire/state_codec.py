"""The internal state topic's values: a workflow's state (`schemas/WorkflowState.avsc`)
and a partition's marker (`schemas/StateMarker.avsc`), in single-object encoding (the
framing of codec.py: `C3 01`, the schema's fingerprint, the Avro body).

Only the processor writes and reads them, and only the current schemas are read: a
record written with any other (an older or newer processor's) is undecodable
(`CodecError`), which the restore treats as "state not used" and folds the events
instead. So a schema change costs one restore from the events, never a wrong state;
no released versions are kept. Written in single-object framing whatever the codec's
configuration (no Schema Registry subject for an internal topic).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Final

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from duroot_stream.domain import StateCode, WorkflowState, binary_ids, pack_binary
from duroot_stream.domain.recent import pack
from duroot_stream.domain.ulid import ulid_bytes, ulid_text

from .binary import END, TAG, Truncated, rlong, rstr, wlong, wstr
from .codec import SINGLE_OBJECT_MAGIC
from .codec_error import CodecError
from .schemas import schemas_dir

__all__ = [
    "MARKER_KEY",
    "StateMarker",
    "decode_marker",
    "decode_state",
    "decode_state_value",
    "decode_states",
    "encode_marker",
    "encode_state",
    "encode_states",
]

# The schemas the coders below implement (CRC-64-AVRO of the Parsing Canonical Form).
STATE_FINGERPRINTS: Final = {"WorkflowState": "e55fa2b1913d7e08", "StateMarker": "7652e190cd919953"}
# The marker's key: never a workflow id (the decider takes only canonical UUID text).
MARKER_KEY: Final = b"~complete"
_CODES: Final = tuple(StateCode)
_CODE_BYTES: Final = {code: wlong(int(code), "code") for code in _CODES}  # written per commit
_ULID: Final = TAG[0]  # the branches of an id: 16 bytes, or text
_TEXT: Final = TAG[1]
_ID: Final = 16
# A recent command as read: each id 16 bytes or text.
_Entry = tuple[bytes | str, bytes | str]


@dataclass(frozen=True, slots=True)
class StateMarker:
    """A state partition's records are complete: they hold every workflow of the
    events partition up to `events_end` (and, written in the events' transactions,
    every one after it)."""

    events_end: int
    written_by: str
    written_at: int  # ms since the epoch


@cache
def _prefix(name: str) -> bytes:
    """The framing of `schemas/<name>.avsc`, checked against the coder's fingerprint."""
    path = schemas_dir() / f"{name}.avsc"
    parsed = fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))
    found = fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO")
    if found != STATE_FINGERPRINTS[name]:
        raise RuntimeError(
            f"{path} (fingerprint {found}) is not the schema state_codec.py's coder "
            f"implements ({STATE_FINGERPRINTS[name]}): update the coder and STATE_FINGERPRINTS"
        )
    return SINGLE_OBJECT_MAGIC + bytes.fromhex(found)


def encode_state(state: WorkflowState) -> bytes:
    """The state's record value (written per changed workflow per commit)."""
    parts = [
        _prefix("WorkflowState"),
        wstr(state.workflow_id),
        _CODE_BYTES[state.code],
        wstr(state.vid),
        wlong(state.seq, "seq"),
        wstr(state.registry_id),
        wstr(state.global_root),
        wstr(state.host),
        wstr(state.host_root),
        wlong(state.started_at, "started_at"),
        wlong(state.completed_at, "completed_at"),
    ]
    recent, head = state.recent, ulid_bytes(state.vid)
    if isinstance(recent, bytes) and head is not None:  # the real case: no text made
        if recent:
            ids = binary_ids(recent, head)  # each written as the union's 16-byte branch
            parts += (wlong(len(ids) // 2, "recent_commands"), _ULID, _ULID.join(ids))
    else:
        texts = state.recent_commands
        if texts:
            parts.append(wlong(len(texts), "recent_commands"))
        for text_command, text_vid in texts:
            parts += (_TEXT, wstr(text_command), _TEXT, wstr(text_vid))
    parts.append(END)
    return b"".join(parts)


def decode_state(data: bytes) -> WorkflowState:
    """The state in `data`; `CodecError` for anything but the current schema's record."""
    state, pos = _read_state(data, _body("WorkflowState", data), {})
    _end("WorkflowState", data, pos)
    return state


def encode_states(states: Iterable[WorkflowState]) -> bytes:
    """Many states in one buffer (`decode_states` reads them): each state's record
    value (`encode_state`) after its length. A restore keeps its states so while it
    drops and remakes them (processor/compaction.py)."""
    parts: list[bytes] = []
    for state in states:
        value = encode_state(state)
        parts += (wlong(len(value), "length"), value)
    return b"".join(parts)


def decode_states(data: bytes, into: dict[str, WorkflowState], shared: dict[str, str]) -> None:
    """The states of `encode_states`, put in `into` by workflow id, compact: their
    registry ids, hosts and roots each made once, through `shared` (WorkflowState)."""
    pos = 0
    prefix = _prefix("WorkflowState")
    try:
        while pos < len(data):
            length, pos = rlong(data, pos)
            end = pos + length
            if not data.startswith(prefix, pos):
                raise CodecError("not a WorkflowState in the buffer of states")
            state, at = _read_state(data, pos + len(prefix), shared)
            if at != end:
                raise CodecError(f"{end - at} bytes after a WorkflowState in the buffer")
            into[state.workflow_id] = state
            pos = end
    except (IndexError, Truncated):
        raise CodecError("truncated buffer of states") from None


def _read_state(data: bytes, pos: int, shared: dict[str, str]) -> tuple[WorkflowState, int]:
    """The state whose Avro body starts at `pos`, and where it ends; made compact with
    `shared` (WorkflowState)."""
    try:
        workflow_id, pos = rstr(data, pos)
        code, pos = rlong(data, pos)
        if not 0 <= code < len(_CODES):
            raise CodecError(f"invalid StateCode symbol {code}")
        vid, pos = rstr(data, pos)
        seq, pos = rlong(data, pos)
        registry_id, pos = rstr(data, pos)
        global_root, pos = rstr(data, pos)
        host, pos = rstr(data, pos)
        host_root, pos = rstr(data, pos)
        started_at, pos = rlong(data, pos)
        completed_at, pos = rlong(data, pos)
        recent: list[_Entry] = []
        while True:
            count, pos = rlong(data, pos)
            if count == 0:
                break
            if count < 0:  # a block with its byte size (Avro allows it)
                count = -count
                _, pos = rlong(data, pos)
            for _ in range(count):
                command_id, pos = _read_id(data, pos)
                command_vid, pos = _read_id(data, pos)
                recent.append((command_id, command_vid))
        state = WorkflowState(
            workflow_id,
            _CODES[code],
            vid,
            seq,
            registry_id,
            global_root,
            host,
            host_root,
            started_at,
            completed_at,
            packed=_packed(recent, vid),
            compact=shared,
        )
    except (IndexError, Truncated):
        raise CodecError("truncated Avro body for WorkflowState") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise CodecError(f"invalid Avro body for WorkflowState: {exc}") from None
    return state, pos


def _read_id(data: bytes, pos: int) -> tuple[bytes | str, int]:
    branch = data[pos]
    if branch == 0:  # Ulid: 16 bytes
        end = pos + 1 + _ID
        if end > len(data):
            raise Truncated
        return data[pos + 1 : end], end
    if branch == 2:  # string (the zig-zag tag of branch 1)
        return rstr(data, pos + 1)
    raise CodecError(f"invalid union branch {branch} in recent_commands")


def _packed(recent: list[_Entry], vid: str) -> bytes | str:
    """The packed form (domain/recent.py) of the commands read, oldest first."""
    binary = [(c, v) for c, v in recent if isinstance(c, bytes) and isinstance(v, bytes)]
    if len(binary) == len(recent) and (not recent or recent[-1][1] == ulid_bytes(vid)):
        return pack_binary(binary)
    return pack(tuple((_text(c), _text(v)) for c, v in recent), vid)


def _text(value: bytes | str) -> str:
    return ulid_text(value) if isinstance(value, bytes) else value


def encode_marker(marker: StateMarker) -> bytes:
    return b"".join(
        (
            _prefix("StateMarker"),
            wlong(marker.events_end, "events_end"),
            wstr(marker.written_by),
            wlong(marker.written_at, "written_at"),
        )
    )


def decode_marker(data: bytes) -> StateMarker:
    pos = _body("StateMarker", data)
    try:
        events_end, pos = rlong(data, pos)
        written_by, pos = rstr(data, pos)
        written_at, pos = rlong(data, pos)
    except (IndexError, Truncated):
        raise CodecError("truncated Avro body for StateMarker") from None
    except UnicodeDecodeError as exc:
        raise CodecError(f"invalid Avro body for StateMarker: {exc}") from None
    _end("StateMarker", data, pos)
    return StateMarker(events_end, written_by, written_at)


def decode_state_value(data: bytes) -> WorkflowState | StateMarker:
    """A state or a marker, told apart by the schema fingerprint of the framing."""
    if data[2:10] == bytes.fromhex(STATE_FINGERPRINTS["StateMarker"]):
        return decode_marker(data)
    return decode_state(data)


def _body(name: str, data: bytes) -> int:
    """Where the body starts, once the framing is the current schema's."""
    prefix = _prefix(name)
    if data.startswith(prefix):
        return len(prefix)
    if len(data) >= 10 and data.startswith(SINGLE_OBJECT_MAGIC):
        raise CodecError(f"unknown schema fingerprint 0x{data[2:10].hex()} for {name}")
    raise CodecError(f"not a single-object {name}: starts with {data[:10].hex() or 'nothing'}")


def _end(name: str, data: bytes, pos: int) -> None:
    if pos != len(data):
        raise CodecError(f"{len(data) - pos} trailing bytes after the Avro body of {name}")
