"""Which index offsets the runner may commit: several du runs proceed at once and
finish in any order, so an offset is committed only when it and every earlier
offset of its partition are settled. A crash then re-delivers whatever was not
finished, and never loses it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # offsets handed out, in order
    settled: set[int] = field(default_factory=set)
    committed: int = -1  # the last offset committed (the next one to read)


class OffsetTracker:
    """Per partition, the offsets handed out in order; an offset becomes committable
    once it and every earlier one are settled. Not thread-safe: the runner's main
    loop owns it."""

    def __init__(self) -> None:
        self._parts: dict[int, _Partition] = {}

    def add(self, partition: int, offset: int) -> None:
        self._parts.setdefault(partition, _Partition()).pending.append(offset)

    def settle(self, partition: int, offset: int) -> None:
        """Mark an offset settled; unknown ones (a partition since revoked) are ignored."""
        part = self._parts.get(partition)
        if part is not None and offset in part.pending:
            part.settled.add(offset)

    def committable(self) -> dict[int, int]:
        """Partition -> the offset to commit (next to read), where it has advanced."""
        out = {}
        for partition, part in self._parts.items():
            point = -1
            while part.pending and part.pending[0] in part.settled:
                offset = part.pending.popleft()
                part.settled.discard(offset)
                point = offset + 1
            if point > part.committed:
                out[partition] = point
        return out

    def committed(self, partition: int, offset: int) -> None:
        part = self._parts.get(partition)
        if part is not None:
            part.committed = max(part.committed, offset)

    def drop(self, partitions: list[int]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)

    def unsettled(self) -> int:
        return sum(len(p.pending) - len(p.settled) for p in self._parts.values())
