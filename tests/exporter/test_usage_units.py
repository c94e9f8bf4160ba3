"""The exporter's table and its metrics, without Kafka: events in, series out."""

from __future__ import annotations

import itertools
import threading
import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from duroot_stream.domain import (
    EVENT_EPOCH,
    DuRootCommitted,
    DuRootCompleted,
    DuRootStarted,
    DuUpdated,
    EventPayload,
    WorkflowEvent,
    encode_ulid,
)
from duroot_stream.exporter import ExporterMetrics, RootKey, UsageTable, depth

REG = "0b0c8d4e-1111-4222-8333-444455556666"
T0 = 1_760_000_000_000  # ms
ROOT = RootKey("files1", "/g/data")


def ulid_at(ms: int, n: int = 0) -> str:
    return encode_ulid((ms << 80) | n)


def run(
    started_ms: int,
    completed_ms: int,
    lines: list[tuple[str, int]],
    code: int = 0,
    key: RootKey = ROOT,
    wf: str | None = None,
) -> list[WorkflowEvent]:
    """One workflow's history: STARTED, a DuUpdated per line, COMPLETED, COMMITTED."""
    wf = wf or str(uuid.uuid4())
    payloads: list[tuple[int, EventPayload]] = [
        (started_ms, DuRootStarted(REG, key.root, key.host, "/srv/data")),
        *((started_ms + 1, DuUpdated(path, usage)) for path, usage in lines),
        (completed_ms, DuRootCompleted(code, "" if code == 0 else "du failed")),
        (completed_ms, DuRootCommitted()),
    ]
    events, parent = [], EVENT_EPOCH
    for seq, (ms, payload) in enumerate(payloads):
        vid = ulid_at(ms, seq)
        events.append(WorkflowEvent(vid, parent, wf, seq, "01" + "0" * 24, payload))
        parent = vid
    return events


def fold(table: UsageTable, *histories: list[WorkflowEvent]) -> UsageTable:
    for events in histories:
        for event in events:
            table.apply(event)
    return table


def samples(table: UsageTable, ready: bool = True) -> dict[tuple[str, tuple[str, ...]], float]:
    """Every sample the exporter's registry serves: (name, label values) -> value."""
    ready_event = threading.Event()
    if ready:
        ready_event.set()
    metrics = ExporterMetrics(table, threading.Lock(), ready_event, CollectorRegistry())
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(v for k, v in sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")  # when the counter was made: differs per registry
    }


LINES = [("a/x", 100), ("a", 300), ("b", 50), (".", 400)]


def test_depth() -> None:
    assert [depth(p) for p in (".", "a", "a/b", "a/b/c")] == [0, 1, 2, 3]


def test_latest_completed_run_is_served_down_to_the_depth() -> None:
    table = fold(UsageTable(max_depth=1), run(T0, T0 + 2500, LINES))
    served = samples(table)
    usage = {
        k[1][1]: v for k, v in served.items() if k[0] == "duroot_usage_bytes"
    }  # host, path, root
    assert usage == {".": 400, "a": 300, "b": 50}  # a/x is deeper than 1
    assert served[("duroot_usage_completed_timestamp_seconds", ("files1", "/g/data"))] == (
        (T0 + 2500) / 1000
    )
    assert served[("duroot_usage_lines", ("files1", "/g/data"))] == 4  # all depths
    assert served[("duroot_usage_last_run_status_code", ("files1", "/g/data"))] == 0
    assert served[("duroot_usage_last_run_duration_seconds", ("files1", "/g/data"))] == 2.5
    assert served[("duroot_usage_failed_runs_in_a_row", ("files1", "/g/data"))] == 0


def test_depth_zero_serves_the_root_alone() -> None:
    table = fold(UsageTable(max_depth=0), run(T0, T0 + 1, LINES))
    assert {p for _, m in table.measured() for p in m.paths} == {"."}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_the_latest_run_wins_in_any_arrival_order(order: tuple[int, ...]) -> None:
    # Partitions are read side by side: runs of one root arrive in any order.
    runs = [run(T0 + i * 10_000, T0 + i * 10_000 + 500, [(".", 100 * (i + 1))]) for i in range(3)]
    table = fold(UsageTable(), *(runs[i] for i in order))
    ((key, measured),) = table.measured()
    assert key == ROOT and measured.paths == {".": 300}
    assert measured.run.workflow_id == runs[2][0].workflow_id


