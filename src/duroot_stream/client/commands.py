"""Commands as the client builds them: canonical ids, fresh command ids, du lines
checked as the processor checks them (so nothing half-sent fails for a bad line)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

from duroot_stream.domain import NO_VC, Command, CommandBody, PathUsage
from duroot_stream.ids import new_ulid, now_ms

MAX_USAGE = 2**63 - 1  # an Avro long


def canonical_uuid(text: str, what: str = "workflow id") -> str:
    """Canonical lowercase UUID text; ValueError naming `what` otherwise."""
    try:
        return str(uuid.UUID(str(text)))
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a UUID") from None


def make_command(
    workflow_id: str,
    body: CommandBody,
    expected_vid: str = NO_VC,
    *,
    command_id: str | None = None,
    issued_at: int | None = None,
) -> Command:
    """A `Command` with a fresh command id (ULID) and the time now."""
    return Command(
        command_id=command_id or new_ulid(),
        workflow_id=canonical_uuid(workflow_id),
        expected_vid=expected_vid,
        issued_at=now_ms() if issued_at is None else issued_at,
        body=body,
    )


def path_usages(paths: Iterable[PathUsage | tuple[str, int]]) -> tuple[PathUsage, ...]:
    """`PathUsage`s from `PathUsage`s or `(path, usage)` pairs, checked as the processor
    checks an `Append`; ValueError for the first bad line or for no lines at all."""
    out = []
    for item in paths:
        # Checked before a PathUsage is made: the compiled one refuses a wrong type itself
        # (TypeError), and takes a bool as the int it is.
        path, usage = (item.path, item.usage) if isinstance(item, PathUsage) else item
        if not isinstance(path, str):
            raise ValueError(f"path {path!r} is not text")
        if isinstance(usage, bool) or not isinstance(usage, int) or not 0 <= usage <= MAX_USAGE:
            raise ValueError(f"usage {usage!r} of path {path!r} is not a byte count >= 0")
        out.append(item if isinstance(item, PathUsage) else PathUsage(path, usage))
    if not out:
        raise ValueError("append: no paths")
    return tuple(out)


def batches(items: tuple[PathUsage, ...], size: int) -> Iterator[tuple[PathUsage, ...]]:
    """`items` in slices of at most `size`, in order."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
