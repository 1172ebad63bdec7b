"""Perfect-maze layouts and the fixed pools of them (docs/maze.md).

A layout is a perfect maze on ``n × n`` cells (exactly one path between any two cells), drawn by a
randomised depth-first search, plus a start cell and heading and a goal cell. It is stored as a
``(2n+1) × (2n+1)`` block grid: cell ``(r, c)`` is block ``(2r+1, 2c+1)``; the block between two
neighbouring cells is open when they are connected. Block codes: :data:`OPEN`, :data:`WALL`,
:data:`GOAL`. The goal is a dead-end cell other than the start, filled with a red block that ends the
episode when the agent walks into it; filling a dead end never cuts a path between other cells.

Everything is a pure function of a seed, so the pools under ``data/maze/`` are reproducible:
``python -m rl2_lightning.envs.maze generate`` rewrites them and their checksums.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rl2_lightning.envs.tasks import DATA_DIR, FIXED_SETS_SEED, derive_seed

MAZE_DIR = DATA_DIR / "maze"
CHECKSUMS_FILE = MAZE_DIR / "checksums.json"
SIZES = (5, 9)
POOLS = ("train", "heldout")
POOL_SIZE = 1000
OPEN, WALL, GOAL = 0, 1, 2
# Headings in degrees (Doom convention: 0 = east, counter-clockwise) and the matching block steps
# (d_row, d_col) on the grid, whose row 0 is the north edge.
HEADINGS = {0: (0, 1), 90: (-1, 0), 180: (0, -1), 270: (1, 0)}
REGENERATE = "regenerate with `python -m rl2_lightning.envs.maze generate`"


def check_size(size: int) -> int:
    """Validate a maze size (cells per side) against the supported sizes."""
    if size not in SIZES:
        raise ValueError(f"maze size={size!r} is unknown; allowed: {', '.join(map(str, SIZES))}")
    return int(size)


def check_pool(pool: str) -> str:
    """Validate a pool name."""
    if pool not in POOLS:
        raise ValueError(f"maze pool={pool!r} is unknown; allowed: {', '.join(POOLS)}")
    return pool


def distribution_name(size: int) -> str:
    """Name of the task distribution, e.g. ``maze_5x5``."""
    return f"maze_{check_size(size)}x{size}"


@dataclass(frozen=True)
class Layout:
    """One maze: block ``grid`` (uint8 ``[2n+1, 2n+1]``), ``start`` / ``goal`` cells, start ``angle``."""

    grid: np.ndarray
    start: tuple[int, int]
    angle: int
    goal: tuple[int, int]
    seed: int

    @property
    def size(self) -> int:
        """Cells per side."""
        return (self.grid.shape[0] - 1) // 2

    def key(self) -> bytes:
        """Identity of (layout, goal): the bytes of the passages and the goal cell."""
        passages = (self.grid != WALL).astype(np.uint8)  # the goal block counts as a cell
        return passages.tobytes() + bytes(self.goal)


def neighbours(grid: np.ndarray, cell: tuple[int, int]) -> list[tuple[int, int]]:
    """Cells connected to ``cell`` by an open block (the goal cell counts as connected)."""
    r, c = cell
    out = []
    for dr, dc in HEADINGS.values():
        if grid[2 * r + 1 + dr, 2 * c + 1 + dc] != WALL:
            out.append((r + dr, c + dc))
    return out


def generate_layout(size: int, seed: int) -> Layout:
    """A perfect maze on ``size × size`` cells with start, heading and goal, a pure function of ``seed``."""
    n = int(size)
    if n < 2:
        raise ValueError(f"maze size must be >= 2 cells per side, got {size}")
    rng = np.random.Generator(np.random.PCG64(seed))
    grid = np.full((2 * n + 1, 2 * n + 1), WALL, dtype=np.uint8)
    visited = np.zeros((n, n), dtype=bool)
    first = (int(rng.integers(n)), int(rng.integers(n)))
    stack = [first]
    visited[first] = True
    grid[2 * first[0] + 1, 2 * first[1] + 1] = OPEN
    steps = list(HEADINGS.values())
    while stack:  # randomised depth-first search (recursive backtracker)
        r, c = stack[-1]
        options = [
            (dr, dc)
            for dr, dc in steps
            if 0 <= r + dr < n and 0 <= c + dc < n and not visited[r + dr, c + dc]
        ]
        if not options:
            stack.pop()
            continue
        dr, dc = options[int(rng.integers(len(options)))]
        nxt = (r + dr, c + dc)
        visited[nxt] = True
        grid[2 * r + 1 + dr, 2 * c + 1 + dc] = OPEN
        grid[2 * nxt[0] + 1, 2 * nxt[1] + 1] = OPEN
        stack.append(nxt)
    start = (int(rng.integers(n)), int(rng.integers(n)))
    dead_ends = [
        (r, c) for r in range(n) for c in range(n) if (r, c) != start and len(neighbours(grid, (r, c))) == 1
    ]
    goal = dead_ends[int(rng.integers(len(dead_ends)))]
    grid[2 * goal[0] + 1, 2 * goal[1] + 1] = GOAL
    # Start facing one of the start cell's open passages, so the first view is a corridor.
    open_headings = [
        a for a, (dr, dc) in HEADINGS.items() if grid[2 * start[0] + 1 + dr, 2 * start[1] + 1 + dc] != WALL
    ]
    angle = open_headings[int(rng.integers(len(open_headings)))]
    return Layout(grid, start, angle, goal, int(seed))


def shortest_path(grid: np.ndarray, start: tuple[int, int], goal: tuple[int, int]) -> list[tuple[int, int]]:
    """Cells from ``start`` to ``goal`` (both included) by breadth-first search; ``[]`` if unreachable."""
    parent = {start: start}
    frontier = [start]
    while frontier:
        nxt = []
        for cell in frontier:
            for other in neighbours(grid, cell):
                if other not in parent:
                    parent[other] = cell
                    nxt.append(other)
        frontier = nxt
    if goal not in parent:
        return []
    path = [goal]
    while path[-1] != start:
        path.append(parent[path[-1]])
    return path[::-1]


# ----------------------------------------------------------------------------------------------
# Pools on disk


@dataclass(frozen=True)
class Pool:
    """A fixed set of layouts of one size: arrays with a leading layout axis."""

    size: int
    name: str
    grid: np.ndarray  # uint8 [N, 2n+1, 2n+1]
    start: np.ndarray  # int64 [N, 2] (row, col)
    angle: np.ndarray  # int64 [N]
    goal: np.ndarray  # int64 [N, 2]
    seed: np.ndarray  # int64 [N]

    def __len__(self) -> int:
        return len(self.grid)

    def __getitem__(self, i: int) -> Layout:
        return Layout(
            self.grid[i], tuple(map(int, self.start[i])), int(self.angle[i]), tuple(map(int, self.goal[i])),
            int(self.seed[i]),
        )

    def arrays(self) -> dict[str, np.ndarray]:
        """The pool's arrays by name (the file's content)."""
        return {"grid": self.grid, "start": self.start, "angle": self.angle, "goal": self.goal, "seed": self.seed}

    def checksum(self) -> str:
        """SHA-256 of the content (names, dtypes, shapes, values), independent of the file format."""
        h = hashlib.sha256()
        for name, x in sorted(self.arrays().items()):
            x = np.ascontiguousarray(x)
            h.update(f"{name}|{x.dtype}|{x.shape}".encode())
            h.update(x.tobytes())
        return h.hexdigest()


def pool_path(size: int, pool: str, suffix: str = ".npz") -> Path:
    """File of one pool, e.g. ``data/maze/maze_5x5_train.npz`` (``suffix=".wad"`` for its WAD)."""
    return MAZE_DIR / f"{distribution_name(size)}_{check_pool(pool)}{suffix}"


def generate_pools(size: int, pool_size: int = POOL_SIZE) -> dict[str, Pool]:
    """Draw the training and held-out pools of one size; no (layout, goal) pair appears twice."""
    seen: set[bytes] = set()
    pools = {}
    for name in POOLS:
        layouts, j = [], 0
        while len(layouts) < pool_size:
            layout = generate_layout(size, derive_seed(FIXED_SETS_SEED, distribution_name(size), name, j))
            j += 1
            if layout.key() not in seen:  # disjoint across pools and distinct within one
                seen.add(layout.key())
                layouts.append(layout)
        pools[name] = Pool(
            size,
            name,
            np.stack([x.grid for x in layouts]),
            np.array([x.start for x in layouts], dtype=np.int64),
            np.array([x.angle for x in layouts], dtype=np.int64),
            np.array([x.goal for x in layouts], dtype=np.int64),
            np.array([x.seed for x in layouts], dtype=np.int64),
        )
    return pools


def read_checksums() -> dict[str, str]:
    """``data/maze/checksums.json``: SHA-256 of every pool's content and of every WAD's bytes."""
    return json.loads(CHECKSUMS_FILE.read_text()) if CHECKSUMS_FILE.exists() else {}


def load_pool(size: int, pool: str, verify: bool = True) -> Pool:
    """Load a pool and check it against ``data/maze/checksums.json``; errors name the fix."""
    path = pool_path(size, pool)
    if not path.exists():
        raise FileNotFoundError(f"maze pool {path} (size={size}, pool={pool}) is missing; {REGENERATE}")
    with np.load(path) as data:
        arrays = {k: data[k] for k in ("grid", "start", "angle", "goal", "seed")}
    loaded = Pool(size, pool, **arrays)
    if verify:
        expected = read_checksums().get(path.name)
        if expected != loaded.checksum():
            raise ValueError(
                f"maze pool {path} does not match its checksum in {CHECKSUMS_FILE.name} "
                f"(expected {expected}, got {loaded.checksum()}); {REGENERATE}"
            )
    return loaded
