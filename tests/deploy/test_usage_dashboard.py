"""Disk usage end to end: a real broker, processor, runner, scheduler and exporter, and a
real Prometheus (Debian's). A tree grows between scheduled runs (a period of seconds):
Prometheus shows each size for the root and its top directories; the exporter, restarted
in between, loses nothing it served; every panel of the usage dashboard answers
`query_range`; and the growth alert fires in `promtool test rules` for the same shape of
data. The answers are drawn as the panels (screenshots/usage-dashboard.png)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import Browser
from prometheus_client.parser import text_string_to_metric_families

from duroot_stream import metrics as metrics_mod
from duroot_stream.client import Root
from duroot_stream.config import KafkaConfig
from duroot_stream.exporter import ExporterMetrics, UsageTable
from duroot_stream.local.broker import free_port
from duroot_stream.runner import Runner, RunnerSettings
from duroot_stream.scheduler import Scheduler, SchedulerMetrics, SchedulerSettings
from tests import dashboard_render as render
from tests.browser import browser, screenshots
from tests.deploy.test_dashboard import has_data, legend, prometheus, query_range
from tests.kafka_helpers import wait_until
from tests.processor_harness import running_processor, setup_topics
from tests.usage_helpers import running

__all__ = ["browser", "screenshots"]  # fixtures

ROOT_DIR = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT_DIR / "deploy" / "grafana" / "dashboards" / "duroot-usage.json"
ALERTS = ROOT_DIR / "deploy" / "prometheus" / "alerts.yml"
PERIOD_S = 4.0  # the scheduler's --every
RUN_S = 30.0  # a du of a few files, its commands and the exporter following them
EXPORTER_START_S = 60.0  # a Python process, and reading the events topic to its end
HOST = "files1"
REG = str(uuid.uuid4())
GROWING, FAILING = "/g/growing", "/g/failing"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any], str]]:
    """(panel, target, expression with the dashboard's variables set to "all")."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (p, t, t["expr"].replace("$host", ".*").replace("$root", ".*"))
        for p in dashboard["panels"]
        for t in p["targets"]
    ]


def test_the_usage_dashboard_names_only_exported_metrics() -> None:
    exported = {
        family.name
        for metrics in (
            ExporterMetrics(UsageTable(), threading.Lock(), threading.Event()),
            SchedulerMetrics(),
        )
        for family in metrics.registry.collect()
    }
    targets = dashboard_targets()
    assert len({p["id"] for p, _, _ in targets}) >= 9
    for _, _, expr in targets:
        for name in re.findall(r"\bduroot_[a-z_]+", expr):
            assert re.sub(r"_total$", "", name) in exported, f"{name} is not exported: {expr}"
    titles = " ".join(p["title"].lower() for p, _, _ in targets)
    for topic in ("usage per root", "grew most in 24 h", "7 d", "last measured", "failed"):
        assert topic in titles, f"no panel about {topic}"
    assert any(p["type"] == "table" for p, _, _ in targets)


# --- the exporter as a process of its own -------------------------------------------


class ExporterProcess:
    """`duroot-stream exporter` on a fixed port, as Prometheus scrapes it; restartable."""

    def __init__(self, kafka: KafkaConfig, port: int, log: Path) -> None:
        self.kafka, self.port, self.log = kafka, port, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUROOT_")}
        with self.log.open("ab") as out:
            self.process = process = subprocess.Popen(
                [sys.executable, "-m", "duroot_stream.cli.main", "exporter",
                 "-b", self.kafka.bootstrap_servers, "--topic-prefix", self.kafka.topic_prefix,
                 "--metrics-port", str(self.port), "--max-depth", "1"],
                env=env, stdout=out, stderr=out,
            )  # fmt: skip
        wait_until(
            lambda: _get(self.port, "/readyz")[0] == 200 or process.poll() is not None,
            timeout=EXPORTER_START_S,
            what="the exporter ready",
        )
        assert process.poll() is None, self.log.read_text()

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None

    def __enter__(self) -> ExporterProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def scrape(port: int) -> Samples:
    """The exporter's duroot_usage_* samples, as Prometheus would scrape them."""
    status, text = _get(port, "/metrics")
    if status != 200:
        return {}
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("duroot_usage_")
        for s in family.samples
    }


