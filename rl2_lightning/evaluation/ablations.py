"""The seed notebook's experiments: RL² against its ablations, and RL² trained and meta-tested at several
trial lengths, on one preset's held-out task set.

    python -m rl2_lightning.evaluation.ablations conf=riverswim \\
        --variant "RL² (GRU)=runs/riverswim/<run>/checkpoints/last.ckpt" \\
        --variant "no reset (4 trials per reset)=<ckpt>" --variant "MLP=<ckpt>" \\
        --trained-at 2=<ckpt> --trained-at 5=<ckpt> --trained-at 10=<ckpt> --trained-at 15=<ckpt> \\
        --out docs/img/ablations_riverswim

Every policy plays the same held-out tasks with the same random numbers (:func:`rl2_lightning.evaluation.evaluate`),
from a zero memory state at each trial start, whatever it was trained with (``env.trials_per_reset``, its
trial length). Writes ``<out>_variants.png`` (mean reward per episode index: the variants, random and the
setting's best baseline; the tables list every baseline), ``<out>_lengths.png`` (mean reward per episode of each trained length at each
tested length), ``<out>.csv``, and prints Markdown tables of both.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import torch
from hydra.utils import instantiate

from rl2_lightning.evaluation import evaluate
from rl2_lightning.evaluation.report import _pyplot


def load_policy(ckpt: Path, cfg):
    """The RL² module of a training checkpoint of ``cfg``'s task family and sizes (its trial length and
    reset layout may differ: they are what these experiments vary)."""
    from rl2_lightning.checkpoints import load_module

    return load_module(ckpt, cfg, free_env_keys=("episodes_per_trial", "trials_per_reset"))


def parse_pairs(items: list[str], what: str) -> dict[str, Path]:
    """``["name=path", ...]`` -> ``{name: Path(path)}`` (one-line error otherwise)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"error: {what} {item!r} is not NAME=CHECKPOINT")
        out[name] = Path(path)
    return out


def score(env, module, n: int, num_tasks: int, seed: int, baselines: bool = False) -> list[dict]:
    """Rows of :func:`evaluate` for one policy (and the baselines when asked) at trial length ``n``."""
    policies = {"rl2": module.actor} if module is not None else {}
    return evaluate(env, policies, agent=module.agent if module is not None else None, baselines=baselines,
                    num_tasks=num_tasks, episodes_per_trial=n, seed=seed, verbose=False)


def chain_references(distribution: str, episode_steps: int, num_tasks: int) -> dict[str, float]:
    """For RiverSwim: the mean return per episode, on the held-out tasks, of the optimal policy of each
    task (it knows the task) and of the task-independent policy that always swims right."""
    from rl2_lightning.baselines.planning import value_iteration
    from rl2_lightning.envs.tasks import load_task_set

    tasks = load_task_set(distribution, "heldout")[:num_tasks]
    mu, P = tasks["mu"].double(), tasks["P"].double()
    oracle = value_iteration(mu, P, episode_steps)[:, 0, 0].max(-1).values.mean().item()
    value = torch.zeros(mu.shape[:2], dtype=torch.double)
    for _ in range(episode_steps):  # finite-horizon evaluation of "always action 1" from state 0
        value = mu[:, :, 1] + (P[:, :, 1, :] * value[:, None, :]).sum(-1)
    return {"oracle (knows the task)": oracle, "always swim right (no learning)": value[:, 0].mean().item()}


