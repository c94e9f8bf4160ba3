"""Bytes on the wire: schemas, coders, framing, headers, topics, partitioning."""
