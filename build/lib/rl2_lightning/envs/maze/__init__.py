"""Random ViZDoom mazes (docs/maze.md): layouts and pools, WAD writer, and the maze simulator.

``vizdoom`` is imported only when a :class:`~rl2_lightning.envs.maze.doom.MazeSimulator` starts a
game, so the other families never pay for it.

    python -m rl2_lightning.envs.maze generate                  # pools + checksums (and WADs)
    python -m rl2_lightning.envs.maze render --pool train --size 5 --out sheet.png
"""