def usage_of(samples: Samples, root: str) -> dict[str, float]:
    return {
        dict(labels)["path"]: v
        for (name, labels), v in samples.items()
        if name == "duroot_usage_bytes" and dict(labels)["root"] == root
    }


def completed(samples: Samples, root: str) -> float:
    key = (
        "duroot_usage_completed_timestamp_seconds",
        frozenset({"host": HOST, "root": root}.items()),
    )
    return samples.get(key, 0.0)


# --- the tree ------------------------------------------------------------------------


def make_tree(tree: Path) -> None:
    for name, size in (("a", 100_000), ("b", 50_000), ("c", 10_000)):
        (tree / name).mkdir(parents=True)
        (tree / name / "data").write_bytes(b"x" * size)


def grow(tree: Path, step: int) -> None:
    """Directory `a` grows by 400 kB a step: the root by more than the alert's share. The
    file is written beside the tree and moved in, so no du sees half of it."""
    staged = tree.parent.parent / f"more{step}"
    staged.write_bytes(b"y" * 400_000)
    staged.rename(tree / "a" / staged.name)


def distinct(values: list[float]) -> list[float]:
    """Consecutive repeats dropped: one value per change."""
    return [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]


def series_values(result: list[dict[str, Any]]) -> list[float]:
    assert len(result) == 1, result
    return [float(v) for _, v in result[0]["values"]]


# --- the test -----------------------------------------------------------------------


@pytest.mark.broker
def test_scheduled_runs_of_a_growing_tree_in_prometheus_and_the_dashboard(
    kafka: KafkaConfig, tmp_path: Path, browser: Browser, screenshots: Path
) -> None:
    setup_topics(kafka)
    tree = tmp_path / "roots" / "growing"
    make_tree(tree)
    roots = {
        GROWING: Root(REG, HOST, str(tree)),
        FAILING: Root(REG, HOST, str(tmp_path / "outside")),  # the runner refuses it
    }
    schedule = SchedulerSettings(kafka, roots, every_s=PERIOD_S, spread_s=0)
    runner_settings = RunnerSettings(
        kafka=kafka, host=HOST, roots=(str(tmp_path / "roots"),), threshold="0", max_depth=2
    )
    scheduler = Scheduler(schedule)
    with (
        running_processor(kafka) as processor,
        running(Runner(runner_settings), "runner") as runner,
        ExporterProcess(kafka, free_port(), tmp_path / "exporter.log") as exporter,
    ):
        ports = {
            "duroot-processor": metrics_mod.serve(processor.metrics.registry, 0),
            "duroot-runner": metrics_mod.serve(runner.metrics.registry, 0),
            "duroot-scheduler": metrics_mod.serve(scheduler.metrics.registry, 0),
            "duroot-exporter": exporter.port,
        }
        with prometheus(tmp_path, ports) as prom:
            wait_until(
                lambda: _instant(prom, 'min(up{job=~"duroot-.*"})') == 1,
                timeout=RUN_S,
                what="Prometheus scraping every service",
            )
            start = time.time()
            with running(scheduler, "scheduler"):
                sizes = measure_three_sizes(tree, exporter)
                # One run more of the same tree: the last size holds for a period.
                following = next_run(exporter.port, completed(scrape(exporter.port), GROWING))
                assert usage_of(following, GROWING) == sizes[-1]
                wait_until(
                    lambda: _instant(prom, _stamp_expr()) == completed(following, GROWING),
                    timeout=RUN_S,
                    what="Prometheus to scrape the last run",
                )
            end = time.time() + 1  # a range query's last step falls at or before its end
            prometheus_shows_each_size(prom, sizes, start, end)
            answers = every_panel_answers(prom, start, end)
    draw(answers, sizes, end - start, screenshots, browser)
    growth_alert_fires_for(sizes)


