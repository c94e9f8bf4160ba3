"""Draw the Grafana dashboard's panels from Prometheus `query_range` answers as one HTML
page of SVG line charts (laid out by the panels' gridPos), for Chromium to screenshot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

COLOURS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]
CHART_W, CHART_H = 520, 150


@dataclass(frozen=True)
class Series:
    legend: str
    points: list[tuple[float, float]]  # (unix seconds, value); NaN values are gaps


@dataclass(frozen=True)
class Panel:
    title: str
    x: int  # gridPos, in Grafana's 24 columns
    y: int
    series: list[Series]
    kind: str = "timeseries"  # bargauge: the last value of each series as a bar
    stepped: bool = False  # Grafana's lineInterpolation stepAfter: a value holds until the next


@dataclass(frozen=True)
class Table:
    """A table panel: the cells as Grafana would show them."""

    title: str
    x: int
    y: int
    header: list[str]
    rows: list[list[str]]


def html(title: str, panels: Sequence[Panel | Table], subtitle: str) -> str:
    cells = "".join(
        _table(p) if isinstance(p, Table) else _bars(p) if p.kind == "bargauge" else _panel(p)
        for p in sorted(panels, key=lambda p: (p.y, p.x))
    )
    return (
        "<!doctype html><html><head><meta charset=utf-8><style>"
        "body{margin:0;background:#111217;color:#ccccdc;font:12px system-ui,sans-serif}"
        "h1{font-size:16px;margin:10px 14px 0}p.sub{margin:2px 14px 8px;color:#8e8e9e}"
        ".grid{display:grid;grid-template-columns:1fr 1fr;gap:8px;padding:0 10px 10px}"
        ".panel{background:#181b1f;border:1px solid #2c3235;border-radius:3px;padding:6px 8px}"
        ".panel h2{font-size:12px;font-weight:600;margin:0 0 4px}"
        ".legend span{margin-right:10px;white-space:nowrap}.legend i{display:inline-block;"
        "width:10px;height:3px;margin-right:4px;vertical-align:middle}"
        "svg text{fill:#8e8e9e;font-size:10px}.wide{grid-column:1/3}"
        "table{border-collapse:collapse;width:100%}td,th{text-align:left;padding:3px 8px;"
        "border-bottom:1px solid #2c3235}th{color:#8e8e9e;font-weight:600}</style></head><body>"
        f"<h1>{escape(title)}</h1><p class=sub>{escape(subtitle)}</p>"
        f"<div class=grid>{cells}</div></body></html>"
    )


def _panel(panel: Panel) -> str:
    points = [pt for s in panel.series for pt in s.points if math.isfinite(pt[1])]
    t0 = min((t for t, _ in points), default=0.0)
    t1 = max((t for t, _ in points), default=1.0)
    top = max((v for _, v in points), default=1.0)
    top = top * 1.1 if top > 0 else 1.0
    left, bottom = 44, 16
    w, h = CHART_W - left - 4, CHART_H - bottom - 4

    def xy(t: float, v: float) -> str:
        return f"{left + w * (t - t0) / ((t1 - t0) or 1):.1f},{4 + h * (1 - v / top):.1f}"

    lines = []
    for i, s in enumerate(panel.series):
        runs: list[list[str]] = [[]]
        previous: float | None = None
        for t, v in s.points:
            if math.isfinite(v):
                if panel.stepped and previous is not None and runs[-1]:
                    runs[-1].append(xy(t, previous))
                runs[-1].append(xy(t, v))
                previous = v
            elif runs[-1]:
                runs.append([])
                previous = None
        colour = COLOURS[i % len(COLOURS)]
        lines += [
            f'<polyline fill=none stroke="{colour}" stroke-width=1.5 points="{" ".join(r)}"/>'
            for r in runs
            if r
        ]
    axis = "".join(
        f'<line x1={left} x2={left + w} y1="{4 + h * f:.1f}" y2="{4 + h * f:.1f}" '
        'stroke="#2c3235"/>'
        f'<text x={left - 4} y="{8 + h * f:.1f}" text-anchor=end>{_short(top * (1 - f))}</text>'
        for f in (0, 0.5, 1)
    )
    span = f"{t1 - t0:.0f} s" if points else "no data"
    legend = "".join(
        f'<span><i style="background:{COLOURS[i % len(COLOURS)]}"></i>{escape(s.legend)}</span>'
        for i, s in enumerate(panel.series)
    )
    return (
        f"<div class=panel><h2>{escape(panel.title)}</h2>"
        f'<svg width={CHART_W} height={CHART_H} viewBox="0 0 {CHART_W} {CHART_H}">{axis}'
        f"{''.join(lines)}<text x={left + w} y={CHART_H - 3} text-anchor=end>{span}</text></svg>"
        f"<div class=legend>{legend}</div></div>"
    )


def _short(v: float) -> str:
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.1f}{unit}"
    return f"{v:.2g}" if v < 10 else f"{v:.0f}"


def _last(series: Series) -> float | None:
    values = [v for _, v in series.points if math.isfinite(v)]
    return values[-1] if values else None


def _bars(panel: Panel) -> str:
    """The last value of each series as a horizontal bar, largest first."""
    last = [(s.legend, v) for s in panel.series if (v := _last(s)) is not None]
    last.sort(key=lambda item: -item[1])
    top = max((v for _, v in last), default=0.0) or 1.0
    bar_h, label_w = 22, 200
    rows = "".join(
        f'<text x=0 y="{i * bar_h + 15}">{escape(name[:34])}</text>'
        f'<rect x={label_w} y="{i * bar_h + 4}" height=14 width="{max(0.0, v) / top * 260:.1f}" '
        f'fill="{COLOURS[i % len(COLOURS)]}"/>'
        f'<text x="{label_w + 266}" y="{i * bar_h + 15}">{_short(v)}</text>'
        for i, (name, v) in enumerate(last)
    )
    height = max(bar_h * len(last), bar_h) + 4
    empty = "" if last else "<text x=0 y=15>no data</text>"
    return (
        f"<div class=panel><h2>{escape(panel.title)}</h2>"
        f'<svg width={CHART_W} height={height} viewBox="0 0 {CHART_W} {height}">{rows}{empty}'
        "</svg></div>"
    )


def _table(table: Table) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in table.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in table.rows
    )
    return (
        f"<div class='panel wide'><h2>{escape(table.title)}</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )
