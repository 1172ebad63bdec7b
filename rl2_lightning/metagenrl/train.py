"""Meta-training a learned objective: a population of fresh learners from several families shares one L_α.

Each meta-iteration plays one trial of ``num_envs`` fresh learners on new training tasks of every family
of the split (:class:`~rl2_lightning.metagenrl.learner.InTrialLearner`), and moves α by

* ``meta_optimizer=gradient``: the mean over agents, updates and families of MetaGenRL's meta-gradient
  (:func:`~rl2_lightning.metagenrl.learner.meta_loss`), with Adam;
* ``meta_optimizer=es``: an antithetic evolution-strategies estimate of the gradient of the whole-trial
  return (centred ranks per family, averaged over families), with Adam.

Every ``eval_every_s`` the objective is scored on the training families' *tuning* sets as the share of
the random-to-oracle gap its learners close; the best one is kept (``objective_best.pt``) beside the last
(``objective_last.pt``) and the resumable state (``state.pt``). ``metrics.csv`` and ``tb/`` hold the curves.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rl2_lightning.envs import TrialEnvFactory
from rl2_lightning.evaluation.scoring import mean_ci95, score_on_tasks
from rl2_lightning.metagenrl.learner import InTrialLearner
from rl2_lightning.metagenrl.objective import LearnedObjective
from rl2_lightning.metagenrl.reference import gap_closed, oracle_returns, random_returns
from rl2_lightning.metagenrl.store import save_objective
from rl2_lightning.runs import remove_if_stub, say


def make_learner(env, objective, lr: float = 1.0, window: int = 20, inner_steps: int = 1, **kwargs) -> InTrialLearner:
    """An :class:`InTrialLearner` sized for ``env`` (a trial env over a family with flat observations)."""
    base = _base(env)
    sim = base.simulator
    if len(sim.observation_shape) != 1 or getattr(sim, "fixed_episode_steps", None) is None:
        raise ValueError(f"{type(sim).__name__}: the in-trial learner needs flat observations and fixed-length episodes")
    return InTrialLearner(sim.num_actions, sim.observation_shape[0], base.trial_steps, objective, lr=lr,
                          window=window, inner_steps=inner_steps, **kwargs)


def _base(env):
    return getattr(env, "base_env", env)


class Family:
    """One family of a split: its training stream, its tuning tasks and their exact reference returns."""

    def __init__(self, name: str, factory: TrialEnvFactory, num_envs: int, eval_tasks: int, seed: int):
        self.name, self.factory = name, factory
        self.train_env = factory.make(num_envs, seed=seed)
        # scoring replaces an env's task source by the tasks it plays: keep the training stream apart
        self.stream = _base(self.train_env).task_source
        self.tune_env = factory.make(eval_tasks, task_set="tuning")
        base = _base(self.tune_env)
        self.tuning = base.task_source.tasks[:eval_tasks]
        steps = base.simulator.fixed_episode_steps
        self.oracle = oracle_returns(self.tuning, factory.episodes_per_trial, steps).mean().item()
        self.random = random_returns(self.tuning, factory.episodes_per_trial, steps).mean().item()
        self.frames_per_trial = base.trial_steps

    def next_tasks(self):
        """The next ``num_envs`` tasks of the training stream (held-out and tuning tasks excluded)."""
        return self.stream.next(_base(self.train_env).batch_size[0])

    def play(self, learner, tasks, key: str, seed: int) -> torch.Tensor:
        """Trial returns ``[num_envs]`` of ``learner`` on training ``tasks`` (dynamics seeded by ``seed``)."""
        returns, _ = score_on_tasks(self.train_env, learner, tasks, key=key, seed=seed, task_set="train")
        return returns.sum(-1)

    def tuning_score(self, objective, learner_cfg: dict) -> tuple[float, float]:
        """Mean trial return on the tuning tasks and the share of the random-to-oracle gap it closes."""
        returns, _ = score_on_tasks(self.tune_env, make_learner(self.tune_env, objective, **learner_cfg),
                                    self.tuning, key="tuning", seed=0, task_set="tuning")
        mean = returns.sum(-1).mean().item()
        return mean, gap_closed(mean, self.random, self.oracle)

    def close(self) -> None:  # noqa: D102
        self.train_env.close()
        self.tune_env.close()


def gradient_iteration(families: list[Family], objective, learner_cfg: dict, step: int) -> dict[str, float]:
    """One meta-gradient iteration; returns the trial return and meta-objective of each family."""
    out = {}
    for fam in families:
        # every update of every agent weighs the same within a family; families weigh the same
        updates = fam.factory.episodes_per_trial - 1
        learner = make_learner(fam.train_env, objective, meta_weight=1.0 / (updates * len(families)), **learner_cfg)
        returns = fam.play(learner, fam.next_tasks(), key="train", seed=step)
        out[f"{fam.name}/trial_return"] = returns.mean().item()
        out[f"{fam.name}/meta_value"] = sum(learner.meta_values) / max(1, len(learner.meta_values))
    return out


def centred_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks of ``x`` scaled to ``[-0.5, 0.5]`` (ties get distinct ranks in order)."""
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return ranks / max(1, len(x) - 1) - 0.5


