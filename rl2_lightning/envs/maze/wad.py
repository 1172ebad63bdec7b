"""Write a pool of layouts as one WAD of UDMF maps, and build it on first use.

Each layout becomes a ``MAPxx`` / ``TEXTMAP`` / ``ENDMAP`` lump group in the ``zdoom`` UDMF namespace,
with no NODES (the engine builds them on load) and no ACS: one floor sector, one blocking one-sided
linedef per maximal run of edges between open blocks and wall blocks (clockwise, so the front side
faces the floor), and a ``REDWALL`` goal block whose linedefs carry special 243 (``Exit_Normal``)
activated by the player pushing against it. The bytes are a pure function of the pool, so the WAD
is checked against the SHA-256 recorded in ``data/maze/checksums.json`` when it is built or loaded.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

import json

from rl2_lightning.resources import cache_dir, writable
from rl2_lightning.envs.maze.layout import (
    CHECKSUMS_FILE,
    GOAL,
    MAZE_DIR,
    OPEN,
    REGENERATE,
    SIZES,
    POOL_SIZE,
    Layout,
    Pool,
    generate_pools,
    pool_path,
    read_checksums,
)

BLOCK = 96  # map units per grid block
WALL_TEXTURE = "STARTAN2"
GOAL_TEXTURE = "REDWALL"
FLOOR, CEILING = "FLOOR0_1", "CEIL1_1"
CEILING_HEIGHT = 128
EXIT_SPECIAL = 243  # Exit_Normal


def map_name(index: int) -> str:
    """Lump name of a pool's ``index``-th map: ``MAP01`` ... ``MAP99``, ``MAP100`` ..."""
    return f"MAP{index + 1:02d}"


def block_to_map(row: float, col: float, rows: int) -> tuple[float, float]:
    """Map coordinates ``(x, y)`` of a point given in block units (row 0 = north edge)."""
    return col * BLOCK, (rows - row) * BLOCK


def map_to_block(x: float, y: float, rows: int) -> tuple[float, float]:
    """Inverse of :func:`block_to_map`: ``(row, col)`` in fractional block units."""
    return rows - y / BLOCK, x / BLOCK


def _runs(kind: np.ndarray):
    """Maximal runs of equal non-zero entries of a 1-D array: ``(start, stop, value)``."""
    i = 0
    while i < len(kind):
        if not kind[i]:
            i += 1
            continue
        j = i
        while j < len(kind) and kind[j] == kind[i]:
            j += 1
        yield i, j, kind[i]
        i = j


def _edges(grid: np.ndarray):
    """Maximal runs of open/solid block edges: ``(v1, v2, goal)`` in block-corner coordinates.

    Corners are ``(row, col)`` of the block grid's vertex lattice. Each run is oriented clockwise
    around the open region (floor on the right of ``v1 -> v2``).
    """
    rows, cols = grid.shape
    solid = grid != OPEN
    runs = []
    # Horizontal edges between block rows r-1 (north) and r (south), at lattice row r.
    for r in range(1, rows):
        north, south = solid[r - 1], solid[r]
        for facing_south in (True, False):  # floor south of a solid block, or north of one
            kind = np.where(north & ~south, grid[r - 1], 0) if facing_south else np.where(south & ~north, grid[r], 0)
            for c0, c, k in _runs(kind):
                # Floor south: walk east (lattice col increasing); floor north: walk west.
                a, b = ((r, c0), (r, c)) if facing_south else ((r, c), (r, c0))
                runs.append((a, b, k == GOAL))
    # Vertical edges between block cols c-1 (west) and c (east), at lattice col c.
    for c in range(1, cols):
        west, east = solid[:, c - 1], solid[:, c]
        for facing_east in (True, False):
            kind = np.where(west & ~east, grid[:, c - 1], 0) if facing_east else np.where(east & ~west, grid[:, c], 0)
            for r0, r, k in _runs(kind):
                # Floor east: walk north (lattice row decreasing); floor west: walk south.
                a, b = ((r, c), (r0, c)) if facing_east else ((r0, c), (r, c))
                runs.append((a, b, k == GOAL))
    return runs


