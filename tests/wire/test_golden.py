"""Golden bytes: an encoded example of every record type and body, in both framings.

`tests/golden/records.json` is part of the contract (docs/contract.md): other
languages can test their coders against it. Each example holds the hex of the
single-object encoding, the hex of the bare Avro body (what follows the
Confluent header `00 <4-byte schema id>`), and the value as Avro's generic
form (what fastavro or Java's GenericRecord reads). The tests check all three
directions, so a change that alters bytes fails here loudly.

To write the file anew after a deliberate schema change:
`DUROOT_GOLDEN_WRITE=1 .venv/bin/pytest tests/test_golden.py`.
"""

from __future__ import annotations

import io
import json
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import fastavro
import pytest

from duroot_stream.domain import (
    NO_VC,
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
from duroot_stream.wire import Codec, schemas_dir

GOLDEN = Path(__file__).parent / "golden" / "records.json"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"

WF = "6f1c0a3e-5b1d-4c2a-9e3f-0123456789ab"
REG = "0b0c8d4e-1111-4222-8333-444455556666"
CMD = "01JDQ7ZK3M5V8X9Y0A1B2C3D4E"
VID1 = "01JDQ7ZK3P0000000000000001"
VID2 = "01JDQ7ZK3P0000000000000002"
AT = 1_733_011_200_123

Record = Command | WorkflowEvent | WorkflowIndexEvent | Reply

EXAMPLES: dict[str, Record] = {
    "command-init": Command(CMD, WF, NO_VC, AT, Init(REG, "/example/data", "fs1", "/srv/data")),
    "command-append": Command(
        CMD,
        WF,
        VID1,
        AT,
        Append((PathUsage("a", 4096), PathUsage("b/ü", 0), PathUsage(".", 2**40))),
    ),
    "command-commit": Command(CMD, WF, VID2, AT, Commit()),
    "command-fail": Command(CMD, WF, VID2, AT, Fail(-3, "du failed: no such file")),
    "command-abort-expired": Command(CMD, WF, NO_VC, AT, AbortExpired()),
    "command-end": Command(CMD, WF, NO_VC, AT, End()),
    "command-delete": Command(CMD, WF, NO_VC, AT, Delete()),
    "event-started": WorkflowEvent(
        VID1,
        "00000000000000000000000000",
        WF,
        0,
        CMD,
        DuRootStarted(REG, "/example/data", "fs1", "/srv/data"),
    ),
    "event-updated": WorkflowEvent(VID2, VID1, WF, 1, CMD, DuUpdated("a/b", 123_456_789)),
    "event-completed": WorkflowEvent(VID2, VID1, WF, 7, CMD, DuRootCompleted(104, "expired")),
    "event-committed": WorkflowEvent(VID2, VID1, WF, 8, CMD, DuRootCommitted()),
    "index-started": WorkflowIndexEvent(
        VID2, REG, WF, VID1, IndexStarted("/example/data", "fs1", "/srv/data")
    ),
    "index-completed": WorkflowIndexEvent(VID2, REG, WF, VID1, IndexCompleted(0, "")),
    "index-deleted": WorkflowIndexEvent(VID2, REG, WF, VID1, IndexDeleted()),
    "reply-ok": Reply(CMD, WF, True, VID2, None, ""),
    "reply-conflict": Reply(
        CMD,
        WF,
        False,
        None,
        ErrorCode.VERSION_CONFLICT,
        f"version conflict: stored vid {VID2}, expected vid {VID1}",
    ),
    "reply-malformed": Reply(None, None, False, None, ErrorCode.MALFORMED, "empty value"),
}

SCHEMA_OF = {
    Command: "Command",
    WorkflowEvent: "WorkflowEvent",
    WorkflowIndexEvent: "WorkflowIndexEvent",
    Reply: "Reply",
}


def encode(codec: Codec, value: Record) -> bytes:
    match value:
        case Command():
            return codec.encode_command(value)
        case WorkflowEvent():
            return codec.encode_event(value)
        case WorkflowIndexEvent():
            return codec.encode_index_event(value)
        case Reply():
            return codec.encode_reply(value)


def decode(codec: Codec, schema: str, data: bytes) -> Record:
    match schema:
        case "Command":
            return codec.decode_command(data)
        case "WorkflowEvent":
            return codec.decode_event(data)
        case "WorkflowIndexEvent":
            return codec.decode_index_event(data)
        case _:
            return codec.decode_reply(data)


def without_logical_types(schema: Any) -> Any:
    # The generic form keeps timestamp-millis as its long, as it is on the wire.
    if isinstance(schema, dict):
        return {k: without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    if isinstance(schema, list):
        return [without_logical_types(v) for v in schema]
    return schema


def parsed_schema(name: str) -> Any:
    text = (schemas_dir() / f"{name}.avsc").read_text(encoding="utf-8")
    return fastavro.parse_schema(without_logical_types(json.loads(text)))


def generic(schema: str, body: bytes) -> Any:
    """The body as Avro's generic form, read by fastavro (not by our coders)."""
    value = fastavro.schemaless_reader(
        io.BytesIO(body), parsed_schema(schema), return_record_name=True
    )
    return json.loads(json.dumps(value, ensure_ascii=False))


def build() -> dict[str, Any]:
    codec = Codec()
    examples: dict[str, Any] = {}
    for name, value in EXAMPLES.items():
        schema = SCHEMA_OF[type(value)]
        single = encode(codec, value)
        body = single[10:]
        examples[name] = {
            "schema": f"io.duroot.stream.{schema}",
            "single_object": single.hex(),
            "fingerprint": single[2:10].hex(),
            "body": body.hex(),
            "value": generic(schema, body),
        }
    return {
        "about": "Encoded examples of every record type (docs/contract.md). single_object = "
        "C3 01 + 8-byte little-endian CRC-64-AVRO fingerprint + body; the Confluent framing "
        "is 00 + 4-byte big-endian schema id + body. value = the body read as Avro's "
        "generic form (unions of records as {'-type': name, ...} per fastavro).",
        "examples": examples,
    }


def load() -> dict[str, Any]:
    if os.environ.get("DUROOT_GOLDEN_WRITE") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        text = json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
        GOLDEN.write_text(text, encoding="utf-8")
    data: dict[str, Any] = json.loads(GOLDEN.read_text(encoding="utf-8"))
    return data


GOLDEN_DATA = load()["examples"]


def test_every_record_type_and_body_has_an_example() -> None:
    assert set(GOLDEN_DATA) == set(EXAMPLES)
    bodies = {type(getattr(v, "body", getattr(v, "payload", v))) for v in EXAMPLES.values()}
    expected = {Init, Append, Commit, Fail, AbortExpired, End, Delete}
    expected |= {DuRootStarted, DuUpdated, DuRootCompleted, DuRootCommitted}
    expected |= {IndexStarted, IndexCompleted, IndexDeleted, Reply}
    assert bodies == expected


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_encoding_gives_the_golden_bytes(name: str) -> None:
    assert encode(Codec(), EXAMPLES[name]).hex() == GOLDEN_DATA[name]["single_object"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_golden_bytes_decode_to_the_value(name: str) -> None:
    golden = GOLDEN_DATA[name]
    schema = golden["schema"].rpartition(".")[2]
    data = bytes.fromhex(golden["single_object"])
    assert data[:2] == SINGLE_OBJECT_MAGIC
    assert decode(Codec(), schema, data) == EXAMPLES[name]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_the_golden_body_is_the_generic_value(name: str) -> None:
    # Independent of our coders: fastavro reads the body with the .avsc file.
    golden = GOLDEN_DATA[name]
    schema = golden["schema"].rpartition(".")[2]
    assert generic(schema, bytes.fromhex(golden["body"])) == golden["value"]
    assert golden["single_object"] == "c301" + golden["fingerprint"] + golden["body"]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_confluent_framing_carries_the_same_body(name: str) -> None:
    codec = Codec(f"mock://golden-{uuid.uuid4()}")
    golden = GOLDEN_DATA[name]
    schema = golden["schema"].rpartition(".")[2]
    framed = encode(codec, EXAMPLES[name])
    assert framed[:1] == b"\x00"
    (schema_id,) = struct.unpack(">I", framed[1:5])
    assert framed[5:].hex() == golden["body"]
    # A record framed by hand from the golden body decodes to the value.
    by_hand = b"\x00" + struct.pack(">I", schema_id) + bytes.fromhex(golden["body"])
    assert decode(codec, schema, by_hand) == EXAMPLES[name]