def variants_figure(curves: dict[str, list[float]], title: str, levels: dict[str, float] | None = None,
                    ylabel: str = "mean reward in the episode (held-out tasks)"):
    """Mean reward per episode index, one line per policy; ``levels`` as horizontal lines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for (name, level), color in zip((levels or {}).items(), ("black", "grey")):
        ax.axhline(level, color=color, ls=":", lw=1, label=name)
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", ms=3, label=name,
                ls="--" if name.startswith(("random", "Random")) or "baseline" in name else "-")
    ax.set_xlabel("episode of the trial")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lengths_figure(table: dict[str, dict[int, float]], random: dict[int, float], title: str):
    """Mean reward per episode against the tested trial length, one line per trained length."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, row in table.items():
        ax.plot(list(row), list(row.values()), marker="o", label=f"trained at {name} episodes")
    ax.plot(list(random), list(random.values()), ls="--", color="grey", label="random")
    ax.set_xlabel("episodes per trial at meta-test")
    ax.set_ylabel("mean reward per episode (held-out tasks)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def run(overrides: list[str], variants: dict[str, Path], lengths_runs: dict[str, Path], lengths: list[int],
        num_tasks: int, out: Path | None, seed: int = 0) -> list[dict]:
    """Score every checkpoint; write the figures and CSV under ``out``; return the CSV's rows."""
    from rl2_lightning.config import compose

    cfg = compose(overrides)
    env = instantiate(cfg.env)
    n0 = cfg.env.episodes_per_trial
    rows, curves = [], {}
    for name, path in variants.items():
        module = load_policy(path, cfg)
        [r] = score(env, module, n0, num_tasks, seed)
        rows.append({"experiment": "variant", "policy": name, "tested_at": n0, "mean": r["mean"], "ci95": r["ci95"],
                     "per_episode": r["per_episode"]})
        curves[name] = r["per_episode"]
    base = score(env, None, n0, num_tasks, seed, baselines=True)
    rivals = [r for r in base if r["key"] != "random"]
    drawn = {"random"} | ({max(rivals, key=lambda r: r["mean"])["key"]} if rivals else set())
    for r in base:  # every baseline in the table; random and the best of the others in the figure
        rows.append({"experiment": "variant", "policy": r["method"], "tested_at": n0, "mean": r["mean"],
                     "ci95": r["ci95"], "per_episode": r["per_episode"]})
        if r["key"] in drawn:
            curves[r["method"] + (" (best baseline)" if r["key"] != "random" else "")] = r["per_episode"]
    per_length: dict[str, dict[int, float]] = {}
    random: dict[int, float] = {}
    for name, path in lengths_runs.items():
        module = load_policy(path, cfg)
        per_length[name] = {}
        for n in lengths:
            [r] = score(env, module, n, num_tasks, seed)
            per_length[name][n] = r["mean"] / n
            rows.append({"experiment": "length", "policy": f"trained at {name}", "tested_at": n, "mean": r["mean"],
                         "ci95": r["ci95"], "per_episode": r["per_episode"]})
    if lengths_runs:
        for n in lengths:
            rand = [r for r in score(env, None, n, num_tasks, seed, baselines=True) if r["key"] == "random"]
            if rand:
                random[n] = rand[0]["mean"] / n
                rows.append({"experiment": "length", "policy": "random", "tested_at": n, "mean": rand[0]["mean"],
                             "ci95": rand[0]["ci95"], "per_episode": rand[0]["per_episode"]})
    levels = {}
    if cfg.env.simulator._target_.endswith("RiverSwim"):
        levels = chain_references(f"riverswim_s{cfg.env.simulator.num_states}", cfg.env.simulator.episode_steps, num_tasks)
        for name, level in levels.items():
            rows.append({"experiment": "variant", "policy": name, "tested_at": n0, "mean": level * n0, "ci95": float("nan"),
                         "per_episode": [level] * n0})
    print(markdown(rows, lengths))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if curves:
            fig = variants_figure(curves, f"{cfg.experiment}: RL² and its ablations ({num_tasks} held-out tasks)", levels)
            fig.savefig(f"{out}_variants.png", dpi=110)
        if per_length:
            fig = lengths_figure(per_length, random, f"{cfg.experiment}: trained and meta-tested trial lengths")
            fig.savefig(f"{out}_lengths.png", dpi=110)
        with open(f"{out}.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            for r in rows:
                writer.writerow({**r, "per_episode": " ".join(f"{v:.5g}" for v in r["per_episode"])})
    return rows


def markdown(rows: list[dict], lengths: list[int]) -> str:
    """The variants' table (trial return ± 95% CI, first and last episode) and the lengths' matrix."""
    lines = []
    variants = [r for r in rows if r["experiment"] == "variant"]
    if variants:
        lines += ["| policy | trial return | episode 1 | last episode |", "|---|---|---|---|"]
        lines += [f"| {r['policy']} | {r['mean']:.3f}" + (f" ± {r['ci95']:.3f}" if r["ci95"] == r["ci95"] else " (computed)")
                  + f" | {r['per_episode'][0]:.4f} | "
                  f"{r['per_episode'][-1]:.4f} |" for r in variants]
    table = [r for r in rows if r["experiment"] == "length"]
    if table:
        names = list(dict.fromkeys(r["policy"] for r in table))
        lines += ["", "Mean reward per episode (trial return / n) ± 95% CI of it:", "",
                  "| policy | " + " | ".join(f"tested at {n}" for n in lengths) + " |",
                  "|---|" + "---|" * len(lengths)]
        for name in names:
            cells = {r["tested_at"]: r for r in table if r["policy"] == name}
            lines.append(f"| {name} | " + " | ".join(
                f"{cells[n]['mean'] / n:.4f} ± {cells[n]['ci95'] / n:.4f}" if n in cells else "–" for n in lengths) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="+", help="conf=<preset> [key=value ...]")
    parser.add_argument("--variant", action="append", default=[], help="NAME=CHECKPOINT (NAME without \"=\"), trained at the preset's length")
    parser.add_argument("--trained-at", action="append", default=[], help="N=CHECKPOINT of a run with N episodes per trial")
    parser.add_argument("--lengths", default="2,5,10,15", help="trial lengths to meta-test the --trained-at runs at")
    parser.add_argument("--num-tasks", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=None, help="prefix of the .png/.csv outputs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    lengths = [int(x) for x in args.lengths.split(",")]
    run(args.overrides, parse_pairs(args.variant, "--variant"), parse_pairs(args.trained_at, "--trained-at"),
        lengths, args.num_tasks, args.out)


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
