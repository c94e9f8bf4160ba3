"""The walk that refuses union branches and enum indices out of range before fastavro
resolves an older writer's body (fastavro reads branch -1 as the last branch)."""

from __future__ import annotations

from io import BytesIO
from typing import Any

import fastavro
import pytest

from duroot_stream.wire.avro_walk import check_indices
from duroot_stream.wire.codec_error import CodecError

SCHEMA: Any = fastavro.parse_schema(
    {
        "type": "record",
        "name": "t.Cmd",
        "fields": [
            {"name": "id", "type": "string"},
            {"name": "tags", "type": {"type": "array", "items": "string"}},
            {"name": "kind", "type": {"type": "enum", "name": "t.Kind", "symbols": ["A", "B"]}},
            {
                "name": "body",
                "type": [
                    {"type": "record", "name": "t.Init", "fields": [{"name": "x", "type": "long"}]},
                    {"type": "record", "name": "t.Delete", "fields": []},
                ],
            },
            {"name": "again", "type": ["null", "t.Init"]},
        ],
    }
)


def body(record: dict[str, Any]) -> bytes:
    out = BytesIO()
    fastavro.schemaless_writer(out, SCHEMA, record)
    return out.getvalue()


VALID = body({"id": "c1", "tags": ["a"], "kind": "B", "body": {"x": 7}, "again": {"x": 1}})
# id (len 2, "c1"), tags (count 1, len 1, "a", end 0), then kind's index, body's branch
KIND_AT = 3 + 4
BRANCH_AT = KIND_AT + 1


def test_a_valid_body_passes() -> None:
    check_indices(SCHEMA, VALID, 0)


def test_a_negative_branch_is_refused_where_fastavro_reads_the_last_branch() -> None:
    # zigzag 1 = -1, and without Init's field: a well-formed Delete to fastavro
    bad = VALID[:BRANCH_AT] + b"\x01" + VALID[BRANCH_AT + 2 :]
    read: Any = fastavro.schemaless_reader(BytesIO(bad), SCHEMA, return_record_name=True)
    assert read["body"][0] == "t.Delete"  # why the walk exists
    with pytest.raises(CodecError, match="body: union branch -1 is out of range"):
        check_indices(SCHEMA, bad, 0)


def test_a_branch_past_the_end_and_an_enum_index_out_of_range_are_refused() -> None:
    with pytest.raises(CodecError, match="union branch 2"):
        check_indices(SCHEMA, VALID[:BRANCH_AT] + b"\x04" + VALID[BRANCH_AT + 1 :], 0)
    with pytest.raises(CodecError, match="kind: enum index -1"):
        check_indices(SCHEMA, VALID[:KIND_AT] + b"\x01" + VALID[KIND_AT + 1 :], 0)


def test_a_body_that_ends_early_is_an_index_error() -> None:
    with pytest.raises(IndexError):
        check_indices(SCHEMA, VALID[:-3], 0)