def prometheus_shows_each_size(
    prom: int, sizes: list[dict[str, float]], start: float, end: float
) -> None:
    # The three sizes, in order, for the root and each top directory.
    for path in (".", "a", "b", "c"):
        values = series_values(query_range(prom, _root_expr(path), start, end))
        assert distinct(values) == distinct([s[path] for s in sizes]), (path, values)
    assert len(distinct([s["a"] for s in sizes])) == 3
    # Nothing older was ever served again: not across the exporter's restart either.
    stamps = series_values(query_range(prom, _stamp_expr(), start, end))
    assert stamps == sorted(stamps)
    # The root du may not run in failed at every run.
    failing = f'max(duroot_usage_failed_runs_in_a_row{{root="{FAILING}"}})'
    assert max(series_values(query_range(prom, failing, start, end))) >= 2


def _stamp_expr() -> str:
    return f'max(duroot_usage_completed_timestamp_seconds{{root="{GROWING}"}})'


def _root_expr(path: str) -> str:
    return f'max(duroot_usage_bytes{{root="{GROWING}", path="{path}"}})'


def _instant(prom: int, expr: str) -> float:
    answer = query_range(prom, expr, time.time() - 1, time.time())
    return series_values(answer)[-1] if answer else float("nan")


def measure_three_sizes(tree: Path, exporter: ExporterProcess) -> list[dict[str, float]]:
    """Runs until three sizes were measured, growing the tree after each; the exporter
    is restarted after the second (before the tree grows again)."""
    sizes: list[dict[str, float]] = []
    last = 0.0
    for _ in range(12):  # a run may measure the tree before it grew: then one more
        served = next_run(exporter.port, last)
        last = completed(served, GROWING)
        usage = usage_of(served, GROWING)
        if sizes and usage == sizes[-1]:
            continue
        sizes.append(usage)
        if len(sizes) == 3:
            return sizes
        if len(sizes) == 2:
            restart(exporter, served)
        grow(tree, len(sizes))
    raise AssertionError(f"the tree's growth was not measured: {sizes}")


def next_run(port: int, after: float) -> Samples:
    """The exporter's samples once it serves a run of the growing root newer than `after`."""

    def newer() -> Samples | None:
        samples = scrape(port)
        return samples if completed(samples, GROWING) > after else None

    found = wait_until(newer, timeout=PERIOD_S * 3 + RUN_S, what="the next scheduled run served")
    assert found is not None
    return found


def restart(exporter: ExporterProcess, served: Samples) -> None:
    """Stop the exporter and start another on its port: it serves what the first did."""
    exporter.stop()
    exporter.start()
    restarted = scrape(exporter.port)
    # The tree has not changed since: the same usage, from the same run or a later one.
    assert usage_of(restarted, GROWING) == usage_of(served, GROWING)
    assert completed(restarted, GROWING) >= completed(served, GROWING)


def every_panel_answers(prom: int, start: float, end: float) -> dict[str, list[dict[str, Any]]]:
    """Each panel expression's `query_range` from `start` to `end` (or now, if later)."""
    targets = dashboard_targets()
    answers: dict[str, list[dict[str, Any]]] = {}

    def all_answer() -> bool:
        for _, _, expr in targets:
            if not has_data(answers.get(expr, [])):
                answers[expr] = query_range(prom, expr, start - 5, max(end, time.time()))
        return all(has_data(answers[e]) for _, _, e in targets)

    try:
        wait_until(all_answer, timeout=RUN_S, interval=1, what="every panel's data")
    except AssertionError:
        empty = [f"{p['title']}: {e}" for p, _, e in targets if not has_data(answers[e])]
        raise AssertionError("panels without data:\n" + "\n".join(empty)) from None
    return answers


