"""The web view in a real browser (Debian's headless Chromium), on the real broker and
processor: what a person sees on the pages of a finished, a running and a failed workflow,
and on the index. Screenshots go to the `screenshots` folder (see tests/browser.py)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TypedDict

import pytest
from playwright.sync_api import Page, expect

from duroot_stream.config import KafkaConfig
from duroot_stream.domain import PathUsage
from duroot_stream.web.pages import size
from tests.browser import LIVE_MS, browser, page, screenshots
from tests.web_helpers import pipeline

pytestmark = pytest.mark.broker
__all__ = ["browser", "page", "screenshots"]  # fixtures

TREE = [
    PathUsage("src/duroot_stream", 2_400_000),
    PathUsage("src/tests", 900_000),
    PathUsage("src", 3_400_000),
    PathUsage("docs/images", 1_200_000),
    PathUsage("docs", 1_500_000),
    PathUsage("data/raw/2024", 5_000_000),
    PathUsage("data/raw/2025", 3_000_000),
    PathUsage("data/raw", 8_100_000),
    PathUsage("data/derived", 2_600_000),
    PathUsage("data", 10_800_000),
    PathUsage("build", 700_000),
    PathUsage(".", 16_500_000),
]


class Drawn(TypedDict):
    path: str
    usage: int
    area: float


def drawn_tiles(page: Page) -> list[Drawn]:
    """The treemap's rectangles as the browser lays them out, in CSS pixels."""
    tiles: list[Drawn] = page.eval_on_selector_all(
        "#treemap rect.tile",
        """els => els.map(e => { const r = e.getBoundingClientRect();
              return {path: e.dataset.path, usage: Number(e.dataset.usage),
                      area: r.width * r.height}; })""",
    )
    return tiles


def column(page: Page, table: str, index: int) -> list[str]:
    texts: list[str] = page.eval_on_selector_all(
        f"#{table} tbody tr:not([hidden])", f"rows => rows.map(r => r.cells[{index}].textContent)"
    )
    return texts


def test_finished_workflow_treemap_and_sortable_table(
    kafka: KafkaConfig, page: Page, screenshots: Path
) -> None:
    with pipeline(kafka) as p:
        wf = p.begin("/projects/atlas", lines=TREE)
        p.client.commit(wf)
        page.goto(f"{p.url}/workflows/{wf}")
        expect(page.locator("p.ok")).to_have_text(f"Completed: {len(TREE)} lines.", timeout=LIVE_MS)

        # One rectangle per path, each area the same multiple of its usage.
        tiles = drawn_tiles(page)
        assert sorted(t["path"] for t in tiles) == sorted(line.path for line in TREE)
        per_byte = next(t["area"] for t in tiles if t["path"] == ".") / 16_500_000
        assert per_byte > 0
        for t in tiles:
            assert math.isclose(t["area"], t["usage"] * per_byte, rel_tol=0.01), t
        # The largest subtree is drawn largest, and inside the root.
        root = page.locator('#treemap rect[data-path="."]').bounding_box()
        data = page.locator('#treemap rect[data-path="data"]').bounding_box()
        assert root is not None and data is not None
        assert (
            root["x"] <= data["x"] and data["x"] + data["width"] <= root["x"] + root["width"] + 0.5
        )

        # The table sorts: by usage (largest first, then smallest), by path.
        assert column(page, "usage", 0) == [line.path for line in TREE]  # du's order
        by_usage = [line.path for line in sorted(TREE, key=lambda line: -line.usage)]
        page.click("#usage th:has-text('Usage')")
        assert column(page, "usage", 0) == by_usage
        expect(page.locator("#usage th:has-text('Usage')")).to_have_attribute(
            "aria-sort", "descending", timeout=LIVE_MS
        )
        page.click("#usage th:has-text('Usage')")
        assert column(page, "usage", 0) == by_usage[::-1]
        page.click("#usage th:has-text('Path')")
        assert column(page, "usage", 0) == sorted(line.path for line in TREE)
        page.click("#usage th:has-text('Usage')")
        page.screenshot(path=screenshots / "result-page.png", full_page=True)


def test_running_workflow_page_updates_as_events_arrive(
    kafka: KafkaConfig, page: Page, screenshots: Path
) -> None:
    with pipeline(kafka) as p:
        wf = p.begin("/projects/live", lines=TREE[:2])
        page.goto(f"{p.url}/workflows/{wf}")
        expect(page.locator("#progress")).to_have_text("2", timeout=LIVE_MS)
        expect(page.locator("#live-state")).to_have_text("live", timeout=LIVE_MS)

        p.client.append_many(wf, TREE[2:6])  # no reload: the events topic tells the page
        expect(page.locator("#progress")).to_have_text("6", timeout=LIVE_MS)
        expect(page.locator("#treemap rect.tile")).to_have_count(6, timeout=LIVE_MS)
        expect(page.locator("#usage tbody tr")).to_have_count(6, timeout=LIVE_MS)
        page.screenshot(path=screenshots / "running-page.png", full_page=True)

        p.client.append_many(wf, TREE[6:])
        p.client.commit(wf)
        expect(page.locator("p.ok")).to_have_text(f"Completed: {len(TREE)} lines.", timeout=LIVE_MS)
        expect(page.locator("#state")).to_have_text("terminated", timeout=LIVE_MS)
        expect(page.locator("#live-state")).to_have_text("complete", timeout=LIVE_MS)
        assert len(drawn_tiles(page)) == len(TREE)