def textmap(layout: Layout) -> str:
    """The UDMF ``TEXTMAP`` of one layout."""
    rows = layout.grid.shape[0]
    vertices: dict[tuple[int, int], int] = {}
    out = ['namespace="zdoom";']
    lines = []
    for a, b, goal in _edges(layout.grid):
        ids = [vertices.setdefault(v, len(vertices)) for v in (a, b)]
        side = len(lines)
        if goal:
            extra = f"special={EXIT_SPECIAL};playerpush=true;"
            tex = GOAL_TEXTURE
        else:
            extra, tex = "", WALL_TEXTURE
        lines.append((f"linedef{{v1={ids[0]};v2={ids[1]};sidefront={side};blocking=true;{extra}}}",
                      f'sidedef{{sector=0;texturemiddle="{tex}";}}'))
    for (r, c), _ in sorted(vertices.items(), key=lambda kv: kv[1]):
        x, y = block_to_map(r, c, rows)
        out.append(f"vertex{{x={x:.1f};y={y:.1f};}}")
    out.extend(line for line, _ in lines)
    out.extend(side for _, side in lines)
    out.append(
        f'sector{{heightfloor=0;heightceiling={CEILING_HEIGHT};texturefloor="{FLOOR}";'
        f'textureceiling="{CEILING}";lightlevel=224;}}'
    )
    sr, sc = layout.start
    x, y = block_to_map(2 * sr + 1.5, 2 * sc + 1.5, rows)
    out.append(
        f"thing{{x={x:.1f};y={y:.1f};angle={layout.angle};type=1;"
        "skill1=true;skill2=true;skill3=true;skill4=true;skill5=true;single=true;}"
    )
    return "\n".join(out) + "\n"


def build_wad(pool: Pool) -> bytes:
    """The bytes of a PWAD holding one map per layout of ``pool`` (map ``i`` = :func:`map_name`)."""
    lumps: list[tuple[str, bytes]] = []
    for i in range(len(pool)):
        lumps += [(map_name(i), b""), ("TEXTMAP", textmap(pool[i]).encode("ascii")), ("ENDMAP", b"")]
    data, directory, offset = [], [], 12
    for name, blob in lumps:
        directory.append(struct.pack("<ii8s", offset if blob else 0, len(blob), name.encode("ascii")))
        data.append(blob)
        offset += len(blob)
    header = struct.pack("<4sii", b"PWAD", len(lumps), offset)
    return header + b"".join(data) + b"".join(directory)


def ensure_wad(pool: Pool) -> Path:
    """Path of the pool's WAD, building it (atomically) if missing or not matching its checksum."""
    path = pool_path(pool.size, pool.name, ".wad")
    expected = read_checksums().get(path.name)
    if expected is None:
        raise ValueError(f"no checksum for {path.name} in data/maze/checksums.json; {REGENERATE}")
    if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == expected:
        return path
    if not writable(path.parent):  # an installed, read-only package: build into the user's cache
        path = cache_dir("maze") / path.name
        if path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() == expected:
            return path
    blob = build_wad(pool)
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise ValueError(f"built {path.name} has SHA-256 {actual}, expected {expected}; {REGENERATE}")
    # Several workers may build the same WAD at once: write a private file, then rename over.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    os.replace(tmp, path)
    return path


def write_pools(sizes: tuple[int, ...] = SIZES, pool_size: int = POOL_SIZE) -> dict[str, str]:
    """Generate every size's pools, write them, build their WADs and record all checksums."""
    MAZE_DIR.mkdir(parents=True, exist_ok=True)
    checksums = read_checksums()
    for size in sizes:
        for name, p in generate_pools(size, pool_size).items():
            path = pool_path(size, name)
            np.savez_compressed(path, **p.arrays())
            checksums[path.name] = p.checksum()
            wad = build_wad(p)
            checksums[pool_path(size, name, ".wad").name] = hashlib.sha256(wad).hexdigest()
    CHECKSUMS_FILE.write_text(json.dumps(checksums, indent=2, sort_keys=True) + "\n")
    return checksums
