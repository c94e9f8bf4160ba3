"""The exporter's metrics: the usage families, made from the table at each scrape (a
custom collector, since the label sets come and go with the runs), and its own
counters and gauges."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from duroot_stream.metrics import build_info

from .usage import UsageTable

ROOT_LABELS = ["host", "root"]


class UsageCollector(Collector):
    """`duroot_usage_*` from the table; empty until the table is rebuilt (`ready`), so a
    restarted exporter never serves an older run than the one it served before."""

    def __init__(self, table: UsageTable, lock: threading.Lock, ready: threading.Event) -> None:
        self.table, self.lock, self.ready = table, lock, ready

    def describe(self) -> Iterator[Metric]:
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        f = _Families()
        with self.lock:
            f.dropped.add_metric([], self.table.dropped)
            f.series.add_metric([], self.table.series)
            if self.ready.is_set():
                f.fill(self.table)
        yield from f.all()


# Per root: the key `fill` uses, the name, the help.
_ROOT_GAUGES = (
    (
        "completed",
        "duroot_usage_completed_timestamp_seconds",
        "When the latest completed du of the root (the one duroot_usage_bytes shows) ended.",
    ),
    (
        "lines",
        "duroot_usage_lines",
        "du lines of the latest completed du of the root (all depths).",
    ),
    (
        "status",
        "duroot_usage_last_run_status_code",
        "Outcome of the root's last run: 0 completed, else failed with this status code.",
    ),
    (
        "duration",
        "duroot_usage_last_run_duration_seconds",
        "Duration of the root's last run (from its STARTED to its COMPLETED event).",
    ),
    (
        "ended",
        "duroot_usage_last_run_timestamp_seconds",
        "When the root's last run ended, completed or failed.",
    ),
    (
        "failures",
        "duroot_usage_failed_runs_in_a_row",
        "Failed runs of the root since its last completed one (among the runs kept).",
    ),
)


class _Families:
    """One scrape's families, filled from the table."""

    def __init__(self) -> None:
        self.usage = GaugeMetricFamily(
            "duroot_usage_bytes",
            "Disk usage of a path (relative to the root; '.' is the root) in the latest "
            "completed du of the root, down to the exporter's --max-depth.",
            labels=[*ROOT_LABELS, "path"],
        )
        self.root = {
            key: GaugeMetricFamily(name, doc, labels=ROOT_LABELS) for key, name, doc in _ROOT_GAUGES
        }
        self.dropped = CounterMetricFamily(
            "duroot_exporter_dropped_series",
            "Paths of completed runs not served because --max-series was reached.",
        )
        self.series = GaugeMetricFamily(
            "duroot_exporter_usage_series", "duroot_usage_bytes series served now."
        )

    def all(self) -> list[Metric]:
        return [self.usage, *self.root.values(), self.dropped, self.series]

    def fill(self, table: UsageTable) -> None:
        f = self.root
        for key, usage in table.roots.items():
            labels = [key.host, key.root]
            last = usage.last_run()
            if last is not None:
                f["status"].add_metric(labels, last.status_code)
                f["duration"].add_metric(labels, last.duration_s)
                f["ended"].add_metric(labels, last.completed_ms / 1000)
            f["failures"].add_metric(labels, usage.failures_in_a_row())
            if usage.measured is not None:
                run = usage.measured.run
                f["completed"].add_metric(labels, run.completed_ms / 1000)
                f["lines"].add_metric(labels, run.lines)
                for path, size in usage.measured.paths.items():
                    self.usage.add_metric([*labels, path], size)


class ExporterMetrics:
    """The exporter's registry: the usage families and its own counters."""

    def __init__(
        self,
        table: UsageTable,
        lock: threading.Lock,
        ready: threading.Event,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.registry = registry or CollectorRegistry()
        build_info(self.registry)
        r = self.registry
        self.records = Counter(
            "duroot_exporter_records",
            "Records of the events topic read, by kind (event, tombstone).",
            ["kind"],
            registry=r,
        )
        for kind in ("event", "tombstone"):
            self.records.labels(kind)
        self.undecodable = Counter(
            "duroot_exporter_undecodable_records",
            "Records of the events topic that could not be decoded (or folded), skipped.",
            registry=r,
        )
        self.rebuild_duration = Gauge(
            "duroot_exporter_rebuild_duration_seconds",
            "How long reading the events topic to its end took at the start.",
            registry=r,
        )
        r.register(UsageCollector(table, lock, ready))
