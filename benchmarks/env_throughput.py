"""Throughput of the task environments, and the cost of the RL² trial mechanism.

For each family (bandit k=5, tabular, RiverSwim) and number of parallel envs, measures transitions
per second of

* ``simulator``: the bare batched dynamics, ``sim.step(action)`` + ``sim.observation()``;
* ``EpisodeEnv``: the plain episodic TorchRL env (a new task every episode), stepped with
  ``env.step_and_maybe_reset``;
* ``TrialEnv``: the RL² trial env exactly as ``make_trial_env`` builds it (with ``InitTracker``),
  stepped the same way.

Actions are precomputed random tensors, so no policy cost is included. Each number is the best of
``--repeats`` timed loops after a warm-up (best-of, as ``timeit`` recommends: other processes on the
machine only ever slow a loop down). ``trial/raw`` is the TrialEnv rate over the EpisodeEnv rate;
targets: at least 0.5 at 4096 envs (the trial mechanism costs at most 2x the raw env step) and at
least 10M bandit transitions/s through the TrialEnv at 4096 envs.

Torch runs one intra-op thread by default here (``--threads``): env tensors are too small to gain
from a second thread, and when another process holds a core, every op large enough to be split
(e.g. a tabular step's [4096, 10] tensors) waits milliseconds for the descheduled thread.

Usage::

    python benchmarks/env_throughput.py            # full run, Markdown table on stdout
    python benchmarks/env_throughput.py --quick    # short timing loops
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

from rl2_lightning.envs import make_simulator, make_trial_env
from rl2_lightning.envs.episode import EpisodeEnv
from rl2_lightning.envs.tasks import SampledTasks, derive_seed, excluded_tasks

FAMILIES: dict[str, dict] = {"bandit": {"num_arms": 5}, "tabular": {}, "riverswim": {}}
NUM_ACTION_ROWS = 64  # distinct precomputed action batches, cycled
TRIAL_TARGET = 0.5  # trial/raw rate at the largest num_envs
BANDIT_TARGET = 10e6  # bandit transitions/s through the TrialEnv at 4096 envs


def time_loop(step: Callable[[int], None], num_envs: int, seconds: float, repeats: int) -> float:
    """Best transitions/s over ``repeats`` loops of about ``seconds`` each, after a warm-up."""
    start = time.perf_counter()
    steps = 0
    while steps < 20 or time.perf_counter() - start < seconds / 4:  # warm-up, and calibration
        step(steps)
        steps += 1
    per_step = (time.perf_counter() - start) / steps
    n_steps = max(20, int(seconds / per_step))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n_steps):
            step(i)
        best = min(best, time.perf_counter() - start)
    return num_envs * n_steps / best


def random_actions(num_actions: int, num_envs: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(num_actions, (NUM_ACTION_ROWS, num_envs), generator=gen)


def bench_simulator(
    family: str, num_envs: int, episodes_per_trial: int, seconds: float, repeats: int
) -> float:
    env = make_trial_env(family, num_envs, episodes_per_trial, init_tracker=False, **FAMILIES[family])
    env.reset()  # installs tasks
    sim = env.simulator
    actions = random_actions(sim.num_actions, num_envs)

    def step(i: int) -> None:
        sim.step(actions[i % NUM_ACTION_ROWS])
        sim.observation()

    return time_loop(step, num_envs, seconds, repeats)


def bench_env(env, num_envs: int, seconds: float, repeats: int) -> float:
    actions = random_actions(env.action_spec.space.n, num_envs)
    state = {"td": env.reset()}

    def step(i: int) -> None:
        td = state["td"]
        td.set("action", actions[i % NUM_ACTION_ROWS])
        _, state["td"] = env.step_and_maybe_reset(td)

    return time_loop(step, num_envs, seconds, repeats)


def make_episode_env(family: str, num_envs: int) -> EpisodeEnv:
    """The plain env, with the same training task stream (held-out sets excluded) as the trial env."""
    sim = make_simulator(family, num_envs, **FAMILIES[family])
    seed = derive_seed(0, "train", "tasks", 0, 0)
    source = SampledTasks(sim.sample_tasks, seed, excluded_tasks(sim.distribution))
    sim.seed(derive_seed(0, "train", "dynamics", 0, 0))
    return EpisodeEnv(sim, source)


def human(rate: float) -> str:
    for scale, unit in ((1e6, "M"), (1e3, "k")):
        if rate >= scale:
            return f"{rate / scale:.2f}{unit}"
    return f"{rate:.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short timing loops (about 10x faster)")
    parser.add_argument("--num-envs", type=int, nargs="+", default=[1, 64, 4096])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--episodes-per-trial", type=int, default=10, help="n of the trial env")
    parser.add_argument("--seconds", type=float, default=None, help="length of one timed loop")
    parser.add_argument("--repeats", type=int, default=None, help="timed loops per number (best of)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else (0.05 if args.quick else 0.2)
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 10)
    torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()} CPU; trials of n={args.episodes_per_trial} episodes; "
        f"best of {repeats} x {seconds:g} s; "
        "transitions/s\n"
    )
    print("| family | num_envs | simulator | EpisodeEnv (raw) | TrialEnv | trial/raw |")
    print("|---|---:|---:|---:|---:|---:|")
    results = {}
    for family in args.families:
        for num_envs in args.num_envs:
            sim_rate = bench_simulator(family, num_envs, args.episodes_per_trial, seconds, repeats)
            raw_rate = bench_env(make_episode_env(family, num_envs), num_envs, seconds, repeats)
            trial_env = make_trial_env(family, num_envs, args.episodes_per_trial, **FAMILIES[family])
            trial_rate = bench_env(trial_env, num_envs, seconds, repeats)
            results[family, num_envs] = (raw_rate, trial_rate)
            print(
                f"| {family} | {num_envs} | {human(sim_rate)} | {human(raw_rate)} | {human(trial_rate)} "
                f"| {trial_rate / raw_rate:.2f} |",
                flush=True,
            )

    largest = max(args.num_envs)
    print()
    for family in args.families:
        raw_rate, trial_rate = results[family, largest]
        ok = trial_rate / raw_rate >= TRIAL_TARGET
        print(f"target trial/raw >= {TRIAL_TARGET} at {largest} envs, {family}: {'met' if ok else 'MISSED'}")
    if "bandit" in args.families and 4096 in args.num_envs:
        ok = results["bandit", 4096][1] >= BANDIT_TARGET
        print(f"target bandit TrialEnv >= {human(BANDIT_TARGET)}/s at 4096 envs: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
