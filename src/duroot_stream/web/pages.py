"""The HTML of the pages: plain server-rendered markup; static/app.js sorts, filters
and refreshes a page's `<main>` when the events topic says something changed."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from html import escape
from urllib.parse import urlencode

from duroot_stream.client import DuResult, IndexEntry, WorkflowStatus
from duroot_stream.domain import PathUsage, StateCode

from .live import Tally
from .treemap import Tile, layout

TREEMAP_W, TREEMAP_H = 960, 480


def page(title: str, main: str, *, live_src: str = "", banner: str = "") -> str:
    """A whole page; `live_src`: the server-sent events that make it refresh `<main>`."""
    live = f' data-live-src="{escape(live_src)}"' if live_src else ""
    warn = f'<p class="banner" role="alert">{escape(banner)}</p>' if banner else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · duroot-stream</title>"
        '<link rel=stylesheet href="/static/style.css"><script defer src="/static/app.js"></script>'
        f'</head><body{live}><header><a href="/" class=home>duroot-stream</a>'
        f"<span id=live-state></span></header>{warn}<main id=main>{main}</main></body></html>"
    )


def error_page(title: str, message: str) -> str:
    return page(
        title, f'<h1>{escape(title)}</h1><p class="error" role="alert">{escape(message)}</p>'
    )


# --- the index ---------------------------------------------------------------------


def index_main(entries: Iterable[IndexEntry], tallies: dict[str, Tally], query: str) -> str:
    rows = []
    for e in reversed(list(entries)):  # newest first
        tally = tallies.get(e.workflow_id)
        state = state_name(tally.state) if tally and tally.state else e.state
        status = "" if e.status_code is None else f"{e.status_code} {e.status_message}".strip()
        status = "ok" if e.status_code == 0 else status
        rows.append(
            f'<tr data-workflow="{e.workflow_id}" class="state-{escape(state)}">'
            f'<td><a href="/workflows/{e.workflow_id}">{e.workflow_id[:8]}</a></td>'
            f"{text_cell(e.host or '')}"
            f"{root_cell(e.global_root or (tally.global_root if tally else ''), e.host_root or '')}"
            f"{text_cell(state)}{time_cell(e.started_at_ms)}{time_cell(e.completed_at_ms)}"
            f"{num_cell(tally.lines if tally else 0)}{text_cell(status)}</tr>"
        )
    head = table_head(
        [
            ("Workflow", "text"),
            ("Host", "text"),
            ("Root", "text"),
            ("State", "text"),
            ("Started", "num"),
            ("Completed", "num"),
            ("Lines", "num"),
            ("Status", "text"),
        ]
    )
    empty = '<p class="empty">No workflows yet.</p>' if not rows else ""
    return (
        f"<h1>Workflows <small>{len(rows)}</small></h1>"
        f'<p><input id=filter type=search placeholder="filter: host, root, state …" '
        f'value="{escape(query)}" aria-label="filter workflows" autocomplete=off></p>'
        f'<table id=workflows class="sortable filterable">{head}<tbody>{"".join(rows)}'
        f"</tbody></table>{empty}"
    )


# --- one workflow -------------------------------------------------------------------


def workflow_main(status: WorkflowStatus, result: DuResult) -> str:
    wf = status.workflow_id
    state = state_name(result.state)
    if result.failed:
        outcome = (
            f'<p class="failed" role="alert">Failed with status {result.status_code}: '
            f"{escape(result.status_message)}</p>"
        )
    elif result.complete:
        outcome = f'<p class="ok">Completed: {len(result.lines)} lines.</p>'
    else:
        outcome = (
            f'<p class="running" aria-live="polite">Running: '
            f"<b id=progress>{len(result.lines)}</b> lines so far …</p>"
        )
    facts = (
        f"<dl><dt>Host</dt><dd>{escape(status.host)}</dd>"
        f"<dt>Root</dt><dd>{escape(status.global_root)} "
        f"<small>({escape(status.host_root)})</small></dd>"
        f"<dt>State</dt><dd id=state>{state}</dd>"
        f"<dt>Started</dt><dd>{clock(status.started_at_ms)}</dd>"
        f"<dt>Completed</dt><dd>{clock(status.completed_at_ms)}</dd>"
        f"<dt>Version</dt><dd><code>{status.vid}</code> ({status.events} events)</dd></dl>"
    )
    downloads = (
        f'<p class=downloads><a href="/workflows/{wf}.du" download>du output</a> · '
        f'<a href="/workflows/{wf}.json">JSON</a> · '
        f'<a href="{escape(root_url(status.global_root))}">all runs of this root</a></p>'
    )
    return (
        f'<div id=workflow data-workflow="{wf}" data-complete="{str(result.complete).lower()}">'
        f"<h1>{escape(status.global_root or wf)}</h1>{outcome}{facts}{downloads}"
        f"<h2>Usage by path</h2>{treemap(result.lines)}{usage_table(result)}</div>"
    )


def treemap(
    lines: Sequence[PathUsage],
    tile: Callable[[Tile], str] | None = None,
    label: str = "treemap of usage by path",
) -> str:
    """The SVG of `lines`; `tile`: the markup of one tile (default: coloured by subtree)."""
    tiles = layout(lines, TREEMAP_W, TREEMAP_H)
    if not tiles:
        return '<p class="empty">No du lines yet.</p>'
    shapes = [(tile or _tile)(t) for t in tiles]
    # Only the innermost tiles are seen whole; their labels name the whole path.
    labels = [_label(t) for t in tiles if t.leaf and t.w > 70 and t.h > 18]
    return (
        f'<svg id=treemap viewBox="0 0 {TREEMAP_W} {TREEMAP_H}" role="img" '
        f'aria-label="{escape(label)}">{"".join(shapes)}'
        f"<g class=labels>{''.join(labels)}</g></svg>"
    )


def _tile(t: Tile) -> str:
    hue = (t.group * 67 + 200) % 360
    light = max(35, 82 - 9 * t.depth)
    return (
        f'<rect class=tile data-path="{escape(t.path)}" data-usage="{t.usage}" '
        f'x="{t.x:.3f}" y="{t.y:.3f}" width="{t.w:.3f}" height="{t.h:.3f}" '
        f'fill="hsl({hue} 55% {light}%)"><title>{escape(t.path)}: {size(t.usage)}</title></rect>'
    )


def _label(t: Tile) -> str:
    return (
        f'<text x="{t.x + 4:.1f}" y="{t.y + 14:.1f}">{escape(t.path)} '
        f"<tspan>{size(t.usage)}</tspan></text>"
    )


def usage_table(result: DuResult) -> str:
    total = max((line.usage for line in result.lines), default=0) or 1
    rows = "".join(
        f'<tr><td data-value="{escape(line.path)}">{escape(line.path)}</td>'
        f'{num_cell(line.usage, size(line.usage))}<td data-value="{line.usage}" class=share>'
        f'<span style="width:{100 * line.usage / total:.1f}%"></span></td></tr>'
        for line in result.lines
    )
    head = table_head([("Path", "text"), ("Usage", "num"), ("Share of the largest", "num")])
    return f"<table id=usage class=sortable>{head}<tbody>{rows}</tbody></table>"


# --- pieces -------------------------------------------------------------------------


def size(n: int) -> str:
    """Bytes for people: 999 B, 1.5 KiB, 23 MiB, 4.0 GiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    value, unit = float(n), 0
    while value >= 1024 and unit < len(units) - 1:
        value, unit = value / 1024, unit + 1
    if unit == 0:
        return f"{n} B"
    return f"{value:.1f} {units[unit]}" if value < 10 else f"{value:.0f} {units[unit]}"


