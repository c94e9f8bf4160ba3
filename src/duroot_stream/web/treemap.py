"""A nested, squarified treemap of du lines: one tile per path, areas proportional to usage.

du prints a directory's total, which includes its subdirectories, so a path's
tile is laid out inside its parent's, and the parent's own files take the part
its children leave free. No padding: padding would make areas lie.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from duroot_stream.domain import PathUsage


@dataclass(frozen=True, slots=True)
class Tile:
    path: str
    usage: int
    depth: int  # 0 for a top path (usually ".")
    group: int  # which top-level subtree, for the colour
    x: float
    y: float
    w: float
    h: float
    leaf: bool = True  # no path inside it

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class _Box:
    x: float
    y: float
    w: float
    h: float


def parent_of(path: str, paths: set[str]) -> str | None:
    """The nearest ancestor of `path` among `paths` ("." is everyone's ancestor)."""
    rest = path
    while "/" in rest.rstrip("/"):
        rest = rest.rstrip("/").rsplit("/", 1)[0] or "/"
        if rest in paths:
            return rest
    if path != "." and not path.startswith("/") and "." in paths:
        return "."
    return None


def layout(lines: Iterable[PathUsage], width: float, height: float) -> list[Tile]:
    """Tiles for `lines` in a `width` x `height` box, parents before their children.

    The last line of a path wins (a du line printed twice). Tile area is
    usage * width * height / (sum of the top paths' usage)."""
    usage: dict[str, int] = {}
    for line in lines:
        usage[line.path] = max(0, line.usage)
    paths = set(usage)
    children: dict[str | None, list[str]] = {}
    for path in usage:
        children.setdefault(parent_of(path, paths), []).append(path)
    tiles: list[Tile] = []
    tops = sorted(children.get(None, []), key=lambda p: (-usage[p], p))
    total = sum(usage[p] for p in tops)
    if total == 0:
        return [Tile(p, usage[p], 0, 0, 0, 0, 0, 0) for p in usage]
    scale = width * height / total

    def place(path: str, box: _Box, depth: int, group: int) -> None:
        kids = sorted(children.get(path, []), key=lambda p: (-usage[p], p))
        tile = Tile(path, usage[path], depth, group, box.x, box.y, box.w, box.h, not kids)
        tiles.append(tile)
        if not kids:
            return
        areas = [usage[k] * scale for k in kids]
        room = box.w * box.h
        if sum(areas) > room > 0:  # children larger than their parent: squeeze them in
            areas = [a * room / sum(areas) for a in areas]
        own = max(0.0, room - sum(areas))  # the parent's own files
        boxes = squarify([*areas, own], box)
        for i, (kid, kid_box) in enumerate(zip(kids, boxes, strict=False)):
            place(kid, kid_box, depth + 1, group if depth else i)

    top_boxes = squarify([usage[p] * scale for p in tops], _Box(0, 0, width, height))
    for i, (path, box) in enumerate(zip(tops, top_boxes, strict=True)):
        place(path, box, 0, i)
    return tiles


def squarify(areas: Sequence[float], box: _Box) -> list[_Box]:
    """Boxes of the given areas (largest first, summing to the box's) filling `box`,
    in rows whose tiles are as close to squares as the areas allow (Bruls et al.)."""
    out: list[_Box] = []
    x, y, w, h = box.x, box.y, box.w, box.h
    i = 0
    while i < len(areas):
        short = min(w, h)
        row = [areas[i]]
        i += 1
        while i < len(areas) and _worst([*row, areas[i]], short) <= _worst(row, short):
            row.append(areas[i])
            i += 1
        # The row along the box's shorter side, as thick as its share of the box.
        along_y = w >= h
        side = h if along_y else w
        extent = w if along_y else h
        total = sum(row)
        # The last row takes what is left: after a huge tile the remaining extent is
        # a difference of nearly equal floats, and dividing by it overshoots the box.
        thick = extent if i == len(areas) else min(extent, total / side if side > 0 else 0.0)
        at = 0.0
        for a in row:
            length = side * a / total if total > 0 else 0.0
            out.append(
                _Box(x, y + at, thick, length) if along_y else _Box(x + at, y, length, thick)
            )
            at += length
        if along_y:
            x, w = x + thick, max(0.0, w - thick)
        else:
            y, h = y + thick, max(0.0, h - thick)
    return out


def _worst(row: list[float], short: float) -> float:
    """The worst aspect ratio of a row laid along a side of length `short`."""
    s = sum(row)
    smallest = min(row)
    if s <= 0 or smallest <= 0 or short <= 0:
        return math.inf
    return max(short * short * max(row) / (s * s), s * s / (short * short * smallest))
