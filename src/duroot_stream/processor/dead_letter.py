"""A command that cannot be applied: why (`Refused`), and its dead-letter record, the
original record with the headers that say why and where it was
(`wire.dead_letter_headers`), cut to fit when it is too big to produce or has headers
that cannot be produced again."""

from __future__ import annotations

import logging
import traceback

from duroot_stream.domain import ErrorCode, Rejected
from duroot_stream.wire import (
    DeadLetter,
    DeadLetterReason,
    HeaderList,
    copyable_headers,
    dead_letter_headers,
)

from .settings import DEAD_LETTER_MAX_BYTES

log = logging.getLogger("duroot.processor")


class Refused(Exception):
    """This record cannot be applied: its command is refused (`rejected`) and the
    record dead-lettered with `reason`."""

    def __init__(self, reason: DeadLetterReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.rejected = Rejected(ErrorCode.MALFORMED, message)


def internal_error(exc: Exception, logged: set[tuple[str, str, int | None]]) -> Refused:
    """A bug met by one record: its traceback logged once per place (`logged`, the
    places logged so far), reason internal-error."""
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = (type(exc).__name__, frame.filename if frame else "", frame.lineno if frame else None)
    if where not in logged:
        logged.add(where)
        log.error("internal error on a command (dead-lettered)", exc_info=exc)
    return Refused(DeadLetterReason.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")


# (key, value, headers) of a record to produce
Letter = tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]


def dead_letter_record(
    key: bytes | None, value: bytes | None, original: HeaderList, letter: DeadLetter
) -> Letter:
    """The record kept in the dead-letter topic for the original record's `key`,
    `value` and headers: whole, or cut to DEAD_LETTER_MAX_BYTES (`dlq-truncated`
    says how big it was; the whole record stays at dlq-partition/offset)."""
    kept: list[tuple[str, bytes | None]] = copyable_headers(original)
    added: list[tuple[str, bytes | None]] = list(dead_letter_headers(letter))
    if _size(key, value, kept + added) <= DEAD_LETTER_MAX_BYTES and len(kept) == len(original):
        return key, value, [*kept, *added]
    # Too big to produce (failing would stop us on every restart), or headers that
    # cannot be produced: cut.
    whole = _size(key, value, original)
    cut = DeadLetter(
        letter.reason, letter.error, letter.topic, letter.partition, letter.offset, f"{whole} bytes"
    )
    added = list(dead_letter_headers(cut))
    key = key[:1024] if key else key
    room = max(0, DEAD_LETTER_MAX_BYTES - _size(key, None, added))
    return key, value[:room] if value else value, added


def _size(key: bytes | None, value: bytes | None, record_headers: HeaderList) -> int:
    """Bytes of a record's key, value and headers."""
    values = (v.encode() if isinstance(v, str) else v or b"" for _, v in record_headers)
    return (
        len(key or b"")
        + len(value or b"")
        + sum(len(k) for k, _ in record_headers)
        + sum(len(v) for v in values)
    )
