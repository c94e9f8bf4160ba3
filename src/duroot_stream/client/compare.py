"""Two du runs compared, path by path: what each run measured and the change.

The runs are usually two workflows of one root (the web view's root page, `duroot-stream
diff`), but any two results compare: a path only one of them has is `None` in the other.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from duroot_stream.domain import PathUsage

from .readers import DuRootReader
from .results import DuResult, WorkflowStatus


@dataclass(frozen=True, slots=True)
class PathChange:
    """One path in two runs; `None`: the run has no line for it."""

    path: str
    before: int | None
    after: int | None

    @property
    def change(self) -> int:
        return (self.after or 0) - (self.before or 0)

    @property
    def ratio(self) -> float | None:
        """The change as a share of `before` (0.5: grew by half); None when new or empty."""
        return self.change / self.before if self.before else None


@dataclass(frozen=True, slots=True)
class Run:
    """One side of a comparison: the workflow and its result."""

    status: WorkflowStatus
    result: DuResult


@dataclass(frozen=True, slots=True)
class Comparison:
    before: Run
    after: Run
    paths: list[PathChange]  # the later run's order, then the paths only the earlier has


def changes(before: Iterable[PathUsage], after: Iterable[PathUsage]) -> list[PathChange]:
    """Path by path: `after`'s paths in its order, then those only `before` has.
    A path printed twice counts with its last line, as the treemap does."""
    old = {line.path: line.usage for line in before}
    new = {line.path: line.usage for line in after}
    rows = [PathChange(path, old.get(path), usage) for path, usage in new.items()]
    rows += [PathChange(path, usage, None) for path, usage in old.items() if path not in new]
    return rows


def by_change(rows: Iterable[PathChange]) -> list[PathChange]:
    """Largest change first (growth or shrinkage alike), then by path."""
    return sorted(rows, key=lambda r: (-abs(r.change), r.path))


def compare_workflows(reader: DuRootReader, before: str, after: str) -> Comparison:
    """Read two workflows and compare them (`WorkflowNotFound` for one that is gone)."""
    runs = []
    for wf in (before, after):
        status = reader.status(wf)
        runs.append(Run(status, reader.get_du(status.workflow_id)))
    first, second = runs
    return Comparison(first, second, changes(first.result.lines, second.result.lines))
