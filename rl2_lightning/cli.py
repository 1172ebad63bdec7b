"""The console commands an install provides, each with one-line errors:

=================  ===================================  ==========================================
command            same as                              does
=================  ===================================  ==========================================
``rl2-train``      ``python train.py`` (in a checkout)  train (Hydra: ``conf=<preset> key=value``)
``rl2-evaluate``   ``python -m rl2_lightning.evaluate``  score a policy beside the baselines
``rl2-pretrained`` ``python -m rl2_lightning.pretrained`` the model zoo: list, score, export
``rl2-tasks``      ``python -m rl2_lightning.envs.tasks`` write or verify fixed task sets
``rl2-search``     ``python -m rl2_lightning.search``    a multi-fidelity recipe search (Optuna)
=================  ===================================  ==========================================

Like ``python -m``, each puts the working directory on ``sys.path`` first, so ``_target_``s and
``--simulator`` paths can name a module of yours that sits in the folder you run from.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from rl2_lightning.errors import one_line_errors


def _with_cwd_on_path() -> None:
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def user_config_dir(argv: list[str]) -> str | None:
    """The folder named by Hydra's ``--config-dir`` / ``-cd`` in ``argv`` (the user's own presets)."""
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--config-dir="):
            return arg.split("=", 1)[1]
    return None


def train_main() -> None:
    """``rl2-train [--config-dir DIR] [-m] [conf=<preset>] [key=value ...]``: the training application."""
    import hydra
    from omegaconf import DictConfig

    from rl2_lightning.config import CONF_DIR, check_preset, register_configs
    from rl2_lightning.train import train

    _with_cwd_on_path()
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
    def main(cfg: DictConfig) -> float | None:
        """Hydra's task function; returns the last meta-test's trial return (what a sweeper maximises)."""
        with one_line_errors(remove_stub=True):
            summary = train(cfg)["metatest"]
        return summary["trial_return"] if summary else None

    with one_line_errors():  # errors raised before main() runs, e.g. an unknown preset or runs_dir
        argv = sys.argv[1:]
        check_preset(argv, user_config_dir(argv))  # one line, not Hydra's page of options
        main()


def _command(run: Callable[[list[str] | None], object]) -> Callable[[], None]:
    def entry() -> None:
        _with_cwd_on_path()
        with one_line_errors():
            run(None)

    entry.__doc__ = run.__doc__
    return entry


def evaluate_main() -> None:
    """``rl2-evaluate``: see :mod:`rl2_lightning.evaluate`."""
    from rl2_lightning.evaluate import main

    _command(main)()


def pretrained_main() -> None:
    """``rl2-pretrained``: see :mod:`rl2_lightning.pretrained`."""
    from rl2_lightning.pretrained import main

    _command(main)()


def tasks_main() -> None:
    """``rl2-tasks``: see :mod:`rl2_lightning.envs.tasks`."""
    from rl2_lightning.envs.tasks import main

    _command(main)()


def search_main() -> None:
    """``rl2-search``: see :mod:`rl2_lightning.search`."""
    from rl2_lightning.search import main

    _command(main)()
