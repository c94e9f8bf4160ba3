"""Which index offsets the runner may commit: several du runs proceed at once and
finish in any order, so an offset is committed only when it and every earlier
offset of its partition are settled. A crash then re-delivers whatever was not
finished, and never loses it.

And which workflows du was started for (`DuStartMarks`), carried in the offset
commit's metadata: a workflow whose du was started but printed nothing yet is
still INITIALIZED, so only this mark tells the next runner that du ran."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field

MARKS_PREFIX = "du-started"
# Kafka's offset.metadata.max.bytes default (4096) over a workflow id and a space.
MAX_MARKS = 100


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # offsets handed out, in order
    settled: set[int] = field(default_factory=set)
    committed: int = -1  # the last offset committed (the next one to read)
    ready: int = -1  # the settled prefix's end: committable once above `committed`


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
        """Partition -> the offset to commit (next to read), where it has advanced.
        Asking again gives the same until `committed` (a failed or filtered commit
        loses nothing)."""
        out = {}
        for partition, part in self._parts.items():
            while part.pending and part.pending[0] in part.settled:
                offset = part.pending.popleft()
                part.settled.discard(offset)
                part.ready = offset + 1
            if part.ready > part.committed:
                out[partition] = part.ready
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

    def position(self, partition: int) -> int | None:
        """An offset that is safe to commit now (every one before it is settled), to
        carry new metadata when the committable offset has not advanced; call
        `committable()` first. None if nothing of the partition was read."""
        part = self._parts.get(partition)
        if part is None:
            return None
        if part.pending:
            return part.pending[0]
        point = max(part.ready, part.committed)
        return point if point >= 0 else None


class DuStartMarks:
    """Per index partition, the workflows whose du was started and that are not
    settled yet; committed (durably, before du starts) as the metadata of the
    partition's offset, read back on assignment. Thread-safe: workers ask
    `was_started`, the main loop changes and commits the marks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._marks: dict[int, set[str]] = {}
        self._dirty: set[int] = set()  # partitions whose marks changed since committed

    def load(self, partition: int, metadata: str | None) -> None:
        """The marks a previous runner committed with the partition's offset."""
        words = (metadata or "").split()
        with self._lock:
            self._marks[partition] = set(words[1:]) if words[:1] == [MARKS_PREFIX] else set()
            self._dirty.discard(partition)

    def add(self, partition: int, workflow_id: str) -> None:
        with self._lock:
            self._marks.setdefault(partition, set()).add(workflow_id)
            self._dirty.add(partition)

    def discard(self, workflow_id: str) -> None:
        """The workflow is settled (or du never started): drop its mark."""
        with self._lock:
            for partition, marks in self._marks.items():
                if workflow_id in marks:
                    marks.discard(workflow_id)
                    self._dirty.add(partition)

    def durable(self, partition: int, workflow_id: str) -> bool:
        """Is the mark committed (the partition's marks unchanged since)?"""
        with self._lock:
            marks = self._marks.get(partition, set())
            return workflow_id in marks and partition not in self._dirty

    def was_started(self, workflow_id: str) -> bool:
        with self._lock:
            return any(workflow_id in marks for marks in self._marks.values())

    def metadata(self, partition: int) -> str:
        with self._lock:
            marks = sorted(self._marks.get(partition, ()))
        return " ".join([MARKS_PREFIX, *marks]) if marks else ""

    def dirty(self) -> set[int]:
        with self._lock:
            return set(self._dirty)

    def committed(self, partition: int, metadata: str) -> None:
        """`metadata` is in Kafka now; clean unless the marks changed meanwhile."""
        if self.metadata(partition) == metadata:
            with self._lock:
                self._dirty.discard(partition)

    def drop(self, partitions: list[int]) -> None:
        """Revoked or lost: the next assignment reads them back from Kafka."""
        with self._lock:
            for partition in partitions:
                self._marks.pop(partition, None)
                self._dirty.discard(partition)
