"""What the exporter serves, folded from the events topic: per (host, global root) the
latest completed du and the outcome of each run Kafka still keeps. Pure: no Kafka,
no clock (times come from the events' ULIDs).

The events topic says everything needed, in each workflow's order: STARTED names
the host and root, UPDATED carries the lines, COMPLETED the outcome, a tombstone
the deletion. Partitions are read side by side, so the runs of one root arrive
out of order: "latest" is by the time in the COMPLETED event's id, never by
arrival, and a table folded from the topics in any partition order is the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from duroot_stream.domain import (
    STATUS_CODE_OK,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    WorkflowEvent,
    ulid_time_ms,
)

ROOT_PATH = "."  # du's name for the root itself (depth 0)


class RootKey(NamedTuple):
    host: str
    root: str  # the global root


def depth(path: str) -> int:
    """0 for the root ("."), 1 for `a`, 2 for `a/b`."""
    return 0 if path == ROOT_PATH else path.strip("/").count("/") + 1


@dataclass
class _Reading:
    """A run whose COMPLETED has not been read yet."""

    key: RootKey
    started_ms: int
    paths: dict[str, int] = field(default_factory=dict)  # those within the depth
    lines: int = 0


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """One completed run of a root."""

    workflow_id: str
    completed_ms: int
    duration_s: float
    status_code: int  # 0: completed; else failed with it
    lines: int


@dataclass(frozen=True, slots=True)
class Measured:
    """The latest successful run of a root, as served: its paths within the limits."""

    run: RunOutcome
    paths: dict[str, int]


@dataclass
class RootUsage:
    runs: dict[str, RunOutcome] = field(default_factory=dict)  # by workflow id
    measured: Measured | None = None

    def last_run(self) -> RunOutcome | None:
        return max(self.runs.values(), key=_order, default=None)

    def failures_in_a_row(self) -> int:
        """Failed runs since the last successful one (among the runs kept)."""
        count = 0
        for run in sorted(self.runs.values(), key=_order, reverse=True):
            if run.status_code == STATUS_CODE_OK:
                break
            count += 1
        return count


def _order(run: RunOutcome) -> tuple[int, str]:
    return run.completed_ms, run.workflow_id


class UsageTable:
    """The fold. `max_depth`: deepest path served (0: the root only); `max_series`:
    at most this many paths over all roots; a run's paths beyond it are dropped,
    the shallowest and largest kept first, and counted in `dropped`."""

    def __init__(self, max_depth: int = 1, max_series: int = 10_000) -> None:
        if max_depth < 0 or max_series < 0:
            raise ValueError("max_depth and max_series must be >= 0")
        self.max_depth = max_depth
        self.max_series = max_series
        self.roots: dict[RootKey, RootUsage] = {}
        self.dropped = 0  # paths not served for want of series, since the start
        self.series = 0  # paths served now
        self._reading: dict[str, _Reading] = {}  # workflow id -> run being read
        self._root_of: dict[str, RootKey] = {}  # workflow id -> root, of completed runs

    def apply(self, event: WorkflowEvent) -> None:
        payload, wf = event.payload, event.workflow_id
        if type(payload) is DuUpdated:
            reading = self._reading.get(wf)
            if reading is not None:
                reading.lines += 1
                if depth(payload.path) <= self.max_depth:
                    reading.paths[payload.path] = payload.usage
        elif type(payload) is DuRootStarted:
            key = RootKey(payload.host, payload.global_root)
            self._reading[wf] = _Reading(key, ulid_time_ms(event.event_id))
        elif type(payload) is DuRootCompleted:
            reading = self._reading.pop(wf, None)
            if reading is not None:
                self._complete(wf, reading, payload.status_code, ulid_time_ms(event.event_id))

    def delete(self, workflow_id: str) -> None:
        """A tombstone of the workflow's history (one per event: the first one counts)."""
        self._reading.pop(workflow_id, None)
        key = self._root_of.pop(workflow_id, None)
        if key is None:
            return
        usage = self.roots[key]
        usage.runs.pop(workflow_id, None)
        if usage.measured is not None and usage.measured.run.workflow_id == workflow_id:
            # Deletion goes oldest first (garbage collection), so an older run to
            # fall back to is gone too; the root's usage is no longer known.
            self.series -= len(usage.measured.paths)
            usage.measured = None
        if not usage.runs:
            del self.roots[key]

    def _complete(self, wf: str, reading: _Reading, code: int, completed_ms: int) -> None:
        duration = max(0, completed_ms - reading.started_ms) / 1000
        run = RunOutcome(wf, completed_ms, duration, code, reading.lines)
        usage = self.roots.setdefault(reading.key, RootUsage())
        usage.runs[wf] = run
        self._root_of[wf] = reading.key
        old = usage.measured
        if code != STATUS_CODE_OK or (old is not None and _order(old.run) > _order(run)):
            return
        held = len(old.paths) if old else 0
        room = max(0, self.max_series - (self.series - held))
        ranked = sorted(reading.paths.items(), key=lambda p: (depth(p[0]), -p[1], p[0]))
        kept = dict(ranked[:room])
        self.dropped += len(ranked) - len(kept)
        self.series += len(kept) - held
        usage.measured = Measured(run, kept)

    def measured(self) -> Iterator[tuple[RootKey, Measured]]:
        for key, usage in self.roots.items():
            if usage.measured is not None:
                yield key, usage.measured
