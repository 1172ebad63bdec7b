"""Train RL²: ``python train.py [conf=<preset>] [key=value ...]`` (see README)."""

import hydra
from omegaconf import DictConfig

from rl2_lightning.config import register_configs
from rl2_lightning.train import train

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    train(cfg)


if __name__ == "__main__":
    main()
