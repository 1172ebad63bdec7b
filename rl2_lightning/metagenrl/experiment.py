"""The transfer experiment: learned objectives, from-scratch learners, RL² and the classical baselines on
the held-out task sets of a split's test settings (families and action counts never seen in meta-training,
and the training families themselves).

    python -m rl2_lightning.metagenrl.experiment split=bandit_mdp [ckpt=pretrained] [out=docs/metagenrl]

Every method plays the same held-out tasks with the same seeds (:func:`~rl2_lightning.evaluation.scoring.score_on_tasks`).
Rows of each setting:

* ``lalpha_gradient`` / ``lalpha_es``: a fresh learner per trial trained by the frozen learned objective
  (meta-gradient / evolution strategies), shipped as ``<split>_gradient`` / ``<split>_es``;
* ``reinforce`` / ``a2c``: the same learner trained by REINFORCE with a baseline / advantage actor-critic,
  their step size chosen on the *training* families' tuning sets (:func:`tune_from_scratch`);
* ``rl2_transfer``: an RL² policy trained on a training family, played on the test family with its
  previous-action input padded or cut and its logits cut to the test family's actions, or a row that
  says why it cannot run (``rl2_own``: RL² trained on the test family itself);
* the setting's classical baselines, and the exact ``random`` and ``oracle`` expectations.

Each row has the trial return with its 95% interval over tasks, the share of the random-to-oracle gap
it closes, and the per-episode returns with intervals (the figures).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tensordict.nn import TensorDictModuleBase

from rl2_lightning.evaluation.scoring import mean_ci95, score_on_tasks
from rl2_lightning.metagenrl.objective import ActorCritic, Reinforce
from rl2_lightning.metagenrl.reference import gap_closed, oracle_returns, random_returns
from rl2_lightning.metagenrl.train import _base, make_learner

FROM_SCRATCH = {"reinforce": ("REINFORCE + baseline (from scratch)", Reinforce),
                "a2c": ("A2C (from scratch)", ActorCritic)}
LR_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
NAMES = {"lalpha_gradient": "L_α, meta-gradient", "lalpha_es": "L_α, ES", "rl2_transfer": "RL² (trained on {})",
         "rl2_own": "RL² (trained on this family: {})", "random": "Random (exact)", "oracle": "Oracle (exact)"}


def load_split(name: str):
    """The split's config node (``conf/split/<name>.yaml``) and the meta-training config it goes with."""
    from rl2_lightning.config import CONF_DIR

    path = CONF_DIR / "split" / f"{name}.yaml"
    if not path.is_file():
        have = ", ".join(sorted(p.stem for p in (CONF_DIR / "split").glob("*.yaml")))
        raise ValueError(f"split={name!r} is unknown; choose one of: {have}")
    base = OmegaConf.load(CONF_DIR / "metagenrl.yaml")
    return OmegaConf.load(path), base


def tune_from_scratch(split, learner_cfg: dict, num_tasks: int = 200, grid=LR_GRID, seed: int = 0) -> dict:
    """The step size of each from-scratch objective that closes the largest mean share of the random-to-oracle
    gap on the *training* families' tuning sets; returns ``{method: {"lr": best, "gap": {lr: score}}}``."""
    out = {key: {"gap": {}} for key in FROM_SCRATCH}
    for name, node in split.train.items():
        factory = instantiate(node)
        env = factory.make(num_tasks, task_set="tuning")
        tasks = _base(env).task_source.tasks[:num_tasks]
        random, oracle = _references(tasks, factory, _base(env).simulator.fixed_episode_steps)
        try:
            for key, (_, cls) in FROM_SCRATCH.items():
                for lr in grid:
                    policy = make_learner(env, cls(), **{**learner_cfg, "lr": lr})
                    returns, _ = score_on_tasks(env, policy, tasks, key=key, seed=seed, task_set="tuning")
                    gap = gap_closed(returns.sum(-1).mean().item(), random.mean().item(), oracle.mean().item())
                    out[key]["gap"].setdefault(lr, []).append(gap)
        finally:
            env.close()
    for key, entry in out.items():
        entry["gap"] = {lr: sum(g) / len(g) for lr, g in entry["gap"].items()}
        entry["lr"] = max(entry["gap"], key=entry["gap"].get)
    return out


