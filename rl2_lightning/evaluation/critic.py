"""How well a trained critic predicts the return, step by step through a trial.

    python -m rl2_lightning.evaluation.critic conf=tabular_n10 ckpt=<file>|latest|pretrained [key=value ...]
        [--num-tasks 300] [--task-set tuning] [--seed 0] [--out critic.png] [--title TEXT]

Plays ``--num-tasks`` tasks (default 300) of ``--task-set`` (default: tuning) with the policy sampling its
actions, runs the critic over each whole trial from a zero state as the update does, and sets its values beside the discounted returns that actually followed, in the critic's
own units (rewards times ``algo.reward_scale``; a value-normalised critic's outputs denormalised). Prints
both at a few steps of the trial, and the share of the returns' variance the values explain; ``--out`` draws
the mean value and the mean return (with the spread over tasks) at every step.

A critic that explains little of it (the values flat while the returns fall from tens to nothing over the
trial) gives the policy advantages that are the one-step reward and little more: the update cannot credit
exploration whose pay-off comes later. During training, ``train/explained_variance_returns`` in TensorBoard
scores the same thing over each batch (``train/explained_variance`` scores the critic against its λ-return
targets, which lean on its own values and can read 0.9 for a critic far off the returns).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

from rl2_lightning.module import explained_variance


@torch.no_grad()
def critic_fit(module, env_factory, num_tasks: int, task_set: str = "tuning", seed: int = 0) -> dict[str, torch.Tensor]:
    """Values and the discounted returns that followed, ``[num_tasks, trial_steps]``, and the ``valid`` mask."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type
    from torchrl.modules import set_recurrent_mode

    from rl2_lightning.algos.base import denormalize, discounted_returns

    play = module.agent.attach_to(env_factory.make(num_tasks, task_set=task_set))
    try:
        play.set_seed(seed)
        torch.manual_seed(seed)
        with set_exploration_type(ExplorationType.RANDOM):
            td = play.rollout(play.base_env.trial_steps, module.actor, break_when_any_done=False)
    finally:
        play.close()
    critic = module.agent.critic
    with set_recurrent_mode(True):
        values = critic(td.select(*critic.in_keys, "is_init", strict=False))["state_value"].squeeze(-1)
    algo = module.algo
    if algo.value_norm:
        values = denormalize(values, algo.value_moments)
    valid = td["valid"].squeeze(-1).to(values.dtype)
    reward = td["next", "reward"].squeeze(-1).to(values.dtype) * algo.reward_scale * valid
    returns = discounted_returns(reward, td["next", "trial_done"].squeeze(-1), float(algo.gae.gamma)) * valid
    return {"values": values * valid, "returns": returns, "valid": valid.bool()}


def report(fit: dict[str, torch.Tensor], steps: int = 7) -> str:
    """A small table: mean value and mean return (with their spread over tasks) at ``steps`` steps of the
    trial, and the explained variance over all steps and within each step."""
    values, returns, valid = fit["values"], fit["returns"], fit["valid"]
    length = values.shape[-1]
    at = sorted({round(i * (length - 1) / (steps - 1)) for i in range(steps)})
    lines = ["| step | value, mean (sd) | return that followed, mean (sd) |", "|---|---|---|"]
    for t in at:
        keep = valid[:, t]
        v, g = values[keep, t], returns[keep, t]
        lines.append(f"| {t} | {v.mean():.2f} ({v.std():.2f}) | {g.mean():.2f} ({g.std():.2f}) |")
    ev = float(explained_variance(values[valid], returns[valid]))
    # within a step: how much of the task-to-task spread of the returns the values explain
    mask = valid.to(values.dtype)
    count = mask.sum(0).clamp(min=1)
    centred_v = (values - (values * mask).sum(0) / count) * mask
    centred_g = (returns - (returns * mask).sum(0) / count) * mask
    within = float(explained_variance(centred_v[valid], centred_g[valid]))
    lines.append("")
    lines.append(f"explained variance of the returns: {ev:.3f} over all steps, {within:.3f} within a step "
                 "(task to task)")
    return "\n".join(lines)


def fit_figure(fit: dict[str, torch.Tensor], title: str = ""):
    """Mean value and mean return that followed at each step of the trial, each with its spread over tasks
    (one standard deviation)."""
    from rl2_lightning.evaluation.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    mask = fit["valid"].to(fit["values"].dtype)
    count = mask.sum(0).clamp(min=1)
    steps = range(mask.shape[-1])
    for key, label in (("returns", "return that followed"), ("values", "critic's value")):
        x = fit[key] * mask
        mean = x.sum(0) / count
        sd = (((x - mean) * mask) ** 2).sum(0).div(count).sqrt()
        line, = ax.plot(steps, mean, label=label)
        ax.fill_between(steps, mean - sd, mean + sd, alpha=0.2, color=line.get_color())
    ax.set_xlabel("step of the trial")
    ax.set_ylabel("discounted return (critic's units)")
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def main(argv: list[str] | None = None) -> dict[str, torch.Tensor]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], usage="%(prog)s conf=<preset> ckpt=<file>|latest|pretrained [key=value ...]")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--config-dir", "-cd", default=None)
    parser.add_argument("--num-tasks", type=int, default=300)
    parser.add_argument("--task-set", default="tuning", choices=["tuning", "heldout"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="a figure of values and returns at every step")
    parser.add_argument("--title", default="")
    args = parser.parse_intermixed_args(argv)  # key=value overrides before or after the options
    from rl2_lightning.config import compose

    named = dict(a.split("=", 1) for a in args.overrides if a.split("=", 1)[0] == "ckpt")
    if "ckpt" not in named:
        parser.error("ckpt=<file>|latest|pretrained is required")
    cfg = compose([a for a in args.overrides if a.split("=", 1)[0] != "ckpt"], args.config_dir)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    from rl2_lightning.evaluate import module_from_ckpt_arg

    module, path = module_from_ckpt_arg(named["ckpt"], cfg, verb="reading")
    if path is None and module.algo.value_norm:  # a shipped record keeps the networks, not the statistics
        raise SystemExit(f"error: the shipped {cfg.experiment} critic predicts normalised returns and its record "
                         "holds no statistics to undo that; give its training checkpoint (ckpt=<file>)")
    fit = critic_fit(module, instantiate(cfg.env), args.num_tasks, args.task_set, seed=args.seed)
    print(f"{cfg.experiment}: the critic over {args.num_tasks} {args.task_set} trials", file=sys.stderr)
    print(report(fit))
    if args.out is not None:
        from rl2_lightning.evaluation.report import save_figure

        save_figure(fit_figure(fit, args.title), args.out)
    return fit


if __name__ == "__main__":
    main()
