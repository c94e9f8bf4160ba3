"""The shipped Prometheus alert rules: valid, unit-tested, and on metrics the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from duroot_stream.exporter import ExporterMetrics, UsageTable
from duroot_stream.metrics import ProcessorMetrics, RunnerMetrics
from duroot_stream.scheduler import SchedulerMetrics

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
# Alerts on a metric the services do not export yet (see docs/operations.md):
# the runner's index records beyond the last stable offset.
NOT_EXPORTED_YET: set[str] = set()


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool not installed: `make test` installs it (scripts/system-deps.sh)")
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_rules_and_config_pass_promtool_check() -> None:
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_alert_fires_when_it_should_and_not_before() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    assert alerts == tested


def test_rules_use_only_metrics_the_services_export() -> None:
    usage = ExporterMetrics(UsageTable(), threading.Lock(), threading.Event())
    exported = {
        family.name
        for metrics in (ProcessorMetrics(), RunnerMetrics(), usage, SchedulerMetrics())
        for family in metrics.registry.collect()
    }
    names = set()
    for name in re.findall(r"\b(duroot_\w+)", (PROMETHEUS / "alerts.yml").read_text()):
        names.add(re.sub(r"_total$", "", name))
    assert names - exported == NOT_EXPORTED_YET