def test_failed_workflow_shows_its_status_message(kafka: KafkaConfig, page: Page) -> None:
    with pipeline(kafka) as p:
        wf = p.begin("/projects/locked", lines=TREE[:1])
        p.client.fail(wf, 1, "du: cannot read directory '/data/locked': Permission denied")
        page.goto(f"{p.url}/workflows/{wf}")
        expect(page.locator("p.failed")).to_have_text(
            "Failed with status 1: du: cannot read directory '/data/locked': Permission denied",
            timeout=LIVE_MS,
        )


def test_index_filters_and_shows_new_workflows_live(
    kafka: KafkaConfig, page: Page, screenshots: Path
) -> None:
    with pipeline(kafka) as p:
        done = p.begin("/projects/one", host="alpha", lines=TREE[:3])
        p.client.commit(done)
        p.begin("/projects/two", host="beta", lines=TREE[:1])
        page.goto(f"{p.url}/")
        rows = page.locator("#workflows tbody tr:not([hidden])")
        expect(rows).to_have_count(2, timeout=LIVE_MS)
        expect(page.locator("#live-state")).to_have_text("live", timeout=LIVE_MS)

        page.fill("#filter", "beta")
        expect(rows).to_have_count(1, timeout=LIVE_MS)
        assert column(page, "workflows", 2) == ["/projects/two"]

        third = p.begin("/projects/three", host="beta", lines=TREE[:4])  # appears by itself
        expect(rows).to_have_count(2, timeout=LIVE_MS)
        expect(page.locator(f'tr[data-workflow="{third}"] td').nth(6)).to_have_text(
            "4", timeout=LIVE_MS
        )
        assert page.input_value("#filter") == "beta"  # the refresh kept the filter

        page.fill("#filter", "")
        expect(rows).to_have_count(3, timeout=LIVE_MS)
        page.click(f'tr[data-workflow="{done}"] a')
        expect(page.locator("h1")).to_have_text("/projects/one", timeout=LIVE_MS)
        page.go_back()
        page.screenshot(path=screenshots / "index-page.png", full_page=True)


def grown(tree: list[PathUsage], by: dict[str, int], gone: set[str]) -> list[PathUsage]:
    """`tree` a run later: paths grown by `by` (their parents with them), `gone` removed."""
    out = []
    for line in tree:
        if line.path in gone:
            continue
        extra = sum(
            n
            for path, n in by.items()
            if line.path in (".", path) or path.startswith(f"{line.path}/")
        )
        out.append(PathUsage(line.path, line.usage + extra))
    return out


def test_a_root_page_compares_two_runs_path_by_path(
    kafka: KafkaConfig, page: Page, screenshots: Path
) -> None:
    later = grown(TREE, {"data/raw/2025": 4_000_000}, gone={"build"})
    before = {line.path: line.usage for line in TREE}
    after = {line.path: line.usage for line in later}
    with pipeline(kafka) as p:
        old = p.begin("/projects/atlas", lines=TREE)
        p.client.commit(old)
        new = p.begin("/projects/atlas", lines=later)
        p.client.commit(new)
        p.client.commit(p.begin("/projects/other", lines=TREE[:2]))  # another root's run
        page.goto(f"{p.url}/workflows/{new}")
        page.click("text=all runs of this root")

        # The root's runs, newest first; the two latest are chosen for the comparison.
        expect(page.locator("h1")).to_contain_text("/projects/atlas")
        runs = page.locator("#runs tbody tr")
        expect(runs).to_have_count(2)
        assert page.eval_on_selector_all(
            "#runs tbody tr", "rows => rows.map(r => r.dataset.workflow)"
        ) == [new, old]
        expect(page.locator(f'input[name=a][value="{old}"]')).to_be_checked()
        expect(page.locator(f'input[name=b][value="{new}"]')).to_be_checked()
        page.click("#compare")

        expect(page.locator("h1")).to_have_text("/projects/atlas: two runs compared")
        grew = page.locator('#changes tr[data-path="data/raw/2025"] td')
        expect(grew).to_have_text(
            ["data/raw/2025", size(3_000_000), size(7_000_000), f"+{size(4_000_000)}", "+133%"]
        )
        expect(page.locator('#changes tr[data-path="build"] td')).to_have_text(
            ["build", size(700_000), "-", f"-{size(700_000)}", "gone"]
        )
        expect(page.locator("#total-change")).to_have_text(f"+{size(after['.'] - before['.'])}")
        # Largest change first: the root, then the grown directory and its parents.
        assert column(page, "changes", 0)[:4] == [".", "data", "data/raw", "data/raw/2025"]

        # The treemap: laid out by the later run, coloured by growth.
        growth = dict(
            page.eval_on_selector_all(
                "#treemap rect.tile",
                "els => els.map(e => [e.dataset.path, Number(e.dataset.growth)])",
            )
        )
        assert set(growth) == set(after)
        assert growth["data/raw/2025"] == 1.0  # +133 %: full colour
        assert growth["src"] == growth["docs"] == 0.0  # unchanged: grey
        assert 0 < growth["data"] < 1
        fill = page.get_attribute('#treemap rect[data-path="data/raw/2025"]', "fill") or ""
        assert fill.startswith("hsl(4 "), fill  # red
        page.screenshot(path=screenshots / "compare-page.png", full_page=True)
