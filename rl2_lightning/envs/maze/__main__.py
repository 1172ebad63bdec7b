"""``python -m rl2_lightning.envs.maze generate | verify | render``.

* ``generate``: write the training and held-out pools of every size under ``data/maze/`` with their
  checksums (and the checksums of their WADs, which are built on first use and not committed);
* ``verify``: check every pool and build/verify every WAD;
* ``render --pool train --size 5 --out FILE.png``: a contact sheet of a pool's layouts.
"""

from __future__ import annotations

import argparse

from rl2_lightning.envs.maze.layout import POOLS, SIZES, load_pool, pool_path, write_pools


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(prog="python -m rl2_lightning.envs.maze", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("generate", help="write the pools and checksums under data/maze/")
    sub.add_parser("verify", help="check every pool and build/verify every WAD")
    render = sub.add_parser("render", help="contact sheet PNG of a pool's layouts")
    render.add_argument("--pool", default="train", help=f"one of {', '.join(POOLS)}")
    render.add_argument("--size", type=int, default=5, help=f"cells per side, one of {', '.join(map(str, SIZES))}")
    render.add_argument("--out", required=True, help="PNG file to write")
    render.add_argument("--count", type=int, default=100, help="number of layouts (from the first)")
    args = parser.parse_args(argv)
    try:
        if args.command == "generate":
            for name, digest in sorted(write_pools().items()):
                print(f"{digest}  {name}")
        elif args.command == "verify":
            from rl2_lightning.envs.maze.wad import ensure_wad

            for size in SIZES:
                for pool in POOLS:
                    print(f"ok  {pool_path(size, pool)}  {ensure_wad(load_pool(size, pool))}")
        else:
            from rl2_lightning.envs.maze.render import save_contact_sheet

            save_contact_sheet(load_pool(args.size, args.pool), args.out, count=args.count)
            print(f"wrote {args.out}")
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"error: {err}\n")


if __name__ == "__main__":
    main()
