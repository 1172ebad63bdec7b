"""Maze layouts, pools and WADs (no engine needed)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from rl2_lightning.envs.maze.layout import (
    GOAL,
    POOLS,
    SIZES,
    WALL,
    check_size,
    generate_layout,
    load_pool,
    neighbours,
    read_checksums,
    shortest_path,
)
from rl2_lightning.envs.maze.wad import build_wad, ensure_wad


def _cell_graph(grid):
    n = (grid.shape[0] - 1) // 2
    cells = [(r, c) for r in range(n) for c in range(n)]
    edges = {frozenset((a, b)) for a in cells for b in neighbours(grid, a)}
    return cells, edges


@pytest.mark.parametrize("size", [2, 5, 9])
@pytest.mark.parametrize("seed", range(20))
def test_layouts_are_perfect_mazes_with_a_reachable_dead_end_goal(size, seed):
    layout = generate_layout(size, seed)
    cells, edges = _cell_graph(layout.grid)
    # A connected graph with |V| - 1 edges is a tree: every cell reachable, exactly one path.
    assert len(edges) == len(cells) - 1
    reached = {cells[0]}
    frontier = [cells[0]]
    while frontier:
        frontier = [b for a in frontier for b in neighbours(layout.grid, a) if b not in reached]
        reached.update(frontier)
    assert reached == set(cells)
    assert layout.grid[2 * layout.goal[0] + 1, 2 * layout.goal[1] + 1] == GOAL
    assert len(neighbours(layout.grid, layout.goal)) == 1 and layout.goal != layout.start
    path = shortest_path(layout.grid, layout.start, layout.goal)
    assert path[0] == layout.start and path[-1] == layout.goal
    assert (layout.grid[0] == WALL).all() and (layout.grid[:, -1] == WALL).all()  # closed border


def test_same_seed_same_layout_and_wad_bytes():
    pool = load_pool(5, "train")
    again = generate_layout(5, pool[3].seed)
    assert np.array_equal(again.grid, pool[3].grid) and again.goal == pool[3].goal
    assert build_wad(pool) == build_wad(pool)
    assert generate_layout(5, 1).key() != generate_layout(5, 2).key()


@pytest.mark.parametrize("size", SIZES)
def test_pools_are_disjoint_distinct_and_match_their_checksums(size):
    keys = {}
    for pool in POOLS:
        loaded = load_pool(size, pool)  # verifies the checksum
        assert len(loaded) == 1000
        keys[pool] = [loaded[i].key() for i in range(len(loaded))]
        assert len(set(keys[pool])) == len(keys[pool])
    assert not set(keys["train"]) & set(keys["heldout"])


def test_wad_is_built_on_first_use_and_verified(tmp_path, monkeypatch):
    import rl2_lightning.envs.maze.layout as layout_mod

    pool = load_pool(5, "heldout")
    monkeypatch.setattr(layout_mod, "MAZE_DIR", tmp_path)
    path = ensure_wad(pool)
    assert path.parent == tmp_path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == read_checksums()[path.name]
    path.write_bytes(b"corrupt")
    assert ensure_wad(pool).read_bytes()[:4] == b"PWAD"  # rebuilt


def test_bad_setting_is_a_clear_error():
    with pytest.raises(ValueError, match=r"maze size=7 is unknown; allowed: 5, 9"):
        check_size(7)
    with pytest.raises(ValueError, match=r"pool='test' is unknown"):
        load_pool(5, "test")