def draw(
    answers: dict[str, list[dict[str, Any]]],
    sizes: list[dict[str, float]],
    seconds: float,
    screenshots: Path,
    browser: Browser,
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels: list[render.Panel | render.Table] = []
    by_panel: dict[int, list[tuple[dict[str, Any], str]]] = {}
    for p, t, expr in dashboard_targets():
        by_panel.setdefault(p["id"], []).append((t, expr))
    for p in dashboard["panels"]:
        x, y = p["gridPos"]["x"], p["gridPos"]["y"]
        if p["type"] == "table":
            panels.append(_table(p, by_panel[p["id"]], answers))
            continue
        series = [
            render.Series(
                legend(t.get("legendFormat", ""), s["metric"]),
                [(float(ts), float(v)) for ts, v in s["values"]],
            )
            for t, expr in by_panel[p["id"]]
            for s in answers[expr]
        ]
        custom = p["fieldConfig"]["defaults"].get("custom", {})
        stepped = custom.get("lineInterpolation") == "stepAfter"
        panels.append(render.Panel(p["title"], x, y, series, p["type"], stepped))
    subtitle = (
        f"Prometheus query_range of every panel, {seconds:.0f} s of a real run: scheduled du "
        f"runs every {PERIOD_S:g} s of a tree growing {len(sizes) - 1} times, one root failing, "
        "the exporter restarted once"
    )
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        page.set_content(render.html(dashboard["title"], panels, subtitle))
        page.screenshot(path=screenshots / "usage-dashboard.png", full_page=True)
    finally:
        page.close()


def _table(
    panel: dict[str, Any],
    targets: list[tuple[dict[str, Any], str]],
    answers: dict[str, list[dict[str, Any]]],
) -> render.Table:
    """Grafana's merged table: a row per root, a column per target (its last value)."""
    rows: dict[tuple[str, str], dict[str, str]] = {}
    header = [t.get("legendFormat", "") for t, _ in targets]
    for (_, expr), column in zip(targets, header, strict=True):
        for s in answers[expr]:
            value = float(s["values"][-1][1])
            cell = (
                render._short(value)
                if column == "usage"
                else time.strftime("%H:%M:%S", time.gmtime(value / 1000))
                if column == "measured"
                else f"{value:g}"
            )
            key = (s["metric"].get("host", ""), s["metric"].get("root", ""))
            rows.setdefault(key, {})[column] = cell
    return render.Table(
        panel["title"],
        panel["gridPos"]["x"],
        panel["gridPos"]["y"],
        ["host", "root", *header],
        [[h, r, *(cells.get(c, "") for c in header)] for (h, r), cells in sorted(rows.items())],
    )


# --- the growth alert on the same shape of data ---------------------------------------


def growth_alert_fires_for(sizes: list[dict[str, float]]) -> None:
    """The three measured sizes, eight hours apart: DurootUsageGrowing fires once the
    third is in, with the share the rule computes."""
    rule = next(
        r
        for group in yaml.safe_load(ALERTS.read_text())["groups"]
        for r in group["rules"]
        if r.get("alert") == "DurootUsageGrowing"
    )
    first, last = sizes[0]["."], sizes[-1]["."]
    share = f"{(last / first - 1) * 100:.4g}%"  # Prometheus' humanizePercentage
    labels = {"host": HOST, "root": GROWING}
    annotations = {k: _render(v, labels, share) for k, v in rule["annotations"].items()}
    values = " ".join(f"{s['.']:.0f}x7" for s in sizes)
    series = (
        'duroot_usage_bytes{job="duroot-exporter",instance="e",'
        f'host="{HOST}",root="{GROWING}",path="."}}'
    )
    test = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1h",
                "input_series": [{"series": series, "values": values}],
                "alert_rule_test": [
                    {"eval_time": "7h", "alertname": "DurootUsageGrowing", "exp_alerts": []},
                    {
                        "eval_time": f"{8 * len(sizes) - 2}h",
                        "alertname": "DurootUsageGrowing",
                        "exp_alerts": [
                            {
                                "exp_labels": {**labels, **rule["labels"]},
                                "exp_annotations": annotations,
                            }
                        ],
                    },
                ],
            }
        ],
    }
    tool = shutil.which("promtool")
    if tool is None:
        pytest.fail("promtool not installed: `make test` installs it (scripts/system-deps.sh)")
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"usage-alert-{uuid.uuid4().hex}.test.yml"
    path.write_text(yaml.safe_dump(test))
    try:
        result = subprocess.run(
            [tool, "test", "rules", str(path)], capture_output=True, text=True, timeout=120
        )
    finally:
        path.unlink()
    assert result.returncode == 0, result.stdout + result.stderr


def _render(template: str, labels: dict[str, str], share: str) -> str:
    """The alert's annotation as Prometheus renders it (labels and the share only)."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return text.replace("{{ $value | humanizePercentage }}", share)
