"""Maze evaluation: RL² against a uniformly random policy on held-out mazes, the paper's Table 3.

Reached through the evaluation command with a maze preset::

    python -m rl2_lightning.evaluate conf=maze_5x5 ckpt=runs/maze_5x5/<run>/checkpoints/last.ckpt \\
        metatest.num_tasks=100 metatest.batch_size=8 [metatest.episodes_per_trial=5] [out=DIR]

Both policies play one trial on each of the first ``metatest.num_tasks`` held-out mazes (the same mazes,
in order, ``metatest.batch_size`` engines at a time). Per episode index of the trial: success rate, mean
length of the successful episodes ± its standard error, and %improved (episode 2 reached the goal in no
more steps than episode 1 took), with the paper's RL² numbers beside ours. Writes into ``out`` (default:
``<run>/evaluate``):

* ``maze_<n>x<n>.md`` / ``.csv`` — the table;
* ``maze_<n>x<n>.png`` — success rate and successful-episode length per episode index, both policies
  and the paper;
* ``trial_<policy>.gif`` — the first held-out maze played by each policy: first-person view beside the
  top-down map with the current episode's path; ``trial_<policy>_paths.png`` — every episode's path.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from torchrl.envs.utils import ExplorationType, set_exploration_type

from rl2_lightning.baselines.common import RandomPolicy
from rl2_lightning.config import env_kwargs
from rl2_lightning.envs import FixedTasks, make_trial_env
from rl2_lightning.envs.tasks import derive_seed
from rl2_lightning.metatest import PAPER_TABLE3, mean_ci95, navigation_metrics, play_task_set

NAMES = {"rl2": "RL²", "random": "Random"}


def evaluate_maze(cfg: DictConfig, module=None, out_dir: str | Path | None = None, verbose: bool = True) -> list[dict]:
    """Score RL² (``module``, when given) and a random policy on held-out mazes; write table, plot, GIFs."""
    from rl2_lightning.envs.maze.render import record_trial, save_trial_media

    size = cfg.env.size
    n = cfg.metatest.episodes_per_trial or cfg.env.episodes_per_trial
    num_tasks = cfg.metatest.num_tasks
    batch = min(cfg.metatest.batch_size or 8, num_tasks)
    kwargs = env_kwargs(cfg.env)
    primers = module.agent.primers if module is not None else []

    def make(num_envs: int):
        env = make_trial_env("maze", num_envs, n, task_set="heldout", **kwargs)
        for primer in primers:
            env.append_transform(primer.clone())
        return env

    env, one = make(batch), make(1)
    policies = {"rl2": module.actor} if module is not None else {}
    policies["random"] = RandomPolicy(env.base_env.simulator.num_actions)
    tasks = env.base_env.task_source.tasks[:num_tasks]
    rows, media = [], {}
    out = Path(out_dir) if out_dir is not None else None
    try:
        for key, policy in policies.items():
            start = time.perf_counter()
            torch.manual_seed(derive_seed(cfg.seed, "evaluate", key))
            env.base_env.simulator.seed(derive_seed(cfg.seed, "heldout", "dynamics"))
            returns, steps = play_task_set(env, policy, tasks, ExplorationType.RANDOM)
            mean, ci = mean_ci95(returns.sum(-1))
            rows.append(
                {
                    "key": key,
                    "method": NAMES[key],
                    "trial_return": mean,
                    "trial_return_ci95": ci,
                    **navigation_metrics(steps, n),
                    "seconds": time.perf_counter() - start,
                }
            )
            if out is not None:  # the first held-out maze, played by this policy
                one.base_env.task_source = FixedTasks(tasks[:1])
                one.base_env.simulator.seed(derive_seed(cfg.seed, "heldout", "dynamics"))
                torch.manual_seed(derive_seed(cfg.seed, "evaluate", key))
                with set_exploration_type(ExplorationType.RANDOM):
                    trial = record_trial(one, policy)
                media[key] = save_trial_media(
                    trial["layout"], trial["observation"], trial["position"], trial["episode_index"],
                    out / f"trial_{key}",
                )
    finally:
        env.close()
        one.close()
    setting = f"maze_{size}x{size}"
    table = to_markdown(rows, size, n, num_tasks)
    if verbose:
        print(f"\n{setting}: {num_tasks} held-out mazes, {n} episodes per trial\n{table}")
    if out is not None:
        write_outputs(rows, setting, size, n, out, table)
        if verbose:
            for key, (gif, png) in media.items():
                print(f"{NAMES[key]}: {gif} {png}")
    return rows


def _fmt(x: float, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def to_markdown(rows: list[dict], size: int, n: int, num_tasks: int) -> str:
    """Table 3's layout: per episode, success rate and successful length; %improved; the paper's RL² row."""
    paper = PAPER_TABLE3.get(size)
    head = ["method", "trial return"]
    head += [f"success ep {k + 1}" for k in range(n)] + [f"length ep {k + 1}" for k in range(n)] + ["%improved"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], f"{r['trial_return']:.2f} ± {r['trial_return_ci95']:.2f}"]
        cells += [f"{100 * r[f'success_ep{k}']:.1f}%" for k in range(n)]
        cells += [f"{_fmt(r[f'length_ep{k}'])} ± {_fmt(r[f'length_se_ep{k}'])}" for k in range(n)]
        cells.append(f"{100 * r['improved']:.1f}%" if "improved" in r else "–")
        lines.append("| " + " | ".join(cells) + " |")
    if paper is not None:
        k_max = min(n, len(paper["success"]))
        cells = ["RL² (paper)", "–"]
        cells += [f"{100 * paper['success'][k]:.1f}%" for k in range(k_max)] + ["–"] * (n - k_max)
        cells += [f"{paper['length'][k]} ± {paper['length_se'][k]}" for k in range(k_max)] + ["–"] * (n - k_max)
        cells.append(f"{100 * paper['improved']:.1f}%")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"{num_tasks} held-out mazes ({size}x{size}), one trial each; length: steps of the successful episodes "
        "(mean ± standard error); %improved: trials whose 2nd episode reached the goal in no more steps than the 1st."
    )
    return "\n".join(lines)


def write_outputs(rows: list[dict], setting: str, size: int, n: int, out: Path, table: str) -> None:
    """``<setting>.md``, ``.csv`` (one row per method, every metric) and ``.png`` (per-episode curves)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{setting}.md").write_text(f"# {setting}\n\n{table}\n")
    keys = list(rows[0])
    with open(out / f"{setting}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = list(range(1, n + 1))
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
    for r in rows:
        a1.plot(x, [100 * r[f"success_ep{k}"] for k in range(n)], marker="o", label=r["method"])
        a2.errorbar(
            x, [r[f"length_ep{k}"] for k in range(n)], yerr=[r[f"length_se_ep{k}"] for k in range(n)],
            marker="o", capsize=3, label=r["method"],
        )
    paper = PAPER_TABLE3.get(size)
    if paper is not None:
        k_max = min(n, len(paper["success"]))
        a1.plot(x[:k_max], [100 * s for s in paper["success"][:k_max]], "k--", lw=1, label="RL² (paper)")
        a2.errorbar(x[:k_max], paper["length"][:k_max], yerr=paper["length_se"][:k_max], fmt="k--", lw=1,
                    capsize=3, label="RL² (paper)")
    a1.set(xlabel="episode within the trial", ylabel="success rate (%)", ylim=(0, 105), xticks=x)
    a2.set(xlabel="episode within the trial", ylabel="steps of successful episodes", xticks=x)
    a1.legend(fontsize="small")
    fig.suptitle(f"{setting}: held-out mazes")
    fig.tight_layout()
    fig.savefig(out / f"{setting}.png", dpi=100)
    plt.close(fig)
