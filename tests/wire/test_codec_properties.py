"""Properties of the codec over random values: round trips in both framings,
the hand-written coders byte for byte equal to fastavro, and no exception but
CodecError from any bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import uuid
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from duroot_stream.domain import (
    CROCKFORD,
    EVENT_EPOCH,
    NO_VC,
    RETRY_NO_VC,
    ULID_RE,
    UUID_RE,
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
from duroot_stream.wire import (
    Codec,
    CodecError,
    event_headers,
    parse_event_headers,
    schemas_dir,
)
from duroot_stream.wire.checks import is_ulid, is_uuid

NS = "io.duroot.stream"
LONGS = st.integers(-(2**63), 2**63 - 1)
INTS = st.integers(-(2**31), 2**31 - 1)

ulids = st.one_of(
    st.sampled_from([EVENT_EPOCH, NO_VC, RETRY_NO_VC]),
    st.builds(
        lambda first, rest: first + rest,
        st.sampled_from("01234567"),
        st.text(CROCKFORD, min_size=25, max_size=25),
    ),
)
uuids = st.uuids().map(str)
texts = st.text()  # any Unicode but surrogates, including long strings now and then

paths = st.builds(PathUsage, texts, LONGS)
command_bodies = st.one_of(
    # Any registry id: the decider judges it, not the codec.
    st.builds(Init, st.one_of(uuids, texts), texts, texts, texts),
    st.builds(Append, st.lists(paths, max_size=20).map(tuple)),
    st.just(Commit()),
    st.builds(Fail, INTS, texts),
    st.just(AbortExpired()),
    st.just(End()),
    st.just(Delete()),
)
commands = st.builds(Command, ulids, uuids, ulids, LONGS, command_bodies)
event_payloads = st.one_of(
    st.builds(DuRootStarted, uuids, texts, texts, texts),
    st.builds(DuUpdated, texts, LONGS),
    st.builds(DuRootCompleted, INTS, texts),
    st.just(DuRootCommitted()),
)
events = st.builds(
    WorkflowEvent, ulids, ulids, uuids, st.integers(0, 2**63 - 1), ulids, event_payloads
)
index_payloads = st.one_of(
    st.builds(IndexStarted, texts, texts, texts),
    st.builds(IndexCompleted, INTS, texts),
    st.just(IndexDeleted()),
)
index_events = st.builds(WorkflowIndexEvent, ulids, uuids, uuids, ulids, index_payloads)
replies = st.builds(
    Reply,
    st.none() | ulids,
    st.none() | uuids,
    st.booleans(),
    st.none() | ulids,
    st.none() | st.sampled_from(ErrorCode),
    texts,
)

KINDS = {
    "command": commands,
    "event": events,
    "index_event": index_events,
    "reply": replies,
}
SCHEMA = {
    "command": "Command",
    "event": "WorkflowEvent",
    "index_event": "WorkflowIndexEvent",
    "reply": "Reply",
}
PLAIN = Codec()
REGISTRY = Codec(f"mock://{uuid.uuid4().hex}")


# --- the model as fastavro dicts -------------------------------------------------


def to_avro(value: Any) -> dict[str, Any]:
    """A model value as the dict fastavro writes (tuple notation for unions)."""
    match value:
        case Command():
            return {
                "command_id": value.command_id,
                "workflow_id": value.workflow_id,
                "expected_vid": value.expected_vid,
                "issued_at": value.issued_at,
                "command": (f"{NS}.{type(value.body).__name__}", _fields(value.body)),
            }
        case WorkflowEvent():
            return {
                "event_id": value.event_id,
                "parent": value.parent,
                "workflow_id": value.workflow_id,
                "seq": value.seq,
                "command_id": value.command_id,
                "payload": (f"{NS}.{type(value.payload).__name__}", _fields(value.payload)),
            }
        case WorkflowIndexEvent():
            name = {
                IndexStarted: "DuRootStarted",
                IndexCompleted: "DuRootCompleted",
                IndexDeleted: "DuRootDeleted",
            }[type(value.payload)]
            return {
                "event_id": value.event_id,
                "registry_id": value.registry_id,
                "workflow_id": value.workflow_id,
                "workflow_event_id": value.workflow_event_id,
                "payload": (f"{NS}.index.{name}", _fields(value.payload)),
            }
        case Reply():
            return {
                "command_id": value.command_id,
                "workflow_id": value.workflow_id,
                "ok": value.ok,
                "vid": value.vid,
                "error": None if value.error is None else value.error.value,
                "message": value.message,
            }
    raise TypeError(value)


def _fields(body: Any) -> dict[str, Any]:
    if isinstance(body, Append):
        return {"paths": [{"path": p.path, "usage": p.usage} for p in body.paths]}
    if dataclasses.is_dataclass(body):
        return {f.name: getattr(body, f.name) for f in dataclasses.fields(body)}
    return body._asdict()  # type: ignore[no-any-return]  # a NamedTuple


def _schema(kind: str) -> Any:
    return fastavro.parse_schema(
        json.loads((schemas_dir() / f"{SCHEMA[kind]}.avsc").read_text(encoding="utf-8"))
    )


SCHEMAS = {kind: _schema(kind) for kind in KINDS}


def fastavro_body(kind: str, value: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, SCHEMAS[kind], to_avro(value), strict=True)
    return buf.getvalue()


# --- properties --------------------------------------------------------------------

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_round_trip(kind: str, data: st.DataObject) -> None:
    value = data.draw(KINDS[kind])
    for codec in (PLAIN, REGISTRY):
        encoded = getattr(codec, f"encode_{kind}")(value)
        assert (
            getattr(PLAIN if encoded[0] == 0xC3 else REGISTRY, f"decode_{kind}")(encoded) == value
        )


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_hand_written_coder_equals_fastavro(kind: str, data: st.DataObject) -> None:
    """The body the codec writes is the one fastavro writes, and it reads fastavro's."""
    value = data.draw(KINDS[kind])
    encoded = getattr(PLAIN, f"encode_{kind}")(value)
    body = fastavro_body(kind, value)
    assert encoded[10:] == body
    assert getattr(PLAIN, f"decode_{kind}")(encoded[:10] + body) == value


