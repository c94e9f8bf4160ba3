"""Metrics: names and labels by Prometheus conventions, the dashboard names only real metrics,
and a real Prometheus scrapes a running processor."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from duroot_stream import metrics as metrics_mod
from duroot_stream.config import KafkaConfig
from duroot_stream.domain import Append, Init, PathUsage
from duroot_stream.exporter import ExporterMetrics, UsageTable
from duroot_stream.local.broker import free_port
from duroot_stream.scheduler import SchedulerMetrics
from tests.kafka_helpers import wait_until
from tests.processor_harness import (
    Requester,
    command,
    new_workflow_id,
    running_processor,
    setup_topics,
)

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "duroot-stream.json"
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


def exported_series(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Series name -> label names, for every metric of the registry (used or not)."""
    out: dict[str, set[str]] = {}
    for family in registry.collect():
        labels = set()
        for collector in registry._names_to_collectors.values():  # label names of unused metrics
            if getattr(collector, "_name", None) == family.name:
                labels = set(collector._labelnames)  # type: ignore[attr-defined]
        for suffix in SUFFIXES[family.type]:
            out[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return out


def all_series() -> dict[str, set[str]]:
    """Every service's series; the exporter's usage families (a custom collector) with the
    labels they carry once the exporter serves a run."""
    usage = ExporterMetrics(UsageTable(), threading.Lock(), threading.Event()).registry
    series = {
        **exported_series(metrics_mod.ProcessorMetrics().registry),
        **exported_series(metrics_mod.RunnerMetrics().registry),
        **exported_series(usage),
        **exported_series(SchedulerMetrics().registry),
    }
    for name in series:
        if name.startswith("duroot_usage_"):
            series[name] = (
                {"host", "root", "path"}
                if name == "duroot_usage_bytes"
                else {
                    "host",
                    "root",
                }
            )
    return series


def test_metric_names_follow_prometheus_conventions() -> None:
    series = all_series()
    assert series, "no metrics"
    for name, labels in series.items():
        # a service's own prefix; duroot_build_info is the one shared (Prometheus' *_info)
        prefixes = ("duroot_processor_", "duroot_runner_", "duroot_exporter_", "duroot_usage_")
        assert name.startswith((*prefixes, "duroot_schedule_")) or name == ("duroot_build_info"), (
            name
        )
        assert re.fullmatch(r"[a-z_]+", name), name
        assert not labels & {"workflow", "workflow_id", "command_id", "vid"}, (name, labels)
    # counters expose _total; durations are in seconds
    assert "duroot_processor_commands_total" in series
    assert series["duroot_processor_commands_total"] == {"command", "outcome"}
    assert "duroot_runner_du_duration_seconds_bucket" in series
    assert series["duroot_runner_du_runs_total"] == {"outcome"}
    assert series["duroot_runner_refusals_total"] == {"reason"}
    assert "duroot_processor_consumer_lag_messages" in series
    assert series["duroot_usage_bytes"] == {"host", "root", "path"}
    assert series["duroot_schedule_skipped_total"] == {"reason"}
    assert "duroot_exporter_dropped_series_total" in series


def test_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    series = all_series()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 15
    used = set()
    for expr in exprs:
        for name in re.findall(r"\bduroot_[a-z_]+", expr):
            assert name in series, f"dashboard uses {name}, which no service exports: {expr}"
            used.add(name)
        for label in re.findall(r"by \(([a-z_, ]+)\)", expr):
            for one in (part.strip() for part in label.split(",")):
                assert one in {"le", "instance"} | set().union(*series.values()), (one, expr)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in (
        "outcome",
        "rejections",
        "latency",
        "batch",
        "restore",
        "workflows by state",
        "lag",
        "du runs",
        "du duration",
    ):
        assert topic in titles, f"no panel about {topic}"


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    provider = (ROOT / "deploy/grafana/provisioning/dashboards/duroot.yml").read_text()
    assert "/var/lib/grafana/dashboards" in provider
    compose = (ROOT / "docker-compose.yml").read_text()
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards" in compose


def _prometheus_binary() -> str:
    binary = shutil.which("prometheus") or "/usr/bin/prometheus"
    if not Path(binary).exists():
        pytest.fail("prometheus not installed: `make test` installs it (scripts/system-deps.sh)")
    return binary


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.broker
def test_prometheus_scrapes_the_processor_counters(kafka: KafkaConfig, tmp_path: Path) -> None:
    setup_topics(kafka)
    requester = Requester(kafka)
    prom_port = free_port()
    with running_processor(kafka) as proc:
        metrics_port = metrics_mod.serve(proc.metrics.registry, 0)
        (tmp_path / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n"
            "scrape_configs:\n  - job_name: duroot-processor\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
        )
        prometheus = subprocess.Popen(
            [
                _prometheus_binary(),
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            workflows = [new_workflow_id() for _ in range(5)]
            registry = str(uuid.uuid4())
            sent = 0
            for wf in workflows:
                assert requester.request(command(wf, Init(registry, "/g", "h", "/r"))).ok
                assert requester.request(command(wf, Append((PathUsage("a", 1),)))).ok
                sent += 2
            rejected = requester.request(command(new_workflow_id(), Append((PathUsage("a", 1),))))
            assert not rejected.ok
            sent += 1

            def scraped_total() -> bool:
                try:
                    result = _query(prom_port, "sum(duroot_processor_commands_total)")
                except OSError:
                    return False
                return bool(result) and float(result[0]["value"][1]) == sent

            wait_until(
                scraped_total, timeout=90, interval=0.5, what=f"Prometheus to see {sent} commands"
            )
            by_outcome = {
                (r["metric"]["command"], r["metric"]["outcome"]): float(r["value"][1])
                for r in _query(prom_port, "duroot_processor_commands_total")
            }
            assert by_outcome[("Init", "ok")] == 5
            assert by_outcome[("Append", "ok")] == 5
            assert by_outcome[("Append", "conflict_state")] == 1
            # the scrape also carries the batch histogram and the restore gauges
            families = {
                f.name
                for f in text_string_to_metric_families(
                    urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics")
                    .read()
                    .decode()
                )
            }
            assert {
                "duroot_processor_batch_size_commands",
                "duroot_processor_workflows",
                "duroot_processor_transactions",
            } <= families
        finally:
            prometheus.terminate()
            prometheus.wait(30)
            requester.close()