def es_iteration(families: list[Family], objective, learner_cfg: dict, step: int, sigma: float, pairs: int,
                 generator: torch.Generator) -> dict[str, float]:
    """One generation of antithetic ES; writes the (negated) gradient estimate into the objective's ``.grad``."""
    params = list(objective.parameters())
    theta = torch.nn.utils.parameters_to_vector(params).detach()
    eps = torch.randn(pairs, theta.numel(), generator=generator)
    probe = LearnedObjective(objective.hidden_size)
    for p in probe.parameters():
        p.requires_grad_(False)
    tasks = {fam.name: fam.next_tasks() for fam in families}
    shaped = torch.zeros(2 * pairs)
    out = {}
    for fam in families:
        fitness = torch.empty(2 * pairs)
        for j in range(2 * pairs):
            sign = 1.0 if j % 2 == 0 else -1.0
            torch.nn.utils.vector_to_parameters(theta + sign * sigma * eps[j // 2], probe.parameters())
            # common random numbers: every perturbation plays the same tasks with the same seeds
            fitness[j] = fam.play(make_learner(fam.train_env, probe, **learner_cfg), tasks[fam.name], "es", step).mean()
        shaped += centred_ranks(fitness) / len(families)
        out[f"{fam.name}/trial_return"] = fitness.mean().item()
    diff = shaped[0::2] - shaped[1::2]
    grad = (diff[:, None] * eps).sum(0) / (2 * pairs * sigma)
    offset = 0
    for p in params:  # the optimiser descends, so the grads are the negated ascent direction
        n = p.numel()
        p.grad = -grad[offset: offset + n].view_as(p).clone()
        offset += n
    return out


def meta_train(cfg: DictConfig) -> dict[str, float]:
    """Run meta-training as configured; returns the best tuning score and where the files are."""
    torch.set_num_threads(int(cfg.threads))
    torch.manual_seed(int(cfg.seed))
    claimed = Path(hydra.core.hydra_config.HydraConfig.get().run.dir)
    run_dir = Path(cfg.resume) if cfg.resume else claimed
    if cfg.resume:
        if not (run_dir / "state.pt").is_file():
            raise FileNotFoundError(f"resume={str(run_dir)!r}: no state.pt there (not a meta-training run directory)")
        remove_if_stub(claimed)
    run_dir.mkdir(parents=True, exist_ok=True)
    opt_cfg = cfg.meta_optimizer
    if opt_cfg.name not in ("gradient", "es"):
        raise ValueError(f"meta_optimizer.name={opt_cfg.name!r} is unknown; choose gradient or es")
    learner_cfg = OmegaConf.to_container(cfg.learner)
    objective = LearnedObjective(int(cfg.objective.hidden_size))
    optimizer = torch.optim.Adam(objective.parameters(), lr=float(opt_cfg.lr))
    generator = torch.Generator().manual_seed(int(cfg.seed))
    families = [Family(name, hydra.utils.instantiate(node), int(cfg.num_envs), int(cfg.eval_tasks), int(cfg.seed))
                for name, node in cfg.split.train.items()]
    state = {"iteration": 0, "frames": 0, "seconds": 0.0, "best": -math.inf}
    if cfg.resume:
        state = resume(run_dir, objective, optimizer, generator, families)
        say(f"resumed {run_dir} at iteration {state['iteration']}")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    say(f"run directory: {run_dir}")
    writer = _tensorboard(run_dir / "tb")
    info = {"split": cfg.split.name, "meta_optimizer": opt_cfg.name}
    frames_per_iteration = int(cfg.num_envs) * sum(f.frames_per_trial for f in families)
    if opt_cfg.name == "es":
        frames_per_iteration *= 2 * int(opt_cfg.pairs)
    start, last_eval = time.perf_counter() - state["seconds"], -math.inf
    budget = float(cfg.max_minutes) * 60 if cfg.max_minutes is not None else math.inf
    try:
        while True:
            seconds = time.perf_counter() - start
            done = seconds >= budget or (cfg.max_iterations is not None and state["iteration"] >= int(cfg.max_iterations))
            if done or seconds - last_eval >= float(cfg.eval_every_s):
                last_eval = seconds
                row = evaluate_tuning(families, objective, learner_cfg, state, seconds)
                _log(run_dir, writer, row)
                info.update(iterations=state["iteration"], frames=state["frames"], seconds=seconds, tuning=row["tuning/gap"])
                save_objective(run_dir / "objective_last.pt", objective, **info)
                if row["tuning/gap"] > state["best"]:
                    state["best"] = row["tuning/gap"]
                    save_objective(run_dir / "objective_best.pt", objective, **info)
                state["seconds"] = seconds
                save_state(run_dir, objective, optimizer, generator, families, state)
                say(f"iteration {state['iteration']}, {state['frames'] / 1e6:.2f}M frames, {seconds / 60:.1f} min: "
                    + ", ".join(f"{k.split('/')[0]} {v:.3f}" for k, v in row.items() if k.endswith("/gap")))
            if done:
                break
            optimizer.zero_grad()
            if opt_cfg.name == "gradient":
                stats = gradient_iteration(families, objective, learner_cfg, state["iteration"])
                if opt_cfg.clip is not None:
                    stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(objective.parameters(), float(opt_cfg.clip)))
            else:
                stats = es_iteration(families, objective, learner_cfg, state["iteration"], float(opt_cfg.sigma),
                                     int(opt_cfg.pairs), generator)
            optimizer.step()
            state["iteration"] += 1
            state["frames"] += frames_per_iteration
            for key, value in stats.items():
                writer.add_scalar(f"train/{key}", value, state["frames"])
    finally:
        writer.close()
        for fam in families:
            fam.close()
    say(f"best tuning gap closed {state['best']:.3f}; objective: {run_dir / 'objective_best.pt'}")
    return {"best": state["best"], "run_dir": str(run_dir)}


def evaluate_tuning(families: list[Family], objective, learner_cfg: dict, state: dict, seconds: float) -> dict:
    """The tuning-set row of the curve: each family's trial return and gap closed, and their mean gap."""
    row = {"iteration": state["iteration"], "frames": state["frames"], "seconds": seconds}
    gaps = []
    for fam in families:
        mean, gap = fam.tuning_score(objective, learner_cfg)
        row[f"{fam.name}/trial_return"], row[f"{fam.name}/gap"] = mean, gap
        gaps.append(gap)
    row["tuning/gap"] = sum(gaps) / len(gaps)
    return row


def _log(run_dir: Path, writer, row: dict) -> None:
    path = run_dir / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as f:
        out = csv.DictWriter(f, fieldnames=list(row))
        if new:
            out.writeheader()
        out.writerow(row)
    for key, value in row.items():
        if "/" in key:
            writer.add_scalar(f"tuning/{key}" if not key.startswith("tuning") else key, value, row["frames"])


def _tensorboard(path: Path):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(path))


