"""Train RL²: ``python train.py [conf=<preset>] [key=value ...]`` (see README); installed, ``rl2-train``."""

from rl2_lightning.cli import train_main

if __name__ == "__main__":
    train_main()
