"""The figures `make bench` prints and the targets they are held to, in one table.

Each `Figure` names what it shows, its unit, how to read it from one benchmark's
result (`benchmarks.results`) and, when it is held to one, its `Target`: a bound
and a direction. The figures without a target explain the ones with: where the
time goes, and the same measured with librdkafka's defaults. A `Section` groups
the figures read from one benchmark's result; a benchmark that failed leaves its
figures empty (`—`) and the others stand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Generic, TypeVar

from benchmarks.results import (
    CoreResult,
    GetResult,
    HandlerResult,
    LatencyResult,
    Memory,
    ProcessorResult,
    Restore,
    RunnerResult,
    Throughput,
    TxnFloorResult,
)

R = TypeVar("R")


class Direction(Enum):
    AT_LEAST = "≥"
    AT_MOST = "≤"


@dataclass(frozen=True)
class Target:
    bound: float
    direction: Direction

    def met(self, value: float) -> bool:
        if self.direction is Direction.AT_LEAST:
            return value >= self.bound
        return value <= self.bound

    def __str__(self) -> str:
        shown = f"{self.bound:,.0f}" if self.bound >= 100 else f"{self.bound:g}"
        return f"{self.direction.value} {shown}"


def at_least(bound: float) -> Target:
    return Target(bound, Direction.AT_LEAST)


def at_most(bound: float) -> Target:
    return Target(bound, Direction.AT_MOST)


@dataclass(frozen=True)
class Figure(Generic[R]):
    label: str  # the figure, as the table names it
    unit: str
    read: Callable[[R], float]
    target: Target | None = None


@dataclass(frozen=True)
class Results:
    """Every benchmark's result in one run of `make bench`; None where one failed."""

    core: CoreResult | None = None
    handler: HandlerResult | None = None
    txn_floor: TxnFloorResult | None = None
    processor: ProcessorResult | None = None
    get: GetResult | None = None
    runner: RunnerResult | None = None


@dataclass(frozen=True)
class Row:
    """One line of the table, as printed and as written to summary.json."""

    label: str
    value: float | None
    unit: str
    target: str  # "≥ 0.9", or "report" for a figure without one
    met: bool | None  # None: no target, or no value

    @staticmethod
    def of(figure: Figure[R], picked: R | None) -> Row:
        value = None if picked is None else float(figure.read(picked))
        target = figure.target
        return Row(
            figure.label,
            value,
            figure.unit,
            "report" if target is None else str(target),
            None if target is None or value is None else target.met(value),
        )


@dataclass(frozen=True)
class Section(Generic[R]):
    pick: Callable[[Results], R | None]  # the benchmark's result the figures read
    figures: tuple[Figure[R], ...]

    def rows(self, results: Results) -> list[Row]:
        picked = self.pick(results)
        return [Row.of(figure, picked) for figure in self.figures]


# The processor's sections, each None where it did not run.


def _throughput(r: Results) -> Throughput | None:
    return r.processor.throughput if r.processor else None


def _latency(r: Results) -> LatencyResult | None:
    return r.processor.latency if r.processor else None


def _restore(r: Results) -> Restore | None:
    return r.processor.restore if r.processor else None


def _memory(r: Results) -> Memory | None:
    return r.processor.memory if r.processor else None


Lat = Figure[LatencyResult]
Txn = Figure[TxnFloorResult]
Put = Figure[Throughput]
Res = Figure[Restore]
Mem = Figure[Memory]
Run = Figure[RunnerResult]
Core = Figure[CoreResult]
Py = Figure[HandlerResult]
Get = Figure[GetResult]

