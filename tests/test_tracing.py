"""Trace context end to end: W3C `traceparent`/`tracestate` from a command onto
its events, index events, reply and dead letter; OpenTelemetry publish and
process spans (the SDK's in-memory exporter) when the API is installed, and the
headers still carried when it is not."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import KafkaError, Message, Producer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from duroot_stream import tracing
from duroot_stream.client import DuRootClient
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Commit, Init
from duroot_stream.kafka import header, headers
from duroot_stream.tracing import TRACEPARENT, TRACESTATE
from duroot_stream.wire import (
    Codec,
    Topics,
    parse_event_headers,
    partition_for,
    reply_route_headers,
    trace_carrier,
)
from tests.kafka_helpers import read_all, wait_until
from tests.processor_harness import PARTITIONS, command, running_processor, setup_topics

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
STATE = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
REGISTRY = "5f0c7a1e-3d2b-4c8e-9a6f-1b2c3d4e5f60"


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """The SDK with an in-memory exporter as duroot_stream's tracer provider (not the
    global one, so that no other test records into it)."""
    otel = tracing._otel
    assert otel is not None, "the dev extra installs opentelemetry-api"
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(otel, "provider", provider)
    yield exporter
    provider.shutdown()


@pytest.fixture
def no_otel(monkeypatch: pytest.MonkeyPatch) -> None:
    """duroot_stream.tracing as it runs without opentelemetry-api."""
    monkeypatch.setattr(tracing, "_otel", None)


@pytest.fixture(params=["absent", "api only"])
def no_sdk(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without opentelemetry-api, or with the API and no SDK (nothing records)."""
    if request.param == "absent":
        monkeypatch.setattr(tracing, "_otel", None)
    else:
        assert tracing._otel is not None
        monkeypatch.setattr(tracing._otel, "provider", trace.NoOpTracerProvider())


def ids(span: ReadableSpan) -> tuple[str, str]:
    """(trace id, span id) in the hex of a traceparent."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def parent_id(span: ReadableSpan) -> str | None:
    return None if span.parent is None else f"{span.parent.span_id:016x}"


def split(traceparent: bytes | None) -> tuple[str, str]:
    """(trace id, parent id) of a traceparent. Its flags are not compared: the SDK may
    set "random trace id" (W3C level 2) beside "sampled"."""
    _, trace_id, span_id, _ = (traceparent or b"").decode().split("-")
    return trace_id, span_id


def traceparent_of(message: Message) -> tuple[str, str]:
    """(trace id, parent id) of a record's traceparent; it must have exactly one."""
    found = [v for k, v in headers(message) if k == TRACEPARENT]
    assert len(found) == 1, f"traceparent headers: {found}"
    return split(found[0])


# --- the header picker ------------------------------------------------------------


def test_a_valid_context_is_picked_from_the_headers() -> None:
    record: list[tuple[str, bytes | str | None]] = [
        ("vid", b"x"),
        (TRACEPARENT, PARENT.encode()),
        (TRACESTATE, f" {STATE} ".encode()),
    ]
    assert trace_carrier(record) == {TRACEPARENT: PARENT, TRACESTATE: STATE}
    assert trace_carrier([(TRACEPARENT, PARENT)]) == {TRACEPARENT: PARENT}  # str values too
    later = f"00-{TRACE_ID}-{'1' * 16}-00"
    assert trace_carrier([(TRACEPARENT, PARENT.encode()), (TRACEPARENT, later.encode())]) == {
        TRACEPARENT: later
    }, "of a repeated header the last counts"
    future = f"01-{TRACE_ID}-{PARENT_ID}-01-more"
    assert trace_carrier([(TRACEPARENT, future.encode())]) == {TRACEPARENT: future}


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"\xff\xfe",
        b"",
        f"ff-{TRACE_ID}-{PARENT_ID}-01".encode(),  # version ff is invalid
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01".encode(),
        f"00-{'0' * 32}-{PARENT_ID}-01".encode(),
        f"00-{TRACE_ID}-{'0' * 16}-01".encode(),
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra".encode(),  # version 00 has four fields
        f"00-{TRACE_ID[:-1]}-{PARENT_ID}-01".encode(),
        f"01-{TRACE_ID}-{PARENT_ID}-01-{'x' * 300}".encode(),  # too long to pass on
    ],
)
def test_an_invalid_traceparent_carries_no_context(value: bytes | None) -> None:
    assert trace_carrier([(TRACEPARENT, value), (TRACESTATE, STATE.encode())]) == {}


