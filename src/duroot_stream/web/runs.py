"""The HTML of a root's runs and of two runs compared: which paths grew, by how much.

The comparison's treemap is laid out by the later run's usage and coloured by the
change since the earlier run: red grew, blue shrank, grey stayed; the colour is
full at a change of `FULL_AT` (half) or more, and for paths the earlier run did not have.
"""

from __future__ import annotations

from html import escape

from duroot_stream.client import Comparison, IndexEntry, PathChange, Run, by_change

from .live import Tally
from .pages import (
    clock,
    num_cell,
    root_url,
    size,
    state_name,
    table_head,
    text_cell,
    time_cell,
    treemap,
)
from .treemap import Tile

FULL_AT = 0.5  # a change of this share of the earlier size gets the full colour


# --- a root's runs ------------------------------------------------------------------


def root_main(global_root: str, runs: list[IndexEntry], tallies: dict[str, Tally]) -> str:
    """The runs (newest first), each with a choice of "before" and "after" for the
    comparison; the two latest completed ones are chosen to begin with."""
    completed = [e.workflow_id for e in runs if e.state == "completed"]
    after = completed[0] if completed else None
    before = completed[1] if len(completed) > 1 else None
    rows = []
    for e in runs:
        tally = tallies.get(e.workflow_id)
        state = state_name(tally.state) if tally and tally.state else e.state
        status = "" if e.status_code is None else f"{e.status_code} {e.status_message}".strip()
        rows.append(
            f'<tr data-workflow="{e.workflow_id}">'
            f'<td data-value="{e.workflow_id}">{_choice("a", e.workflow_id, before)}</td>'
            f'<td data-value="{e.workflow_id}">{_choice("b", e.workflow_id, after)}</td>'
            f'<td data-value="{e.workflow_id}">'
            f'<a href="/workflows/{e.workflow_id}">{e.workflow_id[:8]}</a></td>'
            f"{text_cell(e.host or '')}{text_cell(state)}{time_cell(e.started_at_ms)}"
            f"{time_cell(e.completed_at_ms)}{num_cell(tally.lines if tally else 0)}"
            f"{text_cell('ok' if e.status_code == 0 else status)}</tr>"
        )
    head = table_head(
        [
            ("Before", "text"),
            ("After", "text"),
            ("Workflow", "text"),
            ("Host", "text"),
            ("State", "text"),
            ("Started", "num"),
            ("Completed", "num"),
            ("Lines", "num"),
            ("Status", "text"),
        ]
    )
    if len(runs) < 2:
        action = '<p class="empty">Two runs are needed for a comparison.</p>'
    else:
        action = "<p><button type=submit id=compare>Compare</button></p>"
    return (
        f"<h1>{escape(global_root)} <small>{len(runs)} runs</small></h1>"
        "<p>The runs of this root that Kafka still keeps (completed runs are deleted "
        "after some days). Choose two to compare.</p>"
        f'<form method=get action="/compare"><table id=runs class=sortable>{head}'
        f"<tbody>{''.join(rows)}</tbody></table>{action}</form>"
    )


def _choice(name: str, workflow_id: str, chosen: str | None) -> str:
    checked = " checked" if workflow_id == chosen else ""
    side = "before" if name == "a" else "after"
    return (
        f'<input type=radio name={name} value="{workflow_id}"{checked} '
        f'aria-label="{side}: {workflow_id[:8]}">'
    )


# --- two runs compared --------------------------------------------------------------


def compare_main(comparison: Comparison) -> str:
    before, after = comparison.before, comparison.after
    root = after.status.global_root or before.status.global_root
    rows = {r.path: r for r in comparison.paths}
    total = rows.get(".")
    summary = (
        f"<p class=summary>The root changed by <b id=total-change>{_signed(total.change)}</b> "
        f"({size(total.before or 0)} → {size(total.after or 0)}).</p>"
        if total is not None
        else ""
    )
    title = f"{escape(root)}: two runs compared" if root else "Two runs compared"
    back = f'<p><a href="{escape(root_url(root))}">all runs of this root</a></p>' if root else ""
    return (
        f"<h1>{title}</h1>{back}"
        f"<dl>{_side('Before', before)}{_side('After', after)}</dl>{summary}"
        "<h2>Growth by path</h2>"
        f"{treemap(after.result.lines, lambda t: _growth_tile(t, rows), 'treemap of growth')}"
        '<p class=legend><span class="key grew"></span>grew <span class="key shrank"></span>'
        f'shrank <span class="key same"></span>unchanged (full colour at ±{FULL_AT:.0%})</p>'
        f"{changes_table(comparison.paths)}"
    )


def _side(name: str, run: Run) -> str:
    s = run.status
    when = clock(s.completed_at_ms) if s.completed_at_ms else state_name(run.result.state)
    return (
        f'<dt>{name}</dt><dd><a href="/workflows/{s.workflow_id}">{s.workflow_id[:8]}</a> '
        f"on {escape(s.host)}, {when}, {len(run.result.lines)} lines</dd>"
    )


def changes_table(paths: list[PathChange]) -> str:
    """Path, before, after, change and change in percent; largest change first."""
    body = "".join(
        f'<tr data-path="{escape(r.path)}">{text_cell(r.path)}{_size_cell(r.before)}'
        f"{_size_cell(r.after)}{num_cell(r.change, _signed(r.change))}"
        f'<td data-value="{r.ratio if r.ratio is not None else 0}" class=num>'
        f"{_percent(r)}</td></tr>"
        for r in by_change(paths)
    )
    head = table_head(
        [("Path", "text"), ("Before", "num"), ("After", "num"), ("Change", "num"), ("%", "num")]
    )
    return f"<table id=changes class=sortable>{head}<tbody>{body}</tbody></table>"


def _size_cell(n: int | None) -> str:
    return num_cell(-1, "-") if n is None else num_cell(n, size(n))


def _signed(n: int) -> str:
    return "0 B" if n == 0 else ("+" if n > 0 else "-") + size(abs(n))


def _percent(r: PathChange) -> str:
    if r.before is None:
        return "new"
    if r.after is None:
        return "gone"
    if r.change == 0:
        return "0%"
    return "" if r.ratio is None else f"{r.ratio:+.0%}"


def growth(r: PathChange | None) -> float:
    """-1 (shrank by `FULL_AT` or more) .. 0 (unchanged) .. 1 (grew by it, or new)."""
    if r is None or r.change == 0:
        return 0.0
    if not r.before:
        return 1.0
    return max(-1.0, min(1.0, r.change / r.before / FULL_AT))


def growth_colour(g: float) -> str:
    if abs(g) < 0.01:
        return "hsl(220 8% 82%)"
    hue = 4 if g > 0 else 214
    return f"hsl({hue} {30 + 55 * abs(g):.0f}% {84 - 34 * abs(g):.0f}%)"


def _growth_tile(t: Tile, rows: dict[str, PathChange]) -> str:
    row = rows.get(t.path)
    g = growth(row)
    change = f", {_signed(row.change)} ({_percent(row)})" if row is not None else ""
    return (
        f'<rect class=tile data-path="{escape(t.path)}" data-usage="{t.usage}" '
        f'data-growth="{g:.3f}" x="{t.x:.3f}" y="{t.y:.3f}" width="{t.w:.3f}" '
        f'height="{t.h:.3f}" fill="{growth_colour(g)}">'
        f"<title>{escape(t.path)}: {size(t.usage)}{change}</title></rect>"
    )