def test_a_run_still_going_is_not_served() -> None:
    history = run(T0, T0 + 1, LINES)
    table = fold(UsageTable(), history[:-2])  # no COMPLETED yet
    assert list(table.measured()) == []
    assert samples(table) == samples(UsageTable())


def test_failed_runs_count_in_a_row_and_keep_the_last_good_usage() -> None:
    good = run(T0, T0 + 100, [(".", 10)])
    fails = [run(T0 + i * 1000, T0 + i * 1000 + 300, [], code=7) for i in (1, 2)]
    table = fold(UsageTable(), fails[1], good, fails[0])
    served = samples(table)
    labels = ("files1", "/g/data")
    assert served[("duroot_usage_failed_runs_in_a_row", labels)] == 2
    assert served[("duroot_usage_last_run_status_code", labels)] == 7
    assert served[("duroot_usage_last_run_timestamp_seconds", labels)] == (T0 + 2300) / 1000
    assert served[("duroot_usage_bytes", ("files1", ".", "/g/data"))] == 10
    # A success after them ends the streak.
    fold(table, run(T0 + 5000, T0 + 5100, [(".", 20)]))
    assert samples(table)[("duroot_usage_failed_runs_in_a_row", labels)] == 0


def test_a_root_that_only_failed_has_an_outcome_but_no_usage() -> None:
    table = fold(UsageTable(), run(T0, T0 + 100, [], code=104))
    served = samples(table)
    assert served[("duroot_usage_last_run_status_code", ("files1", "/g/data"))] == 104
    assert not [k for k in served if k[0] == "duroot_usage_bytes"]


def test_deleting_the_served_run_forgets_the_root_usage() -> None:
    old, new = run(T0, T0 + 1, [(".", 1)]), run(T0 + 10, T0 + 11, [(".", 2)])
    table = fold(UsageTable(), old, new)
    table.delete(old[0].workflow_id)  # garbage collection: the oldest first
    assert [m.paths for _, m in table.measured()] == [{".": 2}]
    table.delete(new[0].workflow_id)
    table.delete(new[0].workflow_id)  # a tombstone per event: the rest change nothing
    assert table.roots == {} and table.series == 0


def test_max_series_keeps_the_shallowest_and_largest_and_counts_the_rest() -> None:
    other = RootKey("files2", "/g/other")
    table = UsageTable(max_depth=2, max_series=4)
    fold(table, run(T0, T0 + 1, [("small", 1), ("big", 9), ("big/in", 5), (".", 20)]))
    assert table.series == 4 and table.dropped == 0
    fold(table, run(T0, T0 + 1, [(".", 7), ("x", 3)], key=other))
    assert table.series == 4 and table.dropped == 2  # no room left for the second root
    # A newer run of the first root frees its series first: room for its shallow paths.
    fold(table, run(T0 + 5, T0 + 6, [("a/deep", 8), ("a", 9), ("b", 1), (".", 30)]))
    measured = dict(table.measured())
    assert measured[ROOT].paths == {".": 30, "a": 9, "b": 1, "a/deep": 8}
    served = samples(table)
    assert served[("duroot_exporter_dropped_series_total", ())] == 2
    assert served[("duroot_exporter_usage_series", ())] == 4


def test_nothing_of_the_table_is_served_before_it_is_rebuilt() -> None:
    table = fold(UsageTable(), run(T0, T0 + 1, LINES))
    names = {name for name, _ in samples(table, ready=False)}
    assert not any(n.startswith("duroot_usage_") for n in names)
    assert any(n.startswith("duroot_usage_") for n, _ in samples(table, ready=True))


def test_every_family_is_described_even_when_empty() -> None:
    metrics = ExporterMetrics(UsageTable(), threading.Lock(), threading.Event())
    names = {f.name for f in metrics.registry.collect()}
    assert {
        "duroot_usage_bytes",
        "duroot_usage_completed_timestamp_seconds",
        "duroot_usage_lines",
        "duroot_usage_last_run_status_code",
        "duroot_usage_last_run_duration_seconds",
        "duroot_usage_failed_runs_in_a_row",
        "duroot_exporter_dropped_series",
        "duroot_exporter_undecodable_records",
    } <= names


def test_limits_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        UsageTable(max_depth=-1)
