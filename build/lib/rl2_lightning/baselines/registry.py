"""Which baselines a setting has, built with their tuned hyperparameters (``conf/baselines/<setting>.yaml``).

A *setting* is a task distribution with a trial length, a row of the paper's tables: ``bandit_k5_n10``,
``tabular_n25``. Scoring (:mod:`rl2_lightning.evaluation`) and tuning (:mod:`~rl2_lightning.baselines.tune`)
both build baselines here.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import yaml

from rl2_lightning.baselines.bandit import BANDIT_BASELINES, make_bandit_baseline
from rl2_lightning.baselines.mdp import PRIORS, TABULAR_BASELINES, make_tabular_baseline
from rl2_lightning.envs import BernoulliBandit, TabularMDP, make_simulator
from rl2_lightning.resources import conf_dir

CONF_DIR = conf_dir() / "baselines"
#: method key -> display name (the paper's RL² numbers are matched by the ``rl2`` key)
DISPLAY_NAMES = {**BANDIT_BASELINES, **TABULAR_BASELINES, "rl2": "RL²", "rl3": "RL³"}


def parse_setting(setting: str) -> tuple[dict, int]:
    """``bandit_k5_n10`` -> ``({"family": "bandit", "num_arms": 5}, 10)``; ``tabular_n25`` -> tabular MDPs, n = 25."""
    m = re.fullmatch(r"bandit_k(\d+)_n(\d+)", setting)
    if m:
        return {"family": "bandit", "num_arms": int(m[1])}, int(m[2])
    m = re.fullmatch(r"tabular_n(\d+)", setting)
    if m:
        return {"family": "tabular", "num_states": 10, "num_actions": 5, "episode_steps": 10}, int(m[1])
    raise ValueError(f"setting {setting!r} is unknown; expected bandit_k<k>_n<n> or tabular_n<n>")


def setting_name(setting_kwargs: dict, episodes_per_trial: int) -> str:
    """Inverse of :func:`parse_setting` (``riverswim_n{n}`` for RiverSwim)."""
    family = setting_kwargs["family"]
    if family == "bandit":
        return f"bandit_k{setting_kwargs.get('num_arms', 5)}_n{episodes_per_trial}"
    return f"{family}_n{episodes_per_trial}"


def setting_env(setting_kwargs: dict, episodes_per_trial: int, inner_estimates: bool = False):
    """The env component of a setting given as ``{"family": ..., sizes}`` and ``n`` (with RL³'s inner
    estimates appended to the observation when ``inner_estimates``)."""
    from functools import partial

    from rl2_lightning.envs import FAMILIES, TrialEnvFactory

    kw = dict(setting_kwargs)
    return TrialEnvFactory(partial(FAMILIES[kw.pop("family")], **kw), episodes_per_trial, inner_estimates=inner_estimates)


def make_baseline(setting_kwargs: dict, episodes_per_trial: int, name: str, prior: str = "paper", **hparams):
    """Build baseline ``name`` for a setting (bandit or tabular family)."""
    kw = dict(setting_kwargs)
    family = kw.pop("family")
    if family == "bandit":
        return make_bandit_baseline(name, kw.get("num_arms", 5), episodes_per_trial, **hparams)
    sim = make_simulator(family, 1, **kw)
    return make_tabular_baseline(
        name, sim.num_states, sim.num_actions, sim.fixed_episode_steps, prior=prior, **hparams
    )


def config_path(setting: str) -> Path:
    """``conf/baselines/<setting>.yaml``."""
    return CONF_DIR / f"{setting}.yaml"


def load_hparams(setting: str, prior: str | None = None) -> dict[str, dict]:
    """Tuned hyperparameters of ``setting`` per method (``{}`` when the setting was never tuned)."""
    path = config_path(setting)
    if not path.exists():
        return {}
    hparams = yaml.safe_load(path.read_text()).get("hparams", {})
    return hparams.get(prior, {}) if prior is not None else hparams


def baseline_setting(simulator) -> dict | None:
    """``{"family": ..., sizes}`` of a simulator class or partial that has the paper's baselines
    (Bernoulli bandits, random tabular MDPs), ``None`` for the other families."""
    cls, kwargs = getattr(simulator, "func", simulator), dict(getattr(simulator, "keywords", {}))
    if cls is BernoulliBandit:
        return {"family": "bandit", **kwargs}
    if cls is TabularMDP:
        return {"family": "tabular", **kwargs}
    return None


def baseline_policies(setting_kwargs: dict, episodes_per_trial: int) -> dict[str, object]:
    """Every baseline of the setting's table with its tuned hyperparameters, keyed like :data:`PAPER_RESULTS`.

    Tabular baselines come twice: ``name`` (paper prior) and ``name_bayes`` (true prior); Random once.
    """
    setting = setting_name(setting_kwargs, episodes_per_trial)
    family = setting_kwargs["family"]
    if family == "bandit":
        variants = [("", None)]
        names = list(BANDIT_BASELINES)
    else:
        variants = [("", "paper"), ("_bayes", "bayes")]
        names = list(TABULAR_BASELINES)
    tuned_any = bool(load_hparams(setting))
    if not tuned_any:
        warnings.warn(f"no tuned hyperparameters for {setting} (conf/baselines/{setting}.yaml): using defaults")
    policies = {}
    for suffix, prior in variants:
        hparams = load_hparams(setting, prior)
        for name in names:
            if name == "random" and suffix:
                continue
            policies[name + suffix] = lambda name=name, prior=prior, hp=hparams.get(name, {}): make_baseline(
                setting_kwargs, episodes_per_trial, name, prior or "paper", **hp
            )
    assert set(PRIORS) == {"paper", "bayes"}
    return policies


def display_name(key: str) -> str:
    """``psrl_bayes`` -> ``PSRL (Bayes prior)``."""
    base, bayes = (key[: -len("_bayes")], True) if key.endswith("_bayes") else (key, False)
    name = DISPLAY_NAMES.get(base, base)
    return f"{name} (Bayes prior)" if bayes else name
