"""The ViZDoom maze task family: layouts and pools, WAD writer, simulator, rendering.

Importing this package does not import vizdoom; the engine starts when a maze episode does.
"""

from __future__ import annotations

from rl2_lightning.envs.maze.layout import POOLS, SIZES, Layout, Pool, generate_layout, load_pool, shortest_path
from rl2_lightning.envs.maze.simulator import HORIZONS, EngineRestarted, MazeSimulator

__all__ = [
    "HORIZONS",
    "POOLS",
    "SIZES",
    "EngineRestarted",
    "Layout",
    "MazeSimulator",
    "Pool",
    "generate_layout",
    "load_pool",
    "shortest_path",
]