def save_state(run_dir: Path, objective, optimizer, generator, families: list[Family], state: dict) -> None:
    """Everything a resumed run needs, as plain data (read back with ``weights_only=True``)."""
    from rl2_lightning.checkpoints import write_atomically

    record = {
        "objective": objective.state_dict(), "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
        "torch": torch.get_rng_state(), "streams": {f.name: f.stream.generator.get_state() for f in families}, **state,
    }
    buffer = io.BytesIO()
    torch.save(record, buffer)
    write_atomically(run_dir / "state.pt", buffer.getvalue())


def resume(run_dir: Path, objective, optimizer, generator, families: list[Family]) -> dict:
    """Restore :func:`save_state`; returns the counters."""
    from rl2_lightning.checkpoints import load_bytes, read_verified

    what = f"resume={str(run_dir)!r}"
    record = load_bytes(read_verified(run_dir / "state.pt", what), what)
    objective.load_state_dict(record["objective"])
    optimizer.load_state_dict(record["optimizer"])
    generator.set_state(record["generator"])
    torch.set_rng_state(record["torch"])
    for fam in families:
        fam.stream.generator.set_state(record["streams"][fam.name])
    return {k: record[k] for k in ("iteration", "frames", "seconds", "best")}


def main() -> None:
    """``rl2-metagenrl [split=...] [meta_optimizer=gradient|es] [key=value ...]``."""
    import sys

    from rl2_lightning.cli import _with_cwd_on_path
    from rl2_lightning.config import CONF_DIR
    from rl2_lightning.errors import one_line_errors
    from rl2_lightning.runs import register_resolvers

    _with_cwd_on_path()
    register_resolvers()

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="metagenrl")
    def run(cfg: DictConfig) -> float:
        with one_line_errors():
            return meta_train(cfg)["best"]

    with one_line_errors():
        sys.exit(run())


if __name__ == "__main__":
    main()
