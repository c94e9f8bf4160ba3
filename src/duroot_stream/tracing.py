"""Trace context across Kafka: the optional OpenTelemetry glue.

A command's W3C trace context (`traceparent`, `tracestate` headers) is carried
onto every record the processor writes for it: its events, index events, reply
or dead letter. With `opentelemetry-api` installed (the `otel` extra), the
client makes a "publish" span for each command it sends and injects its context,
and the processor makes a "process" span around handling each command, a child
of the context the command carries; the records it writes then carry the process
span's context. Without it nothing is imported, no span is made, the client
sends no trace headers, and the processor passes a command's on unchanged. With
the API but no SDK set up (nothing would record), no span is made either: the
processor passes the headers on, the client sends the application's current
context if it has one.

Spans follow OpenTelemetry's messaging semantic conventions, version 1.27.0
(`SEMCONV_SCHEMA_URL`): names `publish <topic>` (PRODUCER) and
`process <topic>` (CONSUMER), `messaging.system` = `kafka`, and the attributes
named below. The propagator is W3C Trace Context, whatever the global one is:
the headers are part of the wire contract.

This module knows the header names (they are W3C's) but not how to read them
from a record: `wire.trace_carrier` picks and checks them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final, Protocol

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the `otel` extra is not installed: headers are still carried
    _trace = None  # type: ignore[assignment]

__all__ = [
    "SEMCONV_SCHEMA_URL",
    "TRACEPARENT",
    "TRACESTATE",
    "Carrier",
    "TraceHeaders",
    "carried",
    "enabled",
    "processing",
    "publishing",
]

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"
_NAMES = frozenset((TRACEPARENT, TRACESTATE))

SEMCONV_SCHEMA_URL = "https://opentelemetry.io/schemas/1.27.0"

# A W3C text map: {"traceparent": ..., "tracestate": ...} (tracestate optional).
Carrier = Mapping[str, str]
# Headers as the processor produces them.
RecordHeaders = Sequence[tuple[str, bytes | None]]
# `traceparent` (and `tracestate`) as Kafka headers, in that order.
TraceHeaders = tuple[tuple[str, bytes], ...]

# The trace headers of the records produced now: set by `processing` for the
# command being handled (the processor handles one at a time per thread).
_outgoing: ContextVar[TraceHeaders] = ContextVar("duroot_trace", default=())


class _OpenTelemetry:
    """The API objects, made once, and the tracer of the tracer provider in use."""

    def __init__(self) -> None:
        assert _trace is not None
        self.trace = _trace
        self.propagator = TraceContextTextMapPropagator()
        self.provider: _trace.TracerProvider | None = None  # None: the global one
        self._seen: _trace.TracerProvider | None = None
        self._tracer: _trace.Tracer | None = None

    def tracer(self) -> _trace.Tracer | None:
        """None while no SDK is set up (the API alone records nothing): then the
        processor passes trace headers on as if OpenTelemetry were absent, which
        costs a tenth of a span that records nothing."""
        trace = self.trace
        provider = self.provider or trace.get_tracer_provider()
        if provider is not self._seen:
            idle = isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider)
            self._tracer = (
                None
                if idle
                else provider.get_tracer("duroot_stream", schema_url=SEMCONV_SCHEMA_URL)
            )
            self._seen = provider
        return self._tracer


_otel: _OpenTelemetry | None = None if _trace is None else _OpenTelemetry()


def enabled() -> bool:
    """Whether spans can be made (opentelemetry-api is installed)."""
    return _otel is not None


def recording() -> bool:
    """Whether spans are recorded now (an SDK is set up); without, `processing`
    only carries the record's own trace headers."""
    return _otel is not None and _otel.tracer() is not None


def _attributes(operation: str, topic: str, partition: int, key: str | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": topic,
    }
    if partition >= 0:
        attributes["messaging.destination.partition.id"] = str(partition)
    if key is not None:
        attributes["messaging.kafka.message.key"] = key
    return attributes


@contextmanager
def publishing(topic: str, partition: int, key: str, message_id: str) -> Iterator[TraceHeaders]:
    """A publish span for one record, a child of the current span: yields the
    trace headers to add to the record's. Without OpenTelemetry, none; with the
    API but no SDK, no span and the current context (if an application set one)."""
    otel = _otel
    if otel is None:
        yield ()
        return
    tracer = otel.tracer()
    if tracer is None:
        yield _inject(otel)
        return
    attributes = _attributes("publish", topic, partition, key)
    attributes["messaging.message.id"] = message_id
    with tracer.start_as_current_span(
        f"publish {topic}", kind=otel.trace.SpanKind.PRODUCER, attributes=attributes
    ):
        yield _inject(otel)


class Consumed(Protocol):
    """What a span reads of a consumed record (confluent-kafka's `Message` has it)."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def error(self) -> object | None: ...


@contextmanager
def processing(message: Consumed, carrier: Carrier, group: str) -> Iterator[None]:
    """Handle one consumed record inside this: a process span (a child of the
    context in `carrier`, the record's trace headers) and, for the records
    produced meanwhile (`carried`), that span's context; without a span (no
    OpenTelemetry SDK), the record's own trace headers. A consumer error event
    gets neither."""
    if message.error() is not None:
        yield
        return
    otel = _otel
    tracer = None if otel is None else otel.tracer()
    if otel is None or tracer is None:
        token = _outgoing.set(_encode(carrier))
        try:
            yield
        finally:
            _outgoing.reset(token)
        return
    assert _otel is not None
    topic, partition, offset = message.topic() or "", message.partition(), message.offset()
    attributes = _attributes(
        "process", topic, -1 if partition is None else partition, _key(message)
    )
    attributes["messaging.consumer.group.name"] = group
    if offset is not None:
        attributes["messaging.kafka.offset"] = offset
    with tracer.start_as_current_span(
        f"process {topic}",
        context=otel.propagator.extract(carrier),
        kind=otel.trace.SpanKind.CONSUMER,
        attributes=attributes,
    ):
        token = _outgoing.set(_inject(otel) or _encode(carrier))
        try:
            yield
        finally:
            _outgoing.reset(token)


def _inject(otel: _OpenTelemetry) -> TraceHeaders:
    """The current context's trace headers."""
    carrier: dict[str, str] = {}
    otel.propagator.inject(carrier)
    return _encode(carrier)


def carried(headers: RecordHeaders | None) -> RecordHeaders | None:
    """`headers` of a record produced while handling a command, with that
    command's trace context in place of any trace headers they have (a dead
    letter copies the original's); unchanged outside `processing`."""
    trace = _outgoing.get()
    if not trace:
        return headers
    return [*(h for h in headers or () if h[0] not in _NAMES), *trace]


def _encode(carrier: Carrier) -> tuple[tuple[str, bytes], ...]:
    return tuple(
        (name, carrier[name].encode()) for name in (TRACEPARENT, TRACESTATE) if name in carrier
    )


def _key(message: Consumed) -> str | None:
    """The record key as text; none if it has no UTF-8 form (the conventions say omit it)."""
    key = message.key()
    if key is None:
        return None
    if isinstance(key, str):
        return key
    try:
        return bytes(key).decode()
    except UnicodeDecodeError:
        return None
