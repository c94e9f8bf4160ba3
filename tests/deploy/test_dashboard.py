"""The Grafana dashboard on real data: a real Prometheus scrapes a processor and a runner
under load, and every panel expression answers `query_range` with a non-empty series.
The same answers are drawn as the panels (screenshots/dashboard.png, see tests/browser.py)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from duroot_stream import metrics as metrics_mod
from duroot_stream.client import CommandRejected, DuRootClient, DuRootReader
from duroot_stream.config import KafkaConfig
from duroot_stream.local.broker import free_port
from duroot_stream.runner import Runner, RunnerSettings
from tests import dashboard_render as render
from tests.browser import browser, screenshots
from tests.kafka_helpers import wait_until
from tests.processor_harness import Requester, running_processor, setup_topics
from tests.test_observability import DASHBOARD, _prometheus_binary

pytestmark = pytest.mark.broker
__all__ = ["browser", "screenshots"]  # fixtures

HOST = "dash-host"
WORKFLOWS = 12  # du runs of the load
# Panels known to stay empty, each with why; the test fails for any other empty panel.
# The processor commits offsets through its transaction, so librdkafka's statistics
# never know a committed offset and report consumer_lag -1, which on_statistics skips
# (metrics.py: lag should fall back to ls_offset - app_offset).
KNOWN_EMPTY: set[str] = set()  # every panel must answer
Target = tuple[str, str, str]  # panel title, expression, legend format


@contextmanager
def running_runner(settings: RunnerSettings) -> Iterator[Runner]:
    runner = Runner(settings)
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    wait_until(runner.ready.is_set, timeout=60, what="runner ready")
    try:
        yield runner
    finally:
        runner.stop()
        thread.join(60)


@contextmanager
def prometheus(tmp: Path, targets: dict[str, int]) -> Iterator[int]:
    """Prometheus scraping `job -> port` every second; yields its port."""
    jobs = "".join(
        f"  - job_name: {job}\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        for job, port in targets.items()
    )
    (tmp / "prometheus.yml").write_text(f"global:\n  scrape_interval: 1s\nscrape_configs:\n{jobs}")
    port = free_port()
    process = subprocess.Popen(
        [
            _prometheus_binary(),
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield port
    finally:
        process.terminate()
        process.wait(30)


def query_range(port: int, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 1})
    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/v1/query_range?{query}", timeout=10
        ) as response:
            body = json.load(response)
    except OSError:
        return []  # not up yet
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def has_data(result: list[dict[str, Any]]) -> bool:
    return any(math.isfinite(float(v)) for series in result for _, v in series["values"])


def make_trees(root: Path) -> list[Path]:
    trees = []
    for i in range(3):
        tree = root / f"tree{i}"
        for d in range(2 + i):
            (tree / f"d{d}").mkdir(parents=True)
            (tree / f"d{d}" / "f").write_bytes(b"x" * 4096 * (d + 1))
        trees.append(tree)
    return trees


def load(kafka: KafkaConfig, trees: list[Path], outside: Path) -> None:
    """du runs, rejected commands, malformed commands and a refused root."""
    registry = str(uuid.uuid4())
    requester = Requester(kafka)
    with DuRootClient(kafka) as client, DuRootReader(kafka) as reader:
        for i in range(WORKFLOWS):
            tree = trees[i % len(trees)]
            wf = client.begin(registry, f"/g/{tree.name}", HOST, str(tree)).workflow_id
            assert reader.get_du(wf, wait=True, timeout=60).complete
            with pytest.raises(CommandRejected):  # an Append before any Init
                client.append(str(uuid.uuid4()), [("a", 1)])
            if i % 6 == 0:
                requester.send(raw=b"\x00not avro", key=wf.encode(), correlation=f"bad-{i}")
        refused = client.begin(registry, "/g/outside", HOST, str(outside)).workflow_id
        assert reader.get_du(refused, wait=True, timeout=60).failed
    requester.close()


def panel_targets() -> list[Target]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (p["title"], t["expr"], t.get("legendFormat", ""))
        for p in dashboard["panels"]
        for t in p["targets"]
    ]


def legend(fmt: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt) or "value"


def test_every_panel_shows_data_from_a_loaded_pipeline(
    kafka: KafkaConfig, tmp_path: Path, browser: Browser, screenshots: Path
) -> None:
    setup_topics(kafka)
    trees = make_trees(tmp_path / "roots")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    settings = RunnerSettings(
        kafka=kafka, host=HOST, roots=(str(tmp_path / "roots"),), threshold="0", max_depth=2
    )
    with running_processor(kafka) as processor, running_runner(settings) as runner:
        ports = {
            "duroot-processor": metrics_mod.serve(processor.metrics.registry, 0),
            "duroot-runner": metrics_mod.serve(runner.metrics.registry, 0),
        }
        with prometheus(tmp_path, ports) as prom:
            start = time.time()
            load(kafka, trees, outside)
            targets = panel_targets()
            answers: dict[str, list[dict[str, Any]]] = {}

            def all_panels_answer() -> bool:
                end = time.time()
                for _, expr, _ in targets:
                    if not has_data(answers.get(expr, [])):
                        answers[expr] = query_range(prom, expr, start - 5, end)
                return all(has_data(answers[e]) for _, e, _ in targets if e not in KNOWN_EMPTY)

            try:
                wait_until(all_panels_answer, timeout=90, interval=1, what="every panel's data")
            except AssertionError:
                empty = [
                    f"{title}: {expr}" for title, expr, _ in targets if not has_data(answers[expr])
                ]
                raise AssertionError("panels without data:\n" + "\n".join(empty)) from None
            end = time.time()
            answers = {expr: query_range(prom, expr, start - 5, end) for _, expr, _ in targets}

    dashboard = json.loads(DASHBOARD.read_text())
    panels = []
    for p in dashboard["panels"]:
        series = [
            render.Series(
                legend(t.get("legendFormat", ""), s["metric"]),
                [(float(ts), float(v)) for ts, v in s["values"]],
            )
            for t in p["targets"]
            for s in answers[t["expr"]]
        ]
        panels.append(render.Panel(p["title"], p["gridPos"]["x"], p["gridPos"]["y"], series))
    subtitle = (
        f"Prometheus query_range of every panel, {end - start:.0f} s of a real run: processor and "
        f"runner, {WORKFLOWS} du workflows, rejected and malformed commands, one refused root"
    )
    page = browser.new_page(viewport={"width": 1100, "height": 800})
    try:
        page.set_content(render.html(dashboard.get("title", "duroot-stream"), panels, subtitle))
        page.screenshot(path=screenshots / "dashboard.png", full_page=True)
    finally:
        page.close()