def _references(tasks, factory, episode_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    n = factory.episodes_per_trial
    return random_returns(tasks, n, episode_steps), oracle_returns(tasks, n, episode_steps)


class AdaptedActor(TensorDictModuleBase):
    """An RL² actor trained with ``trained_actions`` actions, played in an env with another action count:
    the previous-action input is padded with zeros (or cut: an actor with fewer actions never takes the
    others), and the logits are cut to the env's actions before sampling."""

    in_keys = ["prev_action"]
    out_keys = ["action"]

    def __init__(self, actor, trained_actions: int):
        super().__init__()
        self.actor, self.trained_actions = actor, int(trained_actions)

    def forward(self, td):  # noqa: D102
        prev = td["prev_action"]
        env_actions = prev.shape[-1]
        if env_actions < self.trained_actions:
            pad = prev.new_zeros(*prev.shape[:-1], self.trained_actions - env_actions)
            td.set("prev_action", torch.cat([prev, pad], -1))
        else:
            td.set("prev_action", prev[..., : self.trained_actions])
        logits = self.actor.get_dist(td).logits[..., :env_actions]
        td.set("prev_action", prev)
        td.set("action", torch.distributions.Categorical(logits=logits).sample())
        return td


def rl2_row_policy(preset: str, env):
    """``(policy, agent, None)`` for the shipped RL² policy ``preset`` in ``env``, or ``(None, None, why)``."""
    from rl2_lightning.pretrained import load

    module = load(preset)
    spec = module.env.spec_env()
    try:
        obs, actions = tuple(spec.simulator.observation_shape), spec.simulator.num_actions
    finally:
        spec.close()
    sim = _base(env).simulator
    if obs != tuple(sim.observation_shape):
        return None, None, f"cannot run: its observation has shape {obs}, this family's {tuple(sim.observation_shape)}"
    policy = module.actor if actions == sim.num_actions else AdaptedActor(module.actor, actions)
    return policy, module.agent, None


def classical(factory, n: int) -> dict:
    """The setting's baselines with their tuned hyperparameters where they exist; RiverSwim, which has none
    tuned, gets UCRL2, PSRL and greedy with their defaults."""
    from rl2_lightning.baselines.mdp import make_tabular_baseline
    from rl2_lightning.envs import RiverSwim
    from rl2_lightning.evaluation import setting_policies

    policies = {k: v for k, v in setting_policies(factory, n).items() if k != "random"}
    if factory.simulator_class is RiverSwim:
        kw = getattr(factory.simulator, "keywords", {})
        sim = RiverSwim(1, **kw)
        for name in ("ucrl2", "psrl", "greedy"):
            policies[name] = lambda name=name: make_tabular_baseline(name, sim.num_states, 2, sim.fixed_episode_steps)
    return policies


def score_setting(name: str, node, split, objectives: dict, lrs: dict, learner_cfg: dict, num_tasks: int,
                  seed: int = 0, verbose: bool = True) -> list[dict]:
    """Every row of one test setting on its held-out set."""
    import warnings

    from rl2_lightning.baselines.registry import display_name

    factory = instantiate(node)
    n = factory.episodes_per_trial
    env = factory.make(num_tasks, task_set="heldout")
    tasks = _base(env).task_source.tasks[:num_tasks]
    steps = _base(env).simulator.fixed_episode_steps
    random, oracle = _references(tasks, factory, steps)
    lo, hi = random.mean().item(), oracle.mean().item()
    todo = {f"lalpha_{k}": (NAMES[f"lalpha_{k}"], lambda o=o: make_learner(env, o, **learner_cfg)) for k, o in objectives.items()}
    for key, (label, cls) in FROM_SCRATCH.items():
        todo[key] = (f"{label}, lr {lrs[key]['lr']:g}", lambda cls=cls, key=key: make_learner(env, cls(), **{**learner_cfg, "lr": lrs[key]["lr"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # untuned settings (k=50, n=25) use the baselines' defaults, as said
        for key, make in classical(factory, n).items():
            todo[key] = (display_name(key), make)
    rows = []
    try:
        for key, (label, make) in todo.items():
            rows.append(_score(key, label, env, make(), tasks, seed, lo, hi, verbose))
        for key in ("rl2_transfer", "rl2_own"):
            preset = (split.get("rl2", {}).get(name) or {}).get(key.split("_")[1])
            if preset is None:
                continue
            rl2_env = factory.make(num_tasks, task_set="heldout")
            policy, agent, why = rl2_row_policy(preset, rl2_env)
            label = NAMES[key].format(preset)
            if policy is None:
                rows.append({"key": key, "method": label, "mean": None, "ci95": None, "gap": None, "note": why})
                rl2_env.close()
                continue
            rl2_env = agent.attach_to(rl2_env)
            try:
                rows.append(_score(key, label, rl2_env, policy, tasks, seed, lo, hi, verbose))
            finally:
                rl2_env.close()
    finally:
        env.close()
    for key, values in (("random", random), ("oracle", oracle)):
        mean, ci = mean_ci95(values)
        rows.append({"key": key, "method": NAMES[key], "mean": mean, "ci95": ci, "gap": gap_closed(mean, lo, hi),
                     "per_episode": [mean / n] * n, "per_episode_ci95": [ci / n] * n, "exact": True})
    return rows


def _score(key, label, env, policy, tasks, seed, lo, hi, verbose) -> dict:
    start = time.perf_counter()
    returns, _ = score_on_tasks(env, policy, tasks, key=key, seed=seed, task_set="heldout")
    mean, ci = mean_ci95(returns.sum(-1))
    row = {"key": key, "method": label, "mean": mean, "ci95": ci, "gap": gap_closed(mean, lo, hi),
           "per_episode": returns.double().mean(0).tolist(),
           "per_episode_ci95": (1.96 * returns.double().std(0) / len(returns) ** 0.5).tolist(),
           "seconds": time.perf_counter() - start}
    if verbose:
        print(f"  {label}: {mean:.2f} ± {ci:.2f} (gap closed {row['gap']:.3f}, {row['seconds']:.1f} s)", file=sys.stderr, flush=True)
    return row


def kind(name: str, split) -> str:
    """How a test setting relates to the training families: in distribution, or what is new in it."""
    if name in split.train:
        return "in distribution"
    family = name.split("_")[0]
    trained = {k.split("_")[0] for k in split.train}
    return "unseen action count" if family in trained else "unseen family"


def markdown(results: dict) -> str:
    """One table per test setting: trial return (95% CI) and the share of the random-to-oracle gap closed."""
    lines = []
    for name, entry in results["settings"].items():
        lines += [f"### {name} ({entry['kind']}, {entry['num_tasks']} held-out tasks)", "",
                  "| method | trial return (95% CI) | gap closed |", "|---|---|---|"]
        for r in entry["rows"]:
            if r["mean"] is None:
                lines.append(f"| {r['method']} | {r['note']} | – |")
                continue
            lines.append(f"| {r['method']} | {r['mean']:.2f} ± {r['ci95']:.2f} | {r['gap']:.3f} |")
        lines.append("")
    return "\n".join(lines)


#: the rows drawn in the per-episode figures (the classical baselines are in the tables)
CURVES = ("lalpha_gradient", "lalpha_es", "reinforce", "a2c", "rl2_transfer", "rl2_own", "random", "oracle")


def figure(name: str, entry: dict, path: Path) -> None:
    """Per-episode return within the trial, with 95% intervals over tasks."""
    from rl2_lightning.evaluation.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for r in entry["rows"]:
        if r["key"] not in CURVES or r["mean"] is None:
            continue
        y = torch.tensor(r["per_episode"])
        ci = torch.tensor(r["per_episode_ci95"])
        x = torch.arange(1, len(y) + 1)
        bold = r["key"].startswith("lalpha")
        style = "--" if r.get("exact") else "-"
        (line,) = ax.plot(x, y, style, lw=2.2 if bold else 1.2, label=r["method"])
        if not r.get("exact"):
            ax.fill_between(x, y - ci, y + ci, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("episode of the trial")
    ax.set_ylabel("mean return of the episode")
    ax.set_title(f"{name} ({entry['kind']})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    """``split=<name> [ckpt=pretrained|<run dir>] [out=<dir>] [num_tasks=N] [settings=a,b]``."""
    from rl2_lightning.metagenrl.store import load_objective, load_shipped

    parser = argparse.ArgumentParser(prog="python -m rl2_lightning.metagenrl.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("args", nargs="*", help="split=<name> ckpt=pretrained|<grad run dir>,<es run dir> out=<dir> num_tasks=N settings=a,b threads=N")
    args = dict(a.split("=", 1) for a in parser.parse_args(argv).args)
    unknown = set(args) - {"split", "ckpt", "out", "num_tasks", "settings", "threads"}
    if unknown:
        raise ValueError(f"unknown argument {sorted(unknown)[0]!r}; expected split=, ckpt=, out=, num_tasks=, settings=, threads=")
    torch.set_num_threads(int(args.get("threads", 1)))
    split, base = load_split(args.get("split", "bandit_mdp"))
    learner_cfg = OmegaConf.to_container(base.learner)
    ckpt = args.get("ckpt", "pretrained")
    if ckpt == "pretrained":
        objectives = {k: load_shipped(f"{split.name}_{k}") for k in ("gradient", "es")}
    else:
        runs = ckpt.split(",")
        objectives = {k: load_objective(Path(r) / "objective_best.pt") for k, r in zip(("gradient", "es"), runs)}
    num_tasks = int(args.get("num_tasks", 1000))
    out = Path(args.get("out", "outputs/metagenrl"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"tuning the from-scratch step sizes on {', '.join(split.train)} (tuning sets) ...", file=sys.stderr, flush=True)
    lrs = tune_from_scratch(split, learner_cfg)
    wanted = args["settings"].split(",") if "settings" in args else list(split.test)
    results = {"split": split.name, "from_scratch": lrs, "objectives": {k: o.record for k, o in objectives.items()},
               "settings": {}}
    for name in wanted:
        print(f"{name}:", file=sys.stderr, flush=True)
        rows = score_setting(name, split.test[name], split, objectives, lrs, learner_cfg, num_tasks)
        results["settings"][name] = {"kind": kind(name, split), "num_tasks": num_tasks, "rows": rows}
        figure(name, results["settings"][name], out / f"{split.name}_{name}.png")
    (out / f"{split.name}.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / f"{split.name}.md").write_text(markdown(results))
    print(markdown(results))
    print(f"wrote {out / split.name}.md, .json and the per-setting figures", file=sys.stderr)
    return results


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