def test_a_tracestate_that_is_too_long_or_not_text_is_dropped() -> None:
    for state in (b"a=" + b"b" * 511, b"\xff=1", b"  "):
        assert trace_carrier([(TRACEPARENT, PARENT.encode()), (TRACESTATE, state)]) == {
            TRACEPARENT: PARENT
        }
    assert trace_carrier([(TRACESTATE, STATE.encode())]) == {}
    assert trace_carrier(None) == {}


# --- what the processor's records carry (no broker) -------------------------------


def messaging(operation: str, partition: str) -> dict[str, object]:
    """The attributes every span has (semantic conventions 1.27.0), for topic p.commands, key wf."""
    return {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": "p.commands",
        "messaging.destination.partition.id": partition,
        "messaging.kafka.message.key": "wf",
    }


def consumed(*record_headers: tuple[str, bytes]) -> Message:
    return Message(
        topic="p.commands",
        partition=2,
        offset=7,
        key=b"wf",
        value=b"",
        headers=list(record_headers),
    )


def test_records_outside_a_command_are_left_alone() -> None:
    mine: list[tuple[str, bytes | None]] = [("vid", b"1")]
    assert tracing.carried(mine) is mine
    assert tracing.carried(None) is None


@pytest.mark.usefixtures("no_sdk")
def test_without_a_span_the_commands_context_is_passed_on() -> None:
    carrier = {TRACEPARENT: PARENT, TRACESTATE: STATE}
    traced = [(TRACEPARENT, PARENT.encode()), (TRACESTATE, STATE.encode())]
    with tracing.processing(consumed(), carrier, "g"):
        dead_letter: list[tuple[str, bytes | None]] = [
            (TRACEPARENT, b"00-original"),
            ("dlq-reason", b"undecodable"),
        ]
        assert tracing.carried(dead_letter) == [("dlq-reason", b"undecodable"), *traced]
        assert tracing.carried(None) == [
            (TRACEPARENT, PARENT.encode()),
            (TRACESTATE, STATE.encode()),
        ]
    with tracing.processing(consumed(), {}, "g"):
        assert tracing.carried(None) is None
    with tracing.publishing("p.commands", 0, "wf", "c1") as trace_headers:
        assert trace_headers == ()


def test_with_the_api_alone_the_client_passes_the_applications_context_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert tracing._otel is not None
    monkeypatch.setattr(tracing._otel, "provider", trace.NoOpTracerProvider())
    remote = trace.SpanContext(
        int(TRACE_ID, 16), int(PARENT_ID, 16), is_remote=True, trace_flags=trace.TraceFlags(1)
    )
    with (
        trace.use_span(trace.NonRecordingSpan(remote)),
        tracing.publishing("p.commands", 0, "wf", "c1") as trace_headers,
    ):
        assert trace_headers == ((TRACEPARENT, PARENT.encode()),)


def test_the_process_span_is_a_child_of_the_commands_context(
    spans: InMemorySpanExporter,
) -> None:
    carrier = {TRACEPARENT: PARENT, TRACESTATE: STATE}
    with tracing.processing(consumed(), carrier, "duroot-processor"):
        out = dict(tracing.carried([("vid", b"1")]) or [])
    (span,) = spans.get_finished_spans()
    trace_id, span_id = ids(span)
    assert (trace_id, parent_id(span)) == (TRACE_ID, PARENT_ID)
    assert span.name == "process p.commands"
    assert span.kind is trace.SpanKind.CONSUMER
    assert dict(span.attributes or {}) == {
        **messaging("process", "2"),
        "messaging.kafka.offset": 7,
        "messaging.consumer.group.name": "duroot-processor",
    }
    # The records written meanwhile carry the process span's context, and the state.
    assert out == {
        "vid": b"1",
        TRACEPARENT: f"00-{TRACE_ID}-{span_id}-01".encode(),
        TRACESTATE: STATE.encode(),
    }


def test_a_command_without_context_starts_a_trace_and_errors_get_no_span(
    spans: InMemorySpanExporter,
) -> None:
    with tracing.processing(consumed(), {}, "g"):
        out = tracing.carried(None)
    (span,) = spans.get_finished_spans()
    trace_id, span_id = ids(span)
    assert span.parent is None
    assert out is not None and [name for name, _ in out] == [TRACEPARENT]
    assert split(out[0][1]) == (trace_id, span_id)
    error = Message(topic="p.commands", partition=0, error=KafkaError(KafkaError._PARTITION_EOF))
    with tracing.processing(error, {TRACEPARENT: PARENT}, "g"):
        assert tracing.carried(None) is None
    assert len(spans.get_finished_spans()) == 1


