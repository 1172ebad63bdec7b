"""Train RL²: ``python train.py [conf=<preset>] [key=value ...]`` (see README)."""

import hydra
from omegaconf import DictConfig

from rl2_lightning.config import register_configs
from rl2_lightning.errors import one_line_errors
from rl2_lightning.train import train

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the last meta-test's trial return (what a sweeper maximises)."""
    with one_line_errors(remove_stub=True):
        summary = train(cfg)["metatest"]
    return summary["trial_return"] if summary else None


if __name__ == "__main__":
    import sys

    from rl2_lightning.config import check_preset

    with one_line_errors():  # errors Hydra raises before main() runs, e.g. an unusable runs_dir
        check_preset(sys.argv[1:])  # an unknown preset in one line, not Hydra's page of options
        main()
