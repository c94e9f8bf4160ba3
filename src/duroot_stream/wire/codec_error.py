"""The one error of the wire package, in a module of its own so that the coders,
the headers and the codec raise the same class without importing each other."""

from __future__ import annotations


class CodecError(ValueError):
    """Bytes that are not a valid message of the expected type, or a value that
    cannot be encoded. The message says what was wrong."""
