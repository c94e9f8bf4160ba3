"""Bytes on the wire: schemas, coders, framing, headers, topics, partitioning."""

from .codec import (
    EVENT_TYPES,
    Codec,
    CodecError,
    EventHeaders,
    event_headers,
    parse_event_headers,
    schemas_dir,
)
from .partitioning import murmur2, partition_for
from .topics import TopicCheckError, Topics, check_topics, create_topics, wait_visible

__all__ = [
    "EVENT_TYPES",
    "Codec",
    "CodecError",
    "EventHeaders",
    "TopicCheckError",
    "Topics",
    "check_topics",
    "create_topics",
    "event_headers",
    "murmur2",
    "parse_event_headers",
    "partition_for",
    "schemas_dir",
    "wait_visible",
]
