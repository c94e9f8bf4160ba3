"""When each root is due, and the workflow id of its du in a period. Pure: the time
comes in as an argument.

Periods are counted from the Unix epoch: period k of `every` runs from k * every
to (k + 1) * every, so every scheduler with the same `--every` agrees on them
whatever its start. A root's du begins at a fixed offset into each period,
spread over its first `spread` (default: the whole period) by a hash of the
root, so the roots of a file do not all begin at once, and two schedulers pick
the same moment.

The workflow id of (root, period) is a UUIDv5 of both: a second scheduler, or
this one after a restart, sends the Init of the same workflow, and the processor
answers that it exists (the Init expects the empty history, `EVENT_EPOCH`): the
root is begun once per period however many schedulers run.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from duroot_stream.client import Root

# All schedule workflow ids live in this UUIDv5 namespace.
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/duroot-stream/schedule")


@dataclass(frozen=True)
class Plan:
    """`every_ms`: the period; `spread_ms`: how much of it the roots' beginnings span."""

    every_ms: int
    spread_ms: int

    def __post_init__(self) -> None:
        if self.every_ms < 1000:
            raise ValueError(f"the period must be at least 1 s, got {self.every_ms} ms")
        if not 0 <= self.spread_ms <= self.every_ms:
            raise ValueError(
                f"the spread must be between 0 and the period ({self.every_ms} ms), "
                f"got {self.spread_ms} ms"
            )

    def period(self, now_ms: int) -> int:
        """The period `now_ms` falls in."""
        return now_ms // self.every_ms

    def offset_ms(self, global_root: str, root: Root) -> int:
        """How far into each period the root's du begins."""
        if self.spread_ms == 0:
            return 0
        digest = hashlib.sha256(f"{root.registry_id}\n{global_root}".encode()).digest()
        return int.from_bytes(digest[:8], "big") % self.spread_ms

    def due_ms(self, period: int, global_root: str, root: Root) -> int:
        """When the root's du of `period` is due."""
        return period * self.every_ms + self.offset_ms(global_root, root)

    def workflow_id(self, period: int, global_root: str, root: Root) -> str:
        """The du of `global_root` in `period`: the same id for every scheduler."""
        name = f"{root.registry_id}\n{global_root}\n{self.every_ms}\n{period}"
        return str(uuid.uuid5(NAMESPACE, name))
