"""``python -m rl2_lightning.envs.maze generate|render``."""

from __future__ import annotations

import argparse

from rl2_lightning.envs.maze.layout import POOLS, SIZES, load_pool
from rl2_lightning.envs.maze.wad import write_pools


def render_sheet(size: int, pool: str, out: str, count: int = 64) -> None:
    """Draw the first ``count`` layouts of a pool as a contact sheet PNG (walls black, goal red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    p = load_pool(size, pool)
    count = min(count, len(p))
    cols = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.2, rows * 1.2))
    palette = np.array([[1, 1, 1], [0.1, 0.1, 0.1], [0.85, 0.1, 0.1]])
    for k, ax in enumerate(np.atleast_1d(axes).flat):
        ax.axis("off")
        if k >= count:
            continue
        layout = p[k]
        ax.imshow(palette[layout.grid], interpolation="nearest")
        r, c = layout.start
        ax.plot(2 * c + 1, 2 * r + 1, marker="o", color="tab:blue", markersize=3)
        ax.set_title(str(k), fontsize=6)
    fig.suptitle(f"maze_{size}x{size} {pool} pool: layouts 0-{count - 1} (start blue, goal red)", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description="maze pools: generate them or render a contact sheet")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write data/maze/*.npz, checksums.json and build the WADs")
    render = sub.add_parser("render", help="contact sheet PNG of a pool's layouts")
    render.add_argument("--pool", choices=POOLS, default="train")
    render.add_argument("--size", type=int, choices=SIZES, default=5)
    render.add_argument("--count", type=int, default=64)
    render.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "generate":
        for name, digest in sorted(write_pools().items()):
            print(f"{digest}  data/maze/{name}")
    else:
        render_sheet(args.size, args.pool, args.out, args.count)
        print(args.out)


if __name__ == "__main__":
    main()
