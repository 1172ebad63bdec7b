"""Grid search of the baselines' hyperparameters on the *tuning* task sets (never the held-out sets).

One batched run scores a whole grid: env ``i`` plays tuning task ``i % num_tasks`` with grid point
``i // num_tasks`` (common random tasks across grid points). The best point per method is written to
``conf/baselines/<setting>.yaml`` with the command that found it and every point's score.

    python -m rl2_lightning.baselines.tune bandit_k5_n10 bandit_k5_n100 ...
    python -m rl2_lightning.baselines.tune tabular_n10 --num-tasks 500

Settings are named like the training presets: ``bandit_k{k}_n{n}``, ``tabular_n{n}``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch
import yaml
from torchrl.envs import InitTracker, TransformedEnv

from rl2_lightning.baselines.mdp import PRIORS
from rl2_lightning.baselines.registry import config_path, make_baseline, parse_setting
from rl2_lightning.envs import FixedTasks, TrialEnv, make_simulator
from rl2_lightning.envs.tasks import derive_seed, load_task_set
from rl2_lightning.evaluation.scoring import episode_returns, play_trials

#: grids per family and method (wide: the paper grid-searched every hyperparameter per setting)
GRIDS: dict[str, dict[str, dict[str, list]]] = {
    "bandit": {
        "gittins": {"gamma": [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999]},
        "ots": {"num_samples": [1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500]},
        "ucb1": {"c": [0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0, 1.5, 2.0]},
        "egreedy": {"epsilon": [0.0, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5]},
    },
    "tabular": {
        "opsrl": {"num_samples": [1, 2, 3, 5, 8, 12, 20]},
        "ucrl2": {"scaling": [0.003, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0]},
        "beb": {"scaling": [0.0, 1e-4, 3e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1]},
        "egreedy": {"epsilon": [0.0, 0.01, 0.02, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3]},
    },
}
# methods whose cost grows with the hyperparameter: one rollout per grid point
_SEPARATE = {("tabular", "opsrl"), ("bandit", "ots")}
# OTS draws N joint samples per pull: grid points with N * arms * pulls above this are skipped (N <= 20 always kept)
OTS_BUDGET = 200_000


def tuning_env(setting_kwargs: dict, episodes_per_trial: int, num_tasks: int, copies: int, seed: int = 0):
    """A trial env of ``copies * num_tasks`` envs playing the first ``num_tasks`` tuning tasks, repeated."""
    kw = dict(setting_kwargs)
    family = kw.pop("family")
    sim = make_simulator(family, copies * num_tasks, **kw)
    tasks = load_task_set(sim.distribution, "tuning")[:num_tasks]
    sim.seed(derive_seed(seed, "tuning", "dynamics"))
    return TransformedEnv(TrialEnv(sim, FixedTasks(tasks), episodes_per_trial), InitTracker())


def score_grid(
    setting_kwargs: dict,
    episodes_per_trial: int,
    name: str,
    param: str,
    values: list,
    num_tasks: int,
    prior: str = "paper",
    seed: int = 0,
    max_envs: int = 8000,
) -> list[float]:
    """Mean trial return on the tuning tasks for every value of hyperparameter ``param`` of method ``name``."""
    family = setting_kwargs["family"]
    per_run = 1 if (family, name) in _SEPARATE else max(1, max_envs // num_tasks)
    if family == "bandit":  # the stacked rollout holds [envs, steps, arms] floats: bound its size
        per_run = max(1, min(per_run, int(2e8 // (num_tasks * episodes_per_trial * setting_kwargs["num_arms"] * 8))))
    scores: list[float] = []
    for start in range(0, len(values), per_run):
        chunk = values[start : start + per_run]
        env = tuning_env(setting_kwargs, episodes_per_trial, num_tasks, len(chunk), seed)
        value = torch.tensor(chunk, dtype=torch.float64).repeat_interleave(num_tasks)
        if param == "num_samples":
            value = value.long()
        policy = make_baseline(setting_kwargs, episodes_per_trial, name, prior, **{param: value})
        torch.manual_seed(derive_seed(seed, "tune", name))
        rollout = play_trials(env, policy, env.base_env.trial_steps)
        totals = episode_returns(rollout, episodes_per_trial).sum(-1).reshape(len(chunk), num_tasks)
        scores += totals.mean(-1).tolist()
    return scores


def tune_setting(
    setting: str,
    num_tasks: int,
    methods: list[str] | None = None,
    seed: int = 0,
    ots_budget: int = OTS_BUDGET,
    log=print,
    priors: list[str] | None = None,
) -> dict:
    """Grid-search every tunable method of ``setting`` (tabular: under each of ``priors``, default all);
    returns the config dict (see module doc)."""
    setting_kwargs, n = parse_setting(setting)
    family = setting_kwargs["family"]
    priors = (priors or list(PRIORS)) if family == "tabular" else [None]
    result: dict = {}
    for prior in priors:
        chosen, scores_out = {}, {}
        for name, grid in GRIDS[family].items():
            if methods and name not in methods:
                continue
            (param, values), = grid.items()
            if (family, name) == ("bandit", "ots"):
                values = [v for v in values if v <= 20 or v * setting_kwargs["num_arms"] * n <= ots_budget]
            t0 = time.time()
            scores = score_grid(setting_kwargs, n, name, param, values, num_tasks, prior or "paper", seed)
            best = max(range(len(values)), key=scores.__getitem__)
            chosen[name] = {param: values[best]}
            scores_out[name] = {param: values, "tuning_return": [round(s, 3) for s in scores]}
            log(f"{setting} {prior or ''} {name}: best {param}={values[best]} ({scores[best]:.2f}) [{time.time() - t0:.0f}s]")
        if prior is None:
            result = {"hparams": chosen, "grid": scores_out}
        else:
            result.setdefault("hparams", {})[prior] = chosen
            result.setdefault("grid", {})[prior] = scores_out
    return result


def write_config(setting: str, result: dict, command: str, num_tasks: int, seed: int) -> Path:
    """Write (or update the tuned methods of) ``conf/baselines/<setting>.yaml``."""
    path = config_path(setting)
    old = yaml.safe_load(path.read_text()) if path.exists() else {}
    setting_kwargs, n = parse_setting(setting)

    def merge(a: dict, b: dict) -> dict:
        out = dict(a)
        for k, v in b.items():
            out[k] = merge(out.get(k, {}), v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        return out

    grid = result["grid"]
    priors = [p for p in PRIORS if p in grid]
    tuned = ", ".join(sorted(grid[priors[0]] if priors else grid))
    run = {"methods": tuned, "num_tasks": num_tasks, "seed": seed, "command": command}
    if priors:
        run["priors"] = ", ".join(priors)
    every = ", ".join(PRIORS)  # runs recorded without "priors" tuned under all of them
    replaced = (tuned, run.get("priors", every))
    runs = [r for r in old.get("tuning", {}).get("runs", []) if (r["methods"], r.get("priors", every)) != replaced]
    runs.append(run)
    cfg = {
        "setting": setting,
        "env": {**setting_kwargs, "episodes_per_trial": n},
        "tuning": {"task_set": "tuning", "runs": runs},
        "hparams": merge(old.get("hparams", {}), result["hparams"]),
        "grid": merge(old.get("grid", {}), result["grid"]),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    commands = "".join(f"#   {r['command']}\n" for r in runs)
    header = f"# Baseline hyperparameters for {setting}, grid-searched on the tuning task set by:\n{commands}"
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False, width=120))
    return path


def main(argv: list[str] | None = None) -> None:
    """CLI: tune one or more settings and write their configs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", nargs="+", help="e.g. bandit_k5_n10 tabular_n25")
    parser.add_argument("--num-tasks", type=int, default=500, help="tuning tasks per grid point (<= 1000)")
    parser.add_argument("--methods", nargs="*", default=None, help="only these methods (default: all tunable)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small ops)")
    parser.add_argument("--ots-budget", type=int, default=OTS_BUDGET, help="skip OTS grid points with N*k*n above this")
    parser.add_argument("--priors", nargs="*", default=None, choices=list(PRIORS), help="tabular: only these priors")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    command = "python -m rl2_lightning.baselines.tune " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    for setting in args.settings:
        result = tune_setting(setting, args.num_tasks, args.methods, args.seed, args.ots_budget, priors=args.priors)
        print(f"wrote {write_config(setting, result, command, args.num_tasks, args.seed)}", flush=True)


if __name__ == "__main__":
    main()