TABLE: tuple[Section[Any], ...] = (
    Section(_latency, (
        Lat("latency set-up: capacity (knee of bounded lag)", "cmd/s",
            lambda lat: lat.capacity.knee_per_s),
        Lat("latency at half the capacity: offered", "cmd/s",
            lambda lat: lat.at_50pct.tuned.offered_per_s),
        Lat("  command -> reply visible, p50", "ms", lambda lat: lat.at_50pct.tuned.visible_p50_ms),
        Lat("  command -> reply visible, p99", "ms", lambda lat: lat.at_50pct.tuned.visible_p99_ms,
            at_most(80)),
        Lat("  same, librdkafka's default retry backoff, p99", "ms",
            lambda lat: lat.at_50pct.default.visible_p99_ms),
        Lat("latency at a tenth: offered", "cmd/s", lambda lat: lat.at_10pct.tuned.offered_per_s),
        Lat("  command -> reply visible, p50", "ms", lambda lat: lat.at_10pct.tuned.visible_p50_ms,
            at_most(25)),
        Lat("  command -> reply visible, p99", "ms", lambda lat: lat.at_10pct.tuned.visible_p99_ms,
            at_most(50)),
        Lat("  of which queueing (sent -> produced), p50", "ms",
            lambda lat: lat.at_10pct.tuned.queue_p50_ms),
        Lat("  of which commit (produced -> visible), p50", "ms",
            lambda lat: lat.at_10pct.tuned.commit_p50_ms),
        Lat("  same, librdkafka's default retry backoff, p50", "ms",
            lambda lat: lat.at_10pct.default.visible_p50_ms),
        Lat("  same, librdkafka's default retry backoff, p99", "ms",
            lambda lat: lat.at_10pct.default.visible_p99_ms),
        Lat("latency at 200/s, separate client: p50", "ms",
            lambda lat: lat.at_200.tuned.visible_p50_ms, at_most(25)),
        Lat("  command -> reply visible, p99", "ms", lambda lat: lat.at_200.tuned.visible_p99_ms,
            at_most(50)),
        Lat("  per txn: send_offsets_to_transaction", "ms",
            lambda lat: lat.at_200.tuned.attribution.send_offsets_ms),
        Lat("  per txn: commit_transaction", "ms",
            lambda lat: lat.at_200.tuned.attribution.commit_ms),
        Lat("  same, librdkafka's default retry backoff, p50", "ms",
            lambda lat: lat.at_200.default.visible_p50_ms),
        Lat("  same, librdkafka's default retry backoff, p99", "ms",
            lambda lat: lat.at_200.default.visible_p99_ms),
    )),
    Section(lambda r: r.txn_floor, (
        Txn("bare transaction, tuned retry backoff, p50", "ms", lambda t: t.tuned.total_p50_ms),
        Txn("bare transaction, default retry backoff, p50", "ms",
            lambda t: t.default.total_p50_ms),
        Txn("bare transaction, tuned retry backoff, p90", "ms", lambda t: t.tuned.total_p90_ms),
        Txn("bare transaction, default retry backoff, p90", "ms",
            lambda t: t.default.total_p90_ms),
    )),
    Section(_throughput, (
        Put("pass-through (same EOS loop, no domain)", "cmd/s", lambda t: t.passthrough_per_s),
        Put("processor, exactly-once, 1 instance", "cmd/s", lambda t: t.processor_per_s),
        Put("processor / pass-through, 200,000 Appends", "", lambda t: t.ratio, at_least(0.85)),
        Put("pass-through process, CPU per command", "us", lambda t: t.passthrough_cpu_us),
        Put("processor process, CPU per command", "us", lambda t: t.processor_cpu_us),
        Put("machine (broker too), CPU per command, pass-through", "us",
            lambda t: t.passthrough_machine_cpu_us),
        Put("machine (broker too), CPU per command, processor", "us",
            lambda t: t.processor_machine_cpu_us),
        Put("machine busy, pass-through's drain", "", lambda t: t.passthrough_machine_busy),
        Put("machine busy, processor's drain", "", lambda t: t.processor_machine_busy),
        Put("processor, 2 instances", "cmd/s", lambda t: t.processor_2_instances_per_s),
        Put("2 instances / 1 instance (2 cores)", "", lambda t: t.scale_out_ratio,
            at_least(1.7)),
    )),
    Section(_restore, (
        Res("restore, 1 partition", "events/s", lambda r: r.one_partition.restore_per_s,
            at_least(300_000)),
        Res("raw consume, 1 partition, same settings", "events/s",
            lambda r: r.one_partition.raw_consume_per_s),
        Res("restore / raw consume, 1 partition", "", lambda r: r.one_partition.ratio,
            at_least(0.85)),
        Res("restore, 6 partitions", "events/s", lambda r: r.six_partitions.restore_per_s),
        Res("  with librdkafka's fetch queue backoff", "events/s",
            lambda r: r.six_partitions.untuned_per_s),
        Res("restore / raw consume, 6 partitions", "", lambda r: r.six_partitions.ratio,
            at_least(0.85)),
    )),
    Section(_memory, (
        Mem("memory per restored workflow (RSS)", "B", lambda m: m.bytes_per_workflow,
            at_most(512)),
        Mem("of which held by the state objects", "B", lambda m: m.live_bytes_per_workflow),
        Mem("a warm standby's objects, per workflow of another instance", "B",
            lambda m: m.standby_bytes_per_workflow),
    )),
    Section(lambda r: r.runner, (
        Run("runner: du lines/s end to end", "lines/s", lambda r: r.lines_per_s),
        Run("du alone", "lines/s", lambda r: r.du_alone_lines_per_s),
        Run("runner / du alone", "", lambda r: r.to_du_alone, at_least(0.8)),
        Run("runner and processor in one process", "lines/s",
            lambda r: r.lines_per_s_one_process),
    )),
    Section(lambda r: r.core, (
        Core("decide+evolve+encode, Append of 1 path", "/s",
             lambda c: c.decide_evolve_encode_per_s, at_least(100_000)),
        Core("per-command core: decode+decide+encode+reply", "/s",
             lambda c: c.command_round_per_s),
    )),
    Section(lambda r: r.handler, (
        Py("processor's Python per command, Append of 1 path (CPU)", "us",
           lambda h: h.us_append_1_path, at_most(12)),
        Py("processor's Python per path, Append of 10,000 paths (CPU)", "us",
           lambda h: h.us_per_path, at_most(1.5)),
    )),
    Section(lambda r: r.get, (
        Get("get, 10,000 lines, workflows one after another", "s", lambda g: g.get_sequential_s),
        Get("get, 10,000 lines, workflows interleaved", "s", lambda g: g.get_interleaved_s),
        Get("  scan of the whole partition, for comparison", "s",
            lambda g: g.full_partition_scan_s),
    )),
)  # fmt: skip


def rows(results: Results) -> list[Row]:
    """The whole table, in order."""
    return [row for section in TABLE for row in section.rows(results)]