def state_name(code: StateCode) -> str:
    return code.name.lower()


def table_head(columns: list[tuple[str, str]]) -> str:
    cells = "".join(
        f'<th data-type="{kind}" tabindex=0 aria-sort="none">{escape(name)}</th>'
        for name, kind in columns
    )
    return f"<thead><tr>{cells}</tr></thead>"


def root_url(global_root: str) -> str:
    return f"/root?{urlencode({'root': global_root})}"


def root_cell(global_root: str, title: str = "") -> str:
    """A root, linking to the page of its runs."""
    if not global_root:
        return text_cell("")
    tip = f' title="{escape(title)}"' if title else ""
    return (
        f'<td data-value="{escape(global_root)}"{tip}>'
        f'<a href="{escape(root_url(global_root))}">{escape(global_root)}</a></td>'
    )


def text_cell(value: str, title: str = "") -> str:
    tip = f' title="{escape(title)}"' if title else ""
    return f'<td data-value="{escape(value)}"{tip}>{escape(value)}</td>'


def num_cell(value: int, shown: str | None = None) -> str:
    return f'<td data-value="{value}" class=num>{escape(shown or str(value))}</td>'


def time_cell(ms: int | None) -> str:
    return f'<td data-value="{ms or 0}">{clock(ms)}</td>'


def clock(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ms / 1000))