def test_the_publish_span_is_a_child_of_the_current_span(spans: InMemorySpanExporter) -> None:
    tracer = tracing._otel.tracer() if tracing._otel else None
    assert tracer is not None
    with (
        tracer.start_as_current_span("caller"),
        tracing.publishing("p.commands", 1, "wf", "01CMD") as trace_headers,
    ):
        pass
    publish, caller = spans.get_finished_spans()
    trace_id, span_id = ids(publish)
    assert parent_id(publish) == ids(caller)[1] and trace_id == ids(caller)[0]
    assert publish.name == "publish p.commands"
    assert publish.kind is trace.SpanKind.PRODUCER
    assert dict(publish.attributes or {}) == {
        **messaging("publish", "1"),
        "messaging.message.id": "01CMD",
    }
    ((name, value),) = trace_headers
    assert name == TRACEPARENT and split(value) == (trace_id, span_id)


def test_tracing_imports_without_opentelemetry() -> None:
    # A fresh interpreter in which `import opentelemetry` fails.
    script = """
import sys
sys.modules["opentelemetry"] = None
from duroot_stream import tracing
from duroot_stream.wire import trace_carrier
assert not tracing.enabled()
with tracing.publishing("t", 0, "k", "id") as added:
    assert added == ()
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


# --- end to end, real broker and processor ----------------------------------------


@pytest.fixture
def pipeline(kafka: KafkaConfig) -> Iterator[KafkaConfig]:
    setup_topics(kafka)
    with running_processor(kafka):
        yield kafka


def workflow_records(kafka: KafkaConfig, topic: str, workflow_id: str) -> list[Message]:
    """Records of `topic` whose key starts with the workflow id (events and index)."""
    return [
        m
        for m in read_all(kafka.bootstrap_servers, topic)
        if (m.key() or b"").decode().startswith(workflow_id)
    ]


@pytest.mark.broker
def test_one_trace_from_begin_to_the_completed_event(
    pipeline: KafkaConfig, spans: InMemorySpanExporter
) -> None:
    topics = Topics(pipeline.topic_prefix)
    tracer = tracing._otel.tracer() if tracing._otel else None
    assert tracer is not None
    with DuRootClient(pipeline, timeout=30) as client, tracer.start_as_current_span("du root"):
        begun = client.begin(REGISTRY, "/example/data", "files.example.org", "/srv/data")
        vid = client.append(begun.workflow_id, [("a", 4096)])
        client.commit(begun.workflow_id, expected_vid=vid)
    finished = spans.get_finished_spans()
    root = next(s for s in finished if s.name == "du root")
    trace_id = ids(root)[0]
    assert {ids(s)[0] for s in finished} == {trace_id}, "one trace"

    events = workflow_records(pipeline, topics.events, begun.workflow_id)
    by_type = {parse_event_headers(headers(m)).event_type: m for m in events}
    assert set(by_type) == {"STARTED", "UPDATED", "COMPLETED", "COMMITTED"}
    completed = by_type["COMPLETED"]
    commit_id = parse_event_headers(headers(completed)).command_id

    # begin -> publish (the Commit) -> process (the Commit) -> the COMPLETED event. (A
    # command re-sent under load is processed again: a second process span, no event.)
    completed_trace, completed_parent = traceparent_of(completed)
    assert completed_trace == trace_id
    process = next(s for s in finished if ids(s)[1] == completed_parent)
    assert process.name == f"process {topics.commands}"
    assert process.kind is trace.SpanKind.CONSUMER
    attributes = dict(process.attributes or {})
    assert attributes["messaging.kafka.message.key"] == begun.workflow_id
    assert attributes["messaging.destination.partition.id"] == str(
        partition_for(begun.workflow_id, PARTITIONS)
    )
    publish = next(s for s in finished if ids(s)[1] == parent_id(process))
    assert publish.name == f"publish {topics.commands}"
    assert (publish.attributes or {})["messaging.message.id"] == commit_id
    assert parent_id(publish) == ids(root)[1]
    # Every event, index event and reply of the workflow is in the trace.
    assert {traceparent_of(m)[0] for m in events} == {trace_id}
    index = workflow_records(pipeline, topics.index, begun.workflow_id)
    assert index and {traceparent_of(m)[0] for m in index} == {trace_id}
    command_ids = {parse_event_headers(headers(m)).command_id for m in events}
    replies = [
        m
        for m in read_all(pipeline.bootstrap_servers, topics.replies)
        if header(m, "correlation-id") in command_ids
    ]
    assert {header(m, "correlation-id") for m in replies} == command_ids
    assert {traceparent_of(m)[0] for m in replies} == {trace_id}
    assert len([s for s in finished if s.name == f"publish {topics.commands}"]) == 3


@pytest.mark.broker
@pytest.mark.usefixtures("no_otel")
def test_without_opentelemetry_a_commands_headers_are_passed_on(pipeline: KafkaConfig) -> None:
    topics = Topics(pipeline.topic_prefix)
    workflow_id = str(uuid.uuid4())
    producer = Producer({"bootstrap.servers": pipeline.bootstrap_servers})
    traced = [(TRACEPARENT, PARENT.encode()), (TRACESTATE, STATE.encode())]
    codec = Codec()
    init = command(workflow_id, Init(REGISTRY, "/data", "host", "/srv/data"))
    commit = command(workflow_id, Commit())
    sent: list[tuple[str | None, bytes]] = [
        (workflow_id, codec.encode_command(init)),
        (workflow_id, codec.encode_command(commit)),
        (None, b"not a command"),  # undecodable: a dead letter with the original's headers
        (None, b"x" * 995_000),  # too large: a dead letter cut to fit, without them
    ]
    for key, value in sent:
        correlation = str(uuid.uuid4())
        producer.produce(
            topics.commands,
            value,
            key.encode() if key else None,
            partition=partition_for(workflow_id, PARTITIONS) if key else 0,
            headers=[*reply_route_headers(topics.replies, 0, correlation), *traced],
        )
    assert producer.flush(30) == 0

    def records(topic: str, count: int) -> list[Message]:
        found = [m for m in read_all(pipeline.bootstrap_servers, topic) if m.value() is not None]
        return found if len(found) >= count else []

    events = wait_until(lambda: records(topics.events, 3), timeout=30, what="the events")
    index = wait_until(lambda: records(topics.index, 1), timeout=30, what="the index events")
    replies = wait_until(lambda: records(topics.replies, 4), timeout=30, what="the replies")
    dead = wait_until(lambda: records(topics.dlq, 2), timeout=30, what="the dead letters")
    for record in [*events, *index, *replies, *dead]:
        found = [(k, v) for k, v in headers(record) if k in (TRACEPARENT, TRACESTATE)]
        assert found == traced, f"{record.topic()}@{record.offset()}"

    # And a client without OpenTelemetry sends no trace headers.
    with DuRootClient(pipeline, timeout=30) as client:
        begun = client.begin(REGISTRY, "/example/data", "files.example.org", "/srv/data")
    sent_commands = [
        m
        for m in read_all(pipeline.bootstrap_servers, topics.commands)
        if m.key() == begun.workflow_id.encode()
    ]
    assert len(sent_commands) == 1
    assert trace_carrier(headers(sent_commands[0])) == {}
    assert header(sent_commands[0], TRACEPARENT) is None


@pytest.mark.broker
def test_a_resent_command_stays_in_its_first_sends_trace(
    pipeline: KafkaConfig, spans: InMemorySpanExporter
) -> None:
    lost: list[Message] = []
    with DuRootClient(pipeline, timeout=6, retries=2) as client:  # re-send after 2 s
        exchange = client._exchange
        deliver = exchange.on_reply

        def lose_the_first_reply(msg: Message) -> None:
            if not lost and msg.error() is None and header(msg, "correlation-id"):
                lost.append(msg)
                return
            deliver(msg)

        exchange.on_reply = lose_the_first_reply  # type: ignore[method-assign]
        begun = client.begin(REGISTRY, "/g", "h", "/srv")
    assert len(lost) == 1
    (publish,) = [s for s in spans.get_finished_spans() if s.name.startswith("publish ")]
    sent = [
        m
        for m in read_all(pipeline.bootstrap_servers, Topics(pipeline.topic_prefix).commands)
        if m.key() == begun.workflow_id.encode()
    ]
    assert len(sent) == 2, "the command and its re-send"
    assert {traceparent_of(m) for m in sent} == {ids(publish)}
