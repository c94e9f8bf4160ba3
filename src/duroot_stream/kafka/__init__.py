"""Kafka plumbing: client factories, headers, watermarks and the one error triage."""

from .clients import (
    METADATA_TIMEOUT_S,
    ConsumedRecord,
    Headers,
    header,
    header_bytes,
    headers,
    new_consumer,
    new_producer,
    new_reader,
    partition_count,
    position,
    watermarks,
)
from .triage import Triage, kafka_error, polled, triage

__all__ = [
    "METADATA_TIMEOUT_S",
    "ConsumedRecord",
    "Headers",
    "Triage",
    "header",
    "header_bytes",
    "headers",
    "kafka_error",
    "new_consumer",
    "new_producer",
    "new_reader",
    "partition_count",
    "polled",
    "position",
    "triage",
    "watermarks",
]
