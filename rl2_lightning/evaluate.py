"""Evaluation command: every baseline (and any extra policy, e.g. an RL² actor) on a held-out task set.

Prints the paper-style table (mean total reward over the trial with its 95% interval, the paper's number
beside ours, the best method marked) and writes ``<setting>.md``, ``<setting>.csv`` and ``<setting>.png``
(mean reward per episode index of every method) to ``--out``.

    python -m rl2_lightning.evaluate conf=bandit_k5_n10 ckpt=runs/bandit_k5_n10/<run>/checkpoints/last.ckpt
    python -m rl2_lightning.evaluate conf=tabular_n25                       # baselines only
    python -m rl2_lightning.evaluate --family bandit --num-arms 5 --episodes 10 [--out DIR]
    python -m rl2_lightning.evaluate conf=maze_5x5 ckpt=<file> [metatest.num_tasks=100]  # Table 3, GIFs

Baselines use the hyperparameters tuned on the tuning set (``conf/baselines/<setting>.yaml``). Tabular
baselines run with both reward priors: TabulaRL's (``paper``, as the paper ran them) and the true one
(``bayes``, suffix ``_bayes``). The core is :func:`evaluate`, which the training app's front end calls
with its RL² policy. Mazes have no classical baselines: their evaluation (RL² against a uniformly random
policy, the paper's Table 3 columns, a GIF of a held-out trial) is :mod:`rl2_lightning.evaluate_maze`.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import torch

from rl2_lightning.baselines.bandit import BANDIT_BASELINES
from rl2_lightning.baselines.mdp import PRIORS, TABULAR_BASELINES
from rl2_lightning.baselines.tune import load_hparams, make_baseline, setting_name
from rl2_lightning.envs import make_trial_env
from rl2_lightning.envs.tasks import derive_seed
from rl2_lightning.metatest import episode_returns, mean_ci95, play_trials

_T1_COLS = ["random", "gittins", "ts", "ots", "ucb1", "egreedy", "greedy", "rl2"]
_T2_COLS = ["random", "psrl", "opsrl", "ucrl2", "beb", "egreedy", "greedy", "rl2"]
_T1 = {
    (10, 5): [5.0, 6.6, 5.7, 6.5, 6.7, 6.6, 6.6, 6.7],
    (10, 10): [5.0, 6.6, 5.5, 6.2, 6.7, 6.6, 6.6, 6.7],
    (10, 50): [5.1, 6.5, 5.2, 5.5, 6.6, 6.5, 6.5, 6.8],
    (100, 5): [49.9, 78.3, 74.7, 77.9, 78.0, 75.4, 74.8, 78.7],
    (100, 10): [49.9, 82.8, 76.7, 81.4, 82.4, 77.4, 77.1, 83.5],
    (100, 50): [49.8, 85.2, 64.5, 67.7, 84.3, 78.3, 78.0, 84.9],
    (500, 5): [249.8, 405.8, 402.0, 406.7, 405.8, 388.2, 380.6, 401.6],
    (500, 10): [249.0, 437.8, 429.5, 438.9, 437.1, 408.0, 395.0, 432.5],
    (500, 50): [249.6, 463.7, 427.2, 437.6, 457.6, 413.6, 402.8, 438.9],
}
_T2 = {
    10: [100.1, 138.1, 144.1, 146.6, 150.2, 132.8, 134.8, 156.2],
    25: [250.2, 408.8, 425.2, 424.1, 427.8, 377.3, 368.8, 445.7],
    50: [499.7, 904.4, 930.7, 918.9, 917.8, 823.3, 769.3, 936.1],
    75: [749.9, 1417.1, 1449.2, 1427.6, 1422.6, 1293.9, 1172.9, 1428.8],
    100: [999.4, 1939.5, 1973.9, 1942.1, 1935.1, 1778.2, 1578.5, 1913.7],
}
#: The paper's Tables 1 and 2 (Duan et al. 2016): setting -> method -> mean total reward over 1000 tasks.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    **{f"bandit_k{k}_n{n}": dict(zip(_T1_COLS, v)) for (n, k), v in _T1.items()},
    **{f"tabular_n{n}": dict(zip(_T2_COLS, v)) for n, v in _T2.items()},
}
#: the paper's RL² numbers are matched by the ``rl2`` policy key
DISPLAY_NAMES = {**BANDIT_BASELINES, **TABULAR_BASELINES, "rl2": "RL²"}


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


def evaluate(
    setting_kwargs: dict,
    episodes_per_trial: int,
    policies: dict[str, object] | None = None,
    out_dir: str | Path | None = None,
    *,
    baselines: bool = True,
    seed: int = 0,
    verbose: bool = True,
    primers: list | None = None,
) -> list[dict]:
    """Score every baseline and the extra ``policies`` on the setting's held-out tasks.

    Args:
        setting_kwargs: ``family`` plus the family's kwargs, e.g. ``{"family": "bandit", "num_arms": 5}``.
        episodes_per_trial: ``n``, episodes per trial.
        policies: extra policies by key (``"rl2"`` gets the paper's RL² number beside it); a value may be
            a policy (``policy(td) -> td`` writing ``action``) or a zero-argument factory of one.
        out_dir: where to write ``<setting>.md``, ``.csv`` and ``.png``; nothing is written when ``None``.
        baselines: include the classical baselines.
        seed: seeds the policies' randomness (the env's dynamics are seeded by the held-out set).
        primers: env transforms the extra policies need (a GRU policy's recurrent-state primers, without
            which its hidden state would not be carried from step to step).

    Returns:
        one row per method: ``key``, ``method``, ``mean``, ``ci95``, ``paper``, ``vs_paper`` (``within``,
        ``above``, ``below`` or ``""``), ``best``, ``seconds``, ``per_episode`` (mean reward per episode).
    """
    setting = setting_name(setting_kwargs, episodes_per_trial)
    kw = dict(setting_kwargs)
    family = kw.pop("family")
    env = make_trial_env(family, 1000, episodes_per_trial, task_set="heldout", **kw)
    for primer in primers or []:
        env.append_transform(primer.clone())
    trial_steps = env.base_env.trial_steps
    todo = dict(baseline_policies(setting_kwargs, episodes_per_trial)) if baselines else {}
    todo.update(policies or {})
    paper = PAPER_RESULTS.get(setting, {})
    rows = []
    for key, policy in todo.items():
        start = time.perf_counter()
        # every method meets the same reward / transition noise stream (common random numbers)
        env.base_env.simulator.seed(derive_seed(seed, "heldout", "dynamics"))
        torch.manual_seed(derive_seed(seed, "evaluate", key))
        if not callable(getattr(policy, "forward", None)) and callable(policy) and _is_factory(policy):
            policy = policy()
        returns = episode_returns(play_trials(env, policy, trial_steps), episodes_per_trial)
        mean, ci = mean_ci95(returns.sum(-1))
        ref = paper.get(key)
        vs = "" if ref is None else ("within" if abs(mean - ref) <= ci else ("above" if mean > ref else "below"))
        rows.append(
            {
                "key": key,
                "method": display_name(key),
                "mean": mean,
                "ci95": ci,
                "paper": ref,
                "vs_paper": vs,
                "seconds": time.perf_counter() - start,
                "per_episode": returns.double().mean(0).tolist(),
            }
        )
    best = max(r["mean"] for r in rows)
    for r in rows:
        r["best"] = r["mean"] == best
    if verbose:
        print(f"\n{setting} (1000 held-out tasks, total reward over {episodes_per_trial} episodes)")
        print(to_markdown(rows))
    if out_dir is not None:
        write_outputs(rows, setting, Path(out_dir))
    return rows


def _is_factory(obj) -> bool:
    """A zero-argument callable (a policy takes one argument, the step's TensorDict)."""
    import inspect

    try:
        return len(inspect.signature(obj).parameters) == 0 or all(
            p.default is not inspect.Parameter.empty for p in inspect.signature(obj).parameters.values()
        )
    except (TypeError, ValueError):
        return False


def fmt_cell(mean: float, ci: float) -> str:
    """``78.3 ± 1.2`` with precision matched to the interval."""
    digits = 1 if ci >= 0.3 else 2
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def to_markdown(rows: list[dict]) -> str:
    """The per-setting table: method, ours (95% CI), paper, comparison; best method in bold."""
    lines = ["| method | ours (95% CI) | paper | ours vs paper | time (s) |", "|---|---|---|---|---|"]
    for r in rows:
        cell = fmt_cell(r["mean"], r["ci95"])
        name = f"**{r['method']}**" if r["best"] else r["method"]
        cell = f"**{cell}**" if r["best"] else cell
        paper = "" if r["paper"] is None else f"{r['paper']}"
        lines.append(f"| {name} | {cell} | {paper} | {r['vs_paper']} | {r['seconds']:.1f} |")
    return "\n".join(lines)


def write_outputs(rows: list[dict], setting: str, out_dir: Path) -> None:
    """``<setting>.md`` (table), ``.csv`` (one row per method) and ``.png`` (reward per episode index)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{setting}.md").write_text(f"# {setting}\n\n{to_markdown(rows)}\n")
    with open(out_dir / f"{setting}.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["key", "method", "mean", "ci95", "paper", "vs_paper", "best", "seconds"])
        for r in rows:
            writer.writerow([r[k] for k in ("key", "method", "mean", "ci95", "paper", "vs_paper", "best", "seconds")])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        y = torch.tensor(r["per_episode"])
        if len(y) > 50:  # long trials: a running mean keeps the curves readable
            w = len(y) // 50
            y = torch.nn.functional.avg_pool1d(y[None, None], w, 1, padding=0).flatten()
        x = torch.arange(len(y)) + (len(r["per_episode"]) - len(y)) / 2
        ax.plot(x.numpy(), y.numpy(), label=r["method"], lw=1.8 if r["best"] else 1.0)
    ax.set_xlabel("episode index within the trial")
    ax.set_ylabel("mean reward per episode (1000 held-out tasks)")
    ax.set_title(setting)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_dir / f"{setting}.png", dpi=100)
    plt.close(fig)


def evaluate_checkpoint(overrides: list[str]) -> list[dict]:
    """``conf=<preset> [ckpt=<file>] [out=<dir>] [key=value ...]``: RL² (if ``ckpt``) and the baselines.

    The preset names the setting (family, sizes, trial length); a checkpoint must have been trained on
    that same setting. Outputs go to ``out`` (default: ``<run>/evaluate`` beside the checkpoint's run,
    or ``outputs/evaluate``).
    """
    from hydra import compose, initialize_config_dir

    from rl2_lightning.config import check_preset, env_kwargs, register_configs, validate

    check_preset(overrides)
    args = dict(a.split("=", 1) for a in overrides if a.split("=", 1)[0] in ("ckpt", "out"))
    rest = [a for a in overrides if a.split("=", 1)[0] not in ("ckpt", "out")]
    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=rest)
    validate(cfg)
    setting_kwargs = {"family": cfg.env.family, **env_kwargs(cfg.env)}
    n = cfg.env.episodes_per_trial
    module, out = None, args.get("out")
    if "ckpt" in args:
        module = load_rl2(Path(args["ckpt"]), {**setting_kwargs, "episodes_per_trial": n})
        ckpt = Path(args["ckpt"])
        if out is None and ckpt.parent.name == "checkpoints":
            out = str(ckpt.parent.parent / "evaluate")
    if cfg.env.family == "maze":
        from rl2_lightning.evaluate_maze import evaluate_maze

        return evaluate_maze(cfg, module, out or "outputs/evaluate")
    policies = {"rl2": module.actor} if module is not None else {}
    primers = module.agent.primers if module is not None else []
    return evaluate(setting_kwargs, n, policies, out or "outputs/evaluate", primers=primers, seed=cfg.seed)


def load_rl2(ckpt: Path, setting: dict):
    """The RL² module of a checkpoint, checked to be trained on ``setting`` (one-line errors otherwise)."""
    from rl2_lightning.module import RL2Module

    if not ckpt.is_file():
        raise FileNotFoundError(f"ckpt={str(ckpt)!r}: no such checkpoint file")
    try:
        module = RL2Module.load_from_checkpoint(ckpt, map_location="cpu")
    except Exception as err:  # noqa: BLE001 - any failure means the file is unusable
        raise ValueError(f"ckpt={str(ckpt)!r} is not a readable RL² checkpoint ({type(err).__name__})") from None
    trained = module.env_cfg
    for key, value in setting.items():
        if trained.get(key) != value:
            raise ValueError(f"ckpt={str(ckpt)!r} was trained with env.{key}={trained.get(key)!r}, not {value!r}")
    return module.eval()


def main(argv: list[str] | None = None) -> list[dict]:
    """CLI: ``conf=<preset> [ckpt=...]`` (RL² and baselines), or ``--family ...`` (baselines only)."""
    argv = sys.argv[1:] if argv is None else argv
    if any("=" in a and not a.startswith("-") for a in argv):
        return evaluate_checkpoint(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", required=True, choices=["bandit", "tabular", "riverswim"])
    parser.add_argument("--num-arms", type=int, default=5, help="bandit arms k")
    parser.add_argument("--episodes", type=int, required=True, help="episodes per trial n")
    parser.add_argument("--out", default="outputs/evaluate", help="directory for the .md/.csv/.png outputs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these small ops)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting_kwargs = {"family": args.family}
    if args.family == "bandit":
        setting_kwargs["num_arms"] = args.num_arms
    return evaluate(setting_kwargs, args.episodes, out_dir=args.out, seed=args.seed)


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
