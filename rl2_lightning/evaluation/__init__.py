"""Evaluation: scoring (:mod:`.scoring`), the paper's numbers (:mod:`.paper`), reporting (:mod:`.report`).

:func:`evaluate` plays RL² and the setting's baselines on a fixed task set, every method with the same
tasks, in the same order, and the same dynamics noise (common random numbers), and returns one row per
method; the command (``python -m rl2_lightning.evaluate``) and ``docs/results.md`` are built on it, and
the meta-test callback scores with the same :mod:`.scoring` functions.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from rl2_lightning.envs import TrialEnvFactory
from rl2_lightning.evaluation import report
from rl2_lightning.evaluation.paper import PAPER_RESULTS
from rl2_lightning.evaluation.scoring import mean_ci95, score_on_tasks, seeded


def policy_key(env) -> str:
    """``rl3`` for an env with RL³'s inner estimates, else ``rl2`` (a config node or a
    :class:`TrialEnvFactory`): the row's name and its seed, so that every scorer (the evaluate command,
    ``pretrained score``, the meta-test callback, docs/results.md) plays one policy with the same numbers."""
    inner = env.get("inner_estimates", False) if hasattr(env, "get") else getattr(env, "inner_estimates", False)
    return "rl3" if inner else "rl2"


def setting_policies(env: TrialEnvFactory, episodes_per_trial: int, baselines: bool = True) -> dict[str, object]:
    """The comparison policies of a setting: the paper's tuned baselines where the family has them
    (bandits, tabular MDPs), else a uniformly random policy."""
    from rl2_lightning.baselines.common import RandomPolicy
    from rl2_lightning.baselines.registry import baseline_policies, baseline_setting

    if not baselines:
        return {}
    kwargs = baseline_setting(env.simulator)
    if kwargs is not None:
        return baseline_policies(kwargs, episodes_per_trial)
    num_actions = getattr(env.simulator_class, "num_actions", None)
    num_actions = num_actions if isinstance(num_actions, int) else None
    return {"random": lambda: RandomPolicy(num_actions or _num_actions(env))}


def _num_actions(env: TrialEnvFactory) -> int:
    spec = env.spec_env()
    try:
        return spec.simulator.num_actions
    finally:
        spec.close()


def evaluate(
    env: TrialEnvFactory,
    policies: dict[str, object] | None = None,
    out_dir: str | Path | None = None,
    *,
    agent=None,
    baselines: bool = True,
    task_set: str = "heldout",
    num_tasks: int | None = None,
    batch_size: int | None = None,
    episodes_per_trial: int | None = None,
    seed: int = 0,
    verbose: bool = True,
) -> list[dict]:
    """Score the extra ``policies`` (e.g. ``{"rl2": actor}``) and the setting's baselines on a task set.

    Args:
        env: the setting's env component.
        policies: extra policies by key (``"rl2"`` gets the paper's RL² number beside it); a value may be
            a policy (``policy(td) -> td`` writing ``action``) or a zero-argument factory of one.
        out_dir: where ``<setting>.md``, ``.csv`` and ``.png`` go (mazes: also ``trial_<key>.gif`` and
            ``trial_<key>_paths.png``); nothing is written when ``None``.
        agent: the agent behind the extra policies (its memory's primers are attached to the env).
        num_tasks: tasks of the set to play (default: all); batch_size: trials at once (default: all).
        episodes_per_trial: default: the setting's.
        seed: seeds the policies' randomness and the dynamics (the same for every method).

    Returns:
        one row per method: ``key``, ``method``, ``mean``, ``ci95`` (total reward per trial), ``paper``,
        ``vs_paper``, ``best``, ``seconds``, ``per_episode`` (mean reward per episode index), plus the
        family's own metrics (mazes: Table 3's columns).
    """
    from rl2_lightning.baselines.registry import display_name

    n = episodes_per_trial or env.episodes_per_trial
    probe = env.make(1, task_set=task_set, episodes_per_trial=n)
    tasks = probe.base_env.task_source.tasks
    sim_cls = env.simulator_class
    setting = probe.base_env.simulator.setting(n)
    size = getattr(probe.base_env.simulator, "size", None)
    probe.close()
    if num_tasks is not None and num_tasks > len(tasks):
        raise ValueError(f"callbacks.metatest.num_tasks={num_tasks} is not allowed; the {task_set} set holds {len(tasks)} tasks")
    if out_dir is not None:
        _check_writable(Path(out_dir))
    tasks = tasks[: num_tasks or len(tasks)]
    batch = min(batch_size or len(tasks), len(tasks))
    play = env.make(batch, task_set=task_set, episodes_per_trial=n)
    if agent is not None:
        play = agent.attach_to(play)
    todo = {**setting_policies(env, n, baselines), **(policies or {})}
    paper = PAPER_RESULTS.get(setting, {})
    rows, media = [], {}
    try:
        for i, key in enumerate(todo, 1):
            policy, start = todo[key], time.perf_counter()
            if verbose:  # progress: a long evaluation says what it is playing, method by method
                print(f"[{i}/{len(todo)}] {display_name(key)} on {len(tasks)} {task_set} tasks ...", end=" ",
                      file=sys.stderr, flush=True)
            if _is_factory(policy):
                policy = policy()
            returns, steps = score_on_tasks(play, policy, tasks, key=key, seed=seed, task_set=task_set)
            mean, ci = mean_ci95(returns.sum(-1))
            row = {
                "key": key, "method": display_name(key), "mean": mean, "ci95": ci,
                "paper": paper.get(key), "vs_paper": report.vs_paper(mean, ci, paper.get(key)),
                **play.base_env.simulator.trial_metrics(steps, n),
                "seconds": time.perf_counter() - start, "per_episode": returns.double().mean(0).tolist(),
                "per_episode_ci95": (1.96 * returns.double().std(0) / len(returns) ** 0.5).tolist(),
            }
            rows.append(row)
            if verbose:
                print(f"{mean:.2f} ± {ci:.2f} ({row['seconds']:.1f} s)", file=sys.stderr, flush=True)
            if out_dir is not None and hasattr(sim_cls, "positions"):
                media[key] = _record(env, agent if key in (policies or {}) else None, policy, tasks, n, seed, key,
                                     Path(out_dir) / f"trial_{key}")
    finally:
        play.close()
    best = max(r["mean"] for r in rows)
    for r in rows:
        r["best"] = r["mean"] == best
    text = report.table(rows, setting, size=size, num_tasks=len(tasks))
    if verbose:
        print(f"\n{setting} ({len(tasks)} {task_set} tasks, {n} episodes per trial)\n{text}")
        for key, paths in media.items():
            print(f"{display_name(key)}: {' '.join(map(str, paths))}")
    if out_dir is not None:
        report.write_outputs(rows, setting, Path(out_dir), text, size)
        if verbose:
            print(f"wrote {Path(out_dir) / setting}.md, .csv, _per_episode.csv and .png")
    return rows


def _check_writable(out_dir: Path) -> None:
    """Fail before any work, in one line naming ``out=``, if the results could not be written."""
    import tempfile

    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as err:
        raise OSError(f"out={str(out_dir)!r}: cannot write there ({err.strerror or err})") from None


def _record(env: TrialEnvFactory, agent, policy, tasks, n: int, seed: int, key: str, stem: Path):
    """The first task played by ``policy`` with one env: its GIF and paths image (mazes)."""
    from rl2_lightning.envs.maze.render import record_trial, save_trial_media

    one = env.make(1, task_set="heldout", episodes_per_trial=n)
    try:
        if agent is not None:
            one = agent.attach_to(one)
        one.base_env.use_tasks(tasks[:1])
        with seeded(one, key, seed, "heldout"), set_exploration_type(ExplorationType.RANDOM):
            trial = record_trial(one, policy)
        return save_trial_media(trial["layout"], trial["observation"], trial["position"], trial["episode_index"], stem)
    finally:
        one.close()


def _is_factory(obj) -> bool:
    """A zero-argument callable that is not itself a policy (a policy takes the step's TensorDict)."""
    import inspect

    if isinstance(obj, torch.nn.Module) or callable(getattr(obj, "forward", None)):
        return False
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(p.default is not inspect.Parameter.empty for p in params)