@pytest.mark.parametrize("kind", KINDS)
@SETTINGS
@given(data=st.data())
def test_any_damage_is_a_codec_error_or_a_valid_value(kind: str, data: st.DataObject) -> None:
    encoded = bytearray(getattr(PLAIN, f"encode_{kind}")(data.draw(KINDS[kind])))
    # Flip a few bytes of the body and cut or extend it.
    for _ in range(data.draw(st.integers(1, 4))):
        if len(encoded) > 10:
            at = data.draw(st.integers(10, len(encoded) - 1))
            encoded[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    damaged = bytes(encoded[:cut]) + data.draw(st.binary(max_size=8))
    decode = getattr(PLAIN, f"decode_{kind}")
    try:
        value = decode(damaged)
    except CodecError:
        return
    # What decodes is a valid value (Avro allows other encodings of it, such
    # as a varint with needless continuation bytes, so the bytes may differ).
    assert decode(getattr(PLAIN, f"encode_{kind}")(value)) == value


@settings(max_examples=500, deadline=None)
@given(data=st.binary(max_size=64), kind=st.sampled_from(list(KINDS)))
def test_random_bodies_never_raise_anything_but_codec_error(data: bytes, kind: str) -> None:
    decode = getattr(PLAIN, f"decode_{kind}")
    prefix = getattr(PLAIN, f"encode_{kind}")(_SAMPLES[kind])[:10]
    for message in (data, prefix + data):
        with contextlib.suppress(CodecError):
            decode(message)


_SAMPLES: dict[str, Any] = {
    "command": Command(NO_VC, str(uuid.UUID(int=1)), NO_VC, 0, Commit()),
    "event": WorkflowEvent(NO_VC, EVENT_EPOCH, str(uuid.UUID(int=1)), 0, NO_VC, DuRootCommitted()),
    "index_event": WorkflowIndexEvent(
        NO_VC, str(uuid.UUID(int=2)), str(uuid.UUID(int=1)), NO_VC, IndexDeleted()
    ),
    "reply": Reply(None, None, True, None, None, ""),
}


@SETTINGS
@given(event=events)
def test_event_headers_round_trip(event: WorkflowEvent) -> None:
    h = parse_event_headers(event_headers(event))
    assert (h.workflow_id, h.vid, h.parent, h.seq, h.command_id) == (
        event.workflow_id,
        event.event_id,
        event.parent,
        event.seq,
        event.command_id,
    )


def _chained(events: list[WorkflowEvent], chain: bool, same: bool) -> list[WorkflowEvent]:
    """`events` as one decision makes them (chained, one workflow and command), or not."""
    out: list[WorkflowEvent] = []
    for e in events:
        if out and same:
            e = e._replace(workflow_id=out[0].workflow_id, command_id=out[0].command_id)
        if out and chain:
            e = e._replace(parent=out[-1].event_id)
        out.append(e)
    return out


@SETTINGS
@given(
    batch=st.lists(events, max_size=6), chain=st.booleans(), same=st.booleans(),
    codec=st.sampled_from([PLAIN, REGISTRY]),
)  # fmt: skip
def test_a_decision_s_events_encode_as_each_alone(
    batch: list[WorkflowEvent], chain: bool, same: bool, codec: Codec
) -> None:
    """A decision's event records (shared fields encoded once) = each event alone: key,
    value and headers."""
    batch = _chained(batch, chain, same)
    assert codec.event_records(batch, "t", 2) == [
        ("t", 2, e.key.encode(), codec.encode_event(e, validate=False), event_headers(e))
        for e in batch
    ]


@given(
    text=st.one_of(
        st.text(max_size=40),
        uuids,
        uuids.map(str.upper),
        st.uuids().map(lambda u: u.hex),
        st.uuids().map(lambda u: u.urn),
    )
)
def test_uuid_check_is_the_canonical_uuid_text(text: str) -> None:
    """Accepted workflow ids are exactly those with str(uuid.UUID(x)) == x."""
    try:
        canonical = str(uuid.UUID(text)) == text
    except ValueError:
        canonical = False
    command = Command(NO_VC, text, NO_VC, 0, Commit())
    try:
        PLAIN.encode_command(command)
        accepted = True
    except CodecError:
        accepted = False
    assert accepted == canonical


# Near misses: the right length and shape with one character out of place.
_ID_TEXTS = st.one_of(
    st.text(max_size=40),
    ulids,
    ulids.map(str.lower),
    uuids,
    uuids.map(str.upper),
    st.builds(
        lambda text, at, c: text[:at] + c + text[at + 1 :],
        st.one_of(ulids, uuids),
        st.integers(0, 35),
        st.characters(),
    ),
)


@given(text=_ID_TEXTS)
def test_the_id_checks_are_the_domain_s_rules(text: str) -> None:
    """The codec's checks without a regex accept exactly what ULID_RE and UUID_RE do."""
    assert is_ulid(text) == (ULID_RE.fullmatch(text) is not None)
    assert is_uuid(text) == (UUID_RE.fullmatch(text) is not None)
