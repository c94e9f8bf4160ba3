"""A real Schema Registry (Apicurio, Confluent-compatible API) instead of `mock://`.

Subjects follow the record name strategy: the subject of a schema is its full
record name (`io.duroot.stream.Command`, ...), whatever topic carries it,
because replies go to any topic a requester names in `reply-topic`.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient, SchemaRegistryError

from duroot_stream.client import DuRootClient, DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import DuUpdated, PathUsage, StateCode, WorkflowEvent
from duroot_stream.local.registry import LocalRegistry
from duroot_stream.wire import Codec, Topics, schemas_dir
from tests.kafka_helpers import read_all
from tests.processor_harness import running_processor, setup_topics

pytestmark = pytest.mark.broker

SUBJECTS = {
    "io.duroot.stream.Command",
    "io.duroot.stream.WorkflowEvent",
    "io.duroot.stream.WorkflowIndexEvent",
    "io.duroot.stream.Reply",
}
EVENT_SUBJECT = "io.duroot.stream.WorkflowEvent"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    log_file = Path(tmp_path_factory.mktemp("registry")) / "registry.log"
    with LocalRegistry(log_file=log_file) as running:
        yield running


def client_of(registry: LocalRegistry) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry.url})


def schema_text(known: SchemaRegistryClient, schema_id: int) -> str:
    text = known.get_schema(schema_id).schema_str
    assert text is not None
    return text


def read_record(body: bytes, writer: Any, reader: Any | None = None) -> dict[str, Any]:
    record = fastavro.schemaless_reader(
        io.BytesIO(body),
        fastavro.parse_schema(writer),
        None if reader is None else fastavro.parse_schema(reader),
        return_record_name=True,
    )
    assert isinstance(record, dict)
    return record


def event_schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((schemas_dir() / "WorkflowEvent.avsc").read_text())
    return loaded


def test_the_pipeline_runs_through_the_registry(
    kafka: KafkaConfig, registry: LocalRegistry
) -> None:
    kafka = replace(kafka, schema_registry_url=registry.url)
    setup_topics(kafka)
    with running_processor(kafka), DuRootClient(kafka) as client:
        begun = client.begin(
            "0b0c8d4e-1111-4222-8333-444455556666", "/reg/data", "fs-reg", "/srv/reg"
        )
        vid = client.append_many(begun.workflow_id, [("a", 1024), ("b", 2048)])
        client.commit(begun.workflow_id, expected_vid=vid)
        with DuRootReader(kafka) as reader:
            result = reader.get_du(begun.workflow_id, wait=True, timeout=60)
            status = reader.status(begun.workflow_id)
    assert list(result.lines) == [PathUsage("a", 1024), PathUsage("b", 2048)]
    assert status.state is StateCode.TERMINATED
    # Everything on the topics is in the Confluent framing, with ids the registry knows.
    topics = Topics(kafka.topic_prefix)
    values = [v for r in read_all(kafka.bootstrap_servers, topics.events) if (v := r.value())]
    assert values and all(v[:1] == b"\x00" for v in values)
    known = client_of(registry)
    for value in values[:3]:
        (schema_id,) = struct.unpack(">I", value[1:5])
        assert json.loads(schema_text(known, schema_id))["name"] == "WorkflowEvent"
    assert set(known.get_subjects()) >= SUBJECTS


def test_schema_evolution_through_the_registry(registry: LocalRegistry) -> None:
    codec = Codec(registry.url)
    event = WorkflowEvent(
        "01JDQ7ZK3P0000000000000002",
        "01JDQ7ZK3P0000000000000001",
        "6f1c0a3e-5b1d-4c2a-9e3f-0123456789ab",
        1,
        "01JDQ7ZK3M5V8X9Y0A1B2C3D4E",
        DuUpdated("a/b", 42),
    )
    old_bytes = codec.encode_event(event)  # registers the current schema
    known = client_of(registry)
    known.set_compatibility(EVENT_SUBJECT, "BACKWARD")

    newer = event_schema()
    newer["fields"].append(
        {"name": "note", "type": "string", "default": "", "doc": "a field of a later version"}
    )
    new_id = known.register_schema(EVENT_SUBJECT, Schema(json.dumps(newer), "AVRO"))
    (old_id,) = struct.unpack(">I", old_bytes[1:5])
    assert new_id != old_id

    # A newer writer, read by this (older) codec: the new field is dropped.
    record = read_record(old_bytes[5:], event_schema())
    record["note"] = "written by a newer producer"
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(newer), record)
    framed = b"\x00" + struct.pack(">I", new_id) + body.getvalue()
    assert codec.decode_event(framed) == event

    # This codec's records, read by a newer reader: the new field takes its default.
    writer = json.loads(schema_text(known, old_id))
    upgraded = read_record(old_bytes[5:], writer, newer)
    assert upgraded["note"] == "" and upgraded["event_id"] == event.event_id

    # The registry guards the subject: a field without a default breaks old data.
    breaking = copy.deepcopy(newer)
    breaking["fields"].append({"name": "required_later", "type": "string"})
    with pytest.raises(SchemaRegistryError) as refused:
        known.register_schema(EVENT_SUBJECT, Schema(json.dumps(breaking), "AVRO"))
    assert refused.value.http_status_code == 409
