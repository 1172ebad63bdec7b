"""How much of a baseline's held-out score is noise: the same 1000 tasks, several seeds, several hyperparameters.

A held-out score mixes two kinds of luck: which tasks the set holds (fixed here) and the run's own
randomness (reward and transition noise, the policy's coin flips), which changes with ``--seeds``. This
command replays one method on the held-out tasks for every (hyperparameter value, seed) pair and prints,
per value, the mean over seeds and the spread of the single-seed scores. It also prints the score the
paper's protocol would report — the best grid value chosen *on the evaluation tasks themselves* with a
single seed — which is how the RL² authors' baseline script picked ε, BEB's and UCRL2's scalings and
OPSRL's sample count (it tuned on the 1000 tasks it reported). That number is a diagnostic only: our tables
tune on the separate tuning set.

    python -m rl2_lightning.baselines.spread tabular_n100 egreedy --param epsilon \
        --values 0.1 0.15 0.2 0.3 --seeds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from rl2_lightning.baselines.registry import make_baseline, parse_setting
from rl2_lightning.envs import make_trial_env
from rl2_lightning.envs.tasks import derive_seed
from rl2_lightning.evaluation.scoring import episode_returns, mean_ci95, play_trials


def heldout_scores(
    setting: str, method: str, param: str | None, values: list[float], seeds: list[int], prior: str = "paper"
) -> dict[float, list[tuple[float, float]]]:
    """``value -> [(mean, ci95) per seed]`` of ``method`` on the setting's held-out tasks."""
    setting_kwargs, n = parse_setting(setting)
    kw = dict(setting_kwargs)
    family = kw.pop("family")
    env = make_trial_env(family, 1000, n, task_set="heldout", **kw)
    out: dict[float, list[tuple[float, float]]] = {}
    for value in values:
        hparams = {} if param is None else {param: int(value) if param == "num_samples" else value}
        for seed in seeds:
            env.base_env.simulator.seed(derive_seed(seed, "heldout", "dynamics"))
            torch.manual_seed(derive_seed(seed, "spread", method))
            policy = make_baseline(setting_kwargs, n, method, prior, **hparams)  # bandits ignore the prior
            totals = episode_returns(play_trials(env, policy, env.base_env.trial_steps), n).sum(-1)
            out.setdefault(value, []).append(mean_ci95(totals))
    env.close()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("setting", help="bandit_k<k>_n<n> or tabular_n<n>")
    parser.add_argument("method", help="baseline key, e.g. egreedy, beb, opsrl, ucb1")
    parser.add_argument("--param", default=None, help="hyperparameter to vary (none: the method's defaults)")
    parser.add_argument("--values", type=float, nargs="+", default=[float("nan")])
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0 .. N-1 per value")
    parser.add_argument("--prior", default="paper", choices=["paper", "bayes"])
    args = parser.parse_args(argv)
    if args.param is None and len(args.values) > 1:
        parser.error("--values needs --param")
    start = time.perf_counter()
    scores = heldout_scores(args.setting, args.method, args.param, args.values, list(range(args.seeds)), args.prior)
    print(f"{args.setting} {args.method} ({args.prior} prior), 1000 held-out tasks, seeds 0..{args.seeds - 1}")
    print(f"| {args.param or 'value'} | mean over seeds | SD of one seed's score | seed 0 (± 95% CI) | all seeds |")
    print("|---|---|---|---|---|")
    for value, runs in scores.items():
        means = [m for m, _ in runs]
        sd = statistics.stdev(means) if len(means) > 1 else math.nan
        print(
            f"| {value:g} | {statistics.fmean(means):.1f} | {sd:.1f} | {runs[0][0]:.1f} ± {runs[0][1]:.1f} | "
            + ", ".join(f"{m:.1f}" for m in means)
            + " |"
        )
    best = max(scores, key=lambda v: scores[v][0][0])
    print(
        f"paper protocol (best value on these tasks, seed 0): {args.param}={best:g} -> {scores[best][0][0]:.1f}; "
        f"{time.perf_counter() - start:.0f} s"
    )
    return scores


if __name__ == "__main__":
    main()
