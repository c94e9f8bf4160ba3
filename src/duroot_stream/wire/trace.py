"""The trace context headers: W3C `traceparent`/`tracestate`, read from a record
without trusting it (what the processor carries onto a command's records)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from duroot_stream.tracing import TRACEPARENT, TRACESTATE

from .codec_error import CodecError
from .headers import HeaderList, header_text, last_values

__all__ = ["TRACESTATE_MAX_BYTES", "TRACE_HEADER_NAMES", "carrier_of", "trace_carrier"]

# W3C Trace Context, version 00: version-traceid-parentid-flags in lower-case hex;
# a later version may add fields after a "-". Version ff and all-zero ids are invalid.
_TRACEPARENT: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-.*)?")
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_PARENT_ID: Final = "0" * 16
_TRACEPARENT_MAX: Final = 256  # room for a later version's fields
# What W3C asks every vendor to propagate at least; more is dropped, so that a
# command cannot make each of its events carry a large header.
TRACESTATE_MAX_BYTES: Final = 512
TRACE_HEADER_NAMES: Final = frozenset((TRACEPARENT, TRACESTATE))


def _valid_traceparent(text: str) -> bool:
    match = None if len(text) > _TRACEPARENT_MAX else _TRACEPARENT.fullmatch(text)
    if match is None:
        return False
    version, trace_id, parent_id, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return False
    return trace_id != _ZERO_TRACE_ID and parent_id != _ZERO_PARENT_ID


def trace_carrier(headers: HeaderList | None) -> dict[str, str]:
    """A record's trace context as a W3C text map (`traceparent`, and
    `tracestate` if it has one), or {} when its `traceparent` is missing or
    invalid (its `tracestate` then means nothing). A `tracestate` that is not
    UTF-8 or longer than TRACESTATE_MAX_BYTES is dropped. Never raises."""
    if not headers:
        return {}
    for key, _ in headers:  # the common case, no trace context: a look, no dict made
        if key == TRACEPARENT:
            break
    else:
        return {}
    return carrier_of(last_values(headers, TRACE_HEADER_NAMES))


def carrier_of(found: Mapping[str, bytes | str | None]) -> dict[str, str]:
    """`trace_carrier` of a record whose headers were picked already: the last value
    of each (`last_values`; headers of other names may be there too)."""
    if TRACEPARENT not in found:
        return {}
    try:
        parent = header_text("trace", TRACEPARENT, found.get(TRACEPARENT))
    except CodecError:
        return {}
    if not _valid_traceparent(parent):
        return {}
    carrier = {TRACEPARENT: parent}
    try:
        state = header_text("trace", TRACESTATE, found.get(TRACESTATE)).strip()
    except CodecError:
        return carrier
    if state and len(state.encode()) <= TRACESTATE_MAX_BYTES:
        carrier[TRACESTATE] = state
    return carrier
