"""The schedule's arithmetic: periods, each root's moment in them, the workflow ids."""

from __future__ import annotations

import uuid

import pytest

from duroot_stream.client import Root
from duroot_stream.scheduler import NAMESPACE, Plan

HOUR = 3_600_000
ROOTS = {f"/g/r{i}": Root(str(uuid.UUID(int=i + 1)), "files1", f"/srv/r{i}") for i in range(50)}


def test_periods_count_from_the_epoch() -> None:
    plan = Plan(6 * HOUR, 6 * HOUR)
    assert plan.period(0) == 0
    assert plan.period(6 * HOUR - 1) == 0
    assert plan.period(6 * HOUR) == 1


def test_each_root_has_its_own_moment_within_the_spread() -> None:
    plan = Plan(6 * HOUR, 2 * HOUR)
    offsets = [plan.offset_ms(name, root) for name, root in ROOTS.items()]
    assert all(0 <= o < 2 * HOUR for o in offsets)
    assert len(set(offsets)) == len(offsets)  # spread, not bunched
    # The same moment for every scheduler, in every period.
    name, root = next(iter(ROOTS.items()))
    assert Plan(6 * HOUR, 2 * HOUR).due_ms(7, name, root) == 7 * 6 * HOUR + offsets[0]


def test_no_spread_begins_every_root_at_the_period_start() -> None:
    plan = Plan(HOUR, 0)
    assert {plan.due_ms(3, n, r) for n, r in ROOTS.items()} == {3 * HOUR}


def test_the_workflow_id_is_a_uuid5_of_root_and_period() -> None:
    plan = Plan(HOUR, HOUR)
    name, root = next(iter(ROOTS.items()))
    wf = plan.workflow_id(5, name, root)
    assert uuid.UUID(wf).version == 5
    assert wf == Plan(HOUR, 0).workflow_id(5, name, root)  # the spread does not matter
    assert wf == str(uuid.uuid5(NAMESPACE, f"{root.registry_id}\n{name}\n{HOUR}\n5"))
    others = {
        plan.workflow_id(6, name, root),
        Plan(2 * HOUR, HOUR).workflow_id(5, name, root),
        *(plan.workflow_id(5, n, r) for n, r in ROOTS.items() if n != name),
    }
    assert wf not in others and len(others) == len(ROOTS) + 1


@pytest.mark.parametrize(
    ("every", "spread", "message"),
    [
        (999, 0, "at least 1 s"),
        (HOUR, HOUR + 1, "between 0 and the period"),
        (HOUR, -1, "between 0 and the period"),
    ],
)
def test_bad_plans_are_refused(every: int, spread: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Plan(every, spread)
