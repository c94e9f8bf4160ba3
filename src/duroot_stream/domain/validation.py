"""Step 2 of `decide`: the fields nog checks, and what the Avro schema cannot carry.
A problem is the text of an `INVALID_ARGUMENT` rejection."""

from __future__ import annotations

from typing import Final

from .model import UUID_RE, Append, CommandBody, Fail, Init

_NIL_UUID: Final = "00000000-0000-0000-0000-000000000000"
_AVRO_INT_MAX: Final = 2**31 - 1
_AVRO_LONG_MAX: Final = 2**63 - 1


def argument_problem(body: CommandBody) -> str | None:
    """What is wrong with a command's fields, or None (commands without fields)."""
    match body:
        case Append():
            return _append_problem(body)
        case Init():
            return _init_problem(body)
        case Fail():
            return _fail_problem(body)
    return None


def _init_problem(cmd: Init) -> str | None:
    if not isinstance(cmd.registry_id, str) or not UUID_RE.fullmatch(cmd.registry_id):
        return (
            f"command Init: registry id {cmd.registry_id!r} must be canonical lower-case UUID text"
        )
    if cmd.registry_id == _NIL_UUID:
        return "command Init: registry id is the nil UUID"
    for name, value in (
        ("global root", cmd.global_root),
        ("host", cmd.host),
        ("host root", cmd.host_root),
    ):
        if not isinstance(value, str):
            return f"command Init: {name} is not text"
        if value == "":
            return f"command Init: {name} is empty"
    return None


def _append_problem(cmd: Append) -> str | None:
    if len(cmd.paths) == 0:
        return "command Append: no paths"
    for p in cmd.paths:
        if not isinstance(p.path, str):
            return f"command Append: path {p.path!r} is not text"
        if not _is_int(p.usage) or not 0 <= p.usage <= _AVRO_LONG_MAX:
            return f"command Append: usage {p.usage!r} of path {p.path!r} is invalid"
    return None


def _fail_problem(cmd: Fail) -> str | None:
    if not _is_int(cmd.code) or not -_AVRO_INT_MAX - 1 <= cmd.code <= _AVRO_INT_MAX:
        return f"command Fail: code {cmd.code!r} is not a 32-bit integer"
    if cmd.code == 0:
        return "command Fail: code is 0 (a failure needs a non-zero code)"
    if not isinstance(cmd.message, str):
        return "command Fail: message is not text"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
