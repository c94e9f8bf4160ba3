"""The web view's pure parts: the treemap layout and the sizes people read."""

from __future__ import annotations

import math

from hypothesis import example, given
from hypothesis import strategies as st

from duroot_stream.domain import PathUsage
from duroot_stream.web import Tile, layout
from duroot_stream.web.pages import size
from duroot_stream.web.treemap import parent_of

W, H = 960.0, 480.0


def du_tree() -> list[PathUsage]:
    """Like du's output: children before parents, a parent's usage includes its children."""
    return [
        PathUsage("a/x", 300),
        PathUsage("a/y", 100),
        PathUsage("a", 500),
        PathUsage("b", 250),
        PathUsage("c/z", 50),
        PathUsage("c", 50),
        PathUsage(".", 1000),
    ]


def inside(inner: Tile, outer: Tile, eps: float = 1e-6) -> bool:
    return (
        inner.x >= outer.x - eps
        and inner.y >= outer.y - eps
        and inner.x + inner.w <= outer.x + outer.w + eps
        and inner.y + inner.h <= outer.y + outer.h + eps
    )


def overlap(a: Tile, b: Tile) -> float:
    dx = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    dy = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    return max(0.0, dx) * max(0.0, dy)


def test_one_tile_per_path_with_area_proportional_to_usage() -> None:
    tiles = layout(du_tree(), W, H)
    assert sorted(t.path for t in tiles) == sorted(p.path for p in du_tree())
    for t in tiles:
        assert math.isclose(t.w * t.h, t.usage * W * H / 1000, rel_tol=1e-9), t


def test_children_lie_inside_their_parent_and_do_not_overlap() -> None:
    tiles = {t.path: t for t in layout(du_tree(), W, H)}
    for path, tile in tiles.items():
        parent = parent_of(path, set(tiles))
        if parent is not None:
            assert inside(tile, tiles[parent]), (path, parent)
    for one, other in (("a", "b"), ("a", "c"), ("b", "c"), ("a/x", "a/y")):
        assert overlap(tiles[one], tiles[other]) < 1e-6, (one, other)
    assert tiles["."].depth == 0 and tiles["a/x"].depth == 2
    assert not tiles["a"].leaf and tiles["a/x"].leaf and tiles["b"].leaf
    assert tiles["a/x"].group == tiles["a"].group != tiles["b"].group


def test_parent_of_finds_the_nearest_listed_ancestor() -> None:
    paths = {".", "a", "a/b/c", "/abs", "/abs/d/e"}
    assert parent_of("a/b/c", paths) == "a"
    assert parent_of("a", paths) == "."
    assert parent_of(".", paths) is None
    assert parent_of("/abs/d/e", paths) == "/abs"
    assert parent_of("/abs", paths) is None


def test_several_top_paths_share_the_box_and_zero_usage_gets_no_area() -> None:
    tiles = {
        t.path: t
        for t in layout([PathUsage("/p", 3), PathUsage("/q", 1), PathUsage("/z", 0)], W, H)
    }
    assert math.isclose(tiles["/p"].w * tiles["/p"].h, 0.75 * W * H)
    assert math.isclose(tiles["/q"].w * tiles["/q"].h, 0.25 * W * H)
    assert tiles["/z"].w * tiles["/z"].h == 0
    assert layout([], W, H) == []
    assert [t.w for t in layout([PathUsage(".", 0)], W, H)] == [0]


def test_children_larger_than_their_parent_are_squeezed_into_it() -> None:
    tiles = {
        t.path: t for t in layout([PathUsage(".", 10), PathUsage("a", 8), PathUsage("b", 8)], W, H)
    }
    assert inside(tiles["a"], tiles["."]) and inside(tiles["b"], tiles["."])
    assert math.isclose(tiles["a"].w * tiles["a"].h, W * H / 2)


@given(st.lists(st.integers(1, 10**12), min_size=1, max_size=40))
@example([1, 10**12])  # a huge tile leaves a sliver whose width is float noise
def test_flat_areas_are_proportional_and_fill_the_box(usages: list[int]) -> None:
    lines = [PathUsage(f"/r{i}", u) for i, u in enumerate(usages)]
    tiles = layout(lines, W, H)
    total = sum(usages)
    for t in tiles:
        assert math.isclose(t.w * t.h, t.usage * W * H / total, rel_tol=1e-6, abs_tol=1e-6)
        assert t.x >= -1e-3 and t.y >= -1e-3  # of a pixel: rounding only
        assert t.x + t.w <= W + 1e-3 and t.y + t.h <= H + 1e-3


def test_size_is_in_binary_units() -> None:
    assert [size(n) for n in (0, 999, 1536, 23 * 2**20, 4 * 2**30)] == [
        "0 B",
        "999 B",
        "1.5 KiB",
        "23 MiB",
        "4.0 GiB",
    ]
