"""Maze stepping rate: raw ``DoomGame`` against the maze simulator and the trial env, in one run.

    python benchmarks/maze_throughput.py [--size 5] [--seconds 5] [--envs 1 2 8] [--workers 1 2]

Raw: one ``DoomGame`` on a maze map, ``make_action`` with frame skip 4 and the screen read every step,
random actions, ``new_episode`` when an episode ends. Simulator: ``MazeSimulator.step`` (adds the 40x30
downsampling, position bookkeeping and bump detection), its games stepped in turn (``threads=1``) or by
its thread pool (one thread per game up to the core count, the default). Trial env: TorchRL ``TrialEnv``
with ``InitTracker`` through ``step_and_maybe_reset``, as a collector steps it. Collectors (random
policy, whole padded trials per batch): TorchRL's ``Collector`` over one in-process trial env of E games
(the data module's default, ``env.workers=1``) and over a ``ParallelEnv`` of W worker processes with one
game each (``env.workers=W``). Rates are agent steps per second of all games together; "vs raw" divides
by the rate of the one raw game measured in the same run (the project's target: at least 80%). The
collectors run a uniform policy (one ``torch.randint`` per step): TorchRL's default random policy
(``spec.rand()``) costs 6% of a batch in ``TensorDict.from_any``, which training never pays.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tensordict.nn import TensorDictModuleBase

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rl2_lightning.envs import make_trial_env  # noqa: E402
from rl2_lightning.envs.maze.doom import HORIZONS, MazeSimulator  # noqa: E402


class UniformActions(TensorDictModuleBase):
    """A uniformly random policy over the 3 maze actions, for any batch shape (one ``torch.randint``)."""

    in_keys: list = []
    out_keys = ["action"]

    def forward(self, td):  # noqa: D102
        return td.set("action", torch.randint(3, td.batch_size, device=td.device))


def timed(step, seconds: float) -> float:
    """Calls of ``step`` per second over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n / (time.perf_counter() - start)


def raw_rate(size: int, seconds: float) -> float:
    sim = MazeSimulator(1, size=size)
    game = sim.games[0]
    game.set_doom_map("MAP01")
    game.new_episode()
    actions = [[True, False, False], [False, True, False], [False, False, True]]
    gen = torch.Generator().manual_seed(0)

    def step():
        game.make_action(actions[int(torch.randint(3, (1,), generator=gen))], 4)
        if game.is_episode_finished():
            game.new_episode()
        else:
            game.get_state().screen_buffer  # noqa: B018 - reading the frame is part of a step

    rate = timed(step, seconds)
    sim.close()
    return rate


def simulator_rate(size: int, envs: int, seconds: float, threads: int | None = None) -> float:
    sim = MazeSimulator(envs, size=size, threads=threads)
    everyone = torch.ones(envs, dtype=torch.bool)
    sim.set_tasks(sim.task_set()[:envs], everyone)
    sim.reset_episodes(everyone)
    gen = torch.Generator().manual_seed(0)

    def step():
        _, ended = sim.step(torch.randint(3, (envs,), generator=gen))
        if ended.any():
            sim.reset_episodes(ended)
        sim.observation()

    rate = timed(step, seconds) * envs
    sim.close()
    return rate


def trial_env_rate(size: int, envs: int, seconds: float) -> float:
    env = make_trial_env("maze", envs, 2, size=size)
    td = env.reset()
    gen = torch.Generator().manual_seed(0)

    def step():
        nonlocal td
        td.set("action", torch.randint(3, (envs,), generator=gen))
        _, td = env.step_and_maybe_reset(td)

    rate = timed(step, seconds) * envs
    env.close()
    return rate


def inprocess_collector_rate(size: int, envs: int, batches: int = 3) -> float:
    from torchrl.collectors import Collector

    env = make_trial_env("maze", envs, 2, size=size)
    collector = Collector(
        env, UniformActions(), frames_per_batch=envs * 2 * HORIZONS[size], total_frames=-1, reset_at_each_iter=True,
        split_trajs=False, auto_register_policy_transforms=False,
    )
    it = iter(collector)
    next(it)
    start = time.perf_counter()
    frames = sum(int(next(it)["valid"].sum()) for _ in range(batches))  # real steps, not padding
    rate = frames / (time.perf_counter() - start)
    collector.shutdown()
    return rate


def collector_rate(size: int, workers: int, games: int = 1, batches: int = 3) -> float:
    import functools

    from torchrl.collectors import Collector
    from torchrl.envs import InitTracker, ParallelEnv, TransformedEnv

    make = functools.partial(make_trial_env, "maze", games, 2, size=size, init_tracker=False)
    makers = [functools.partial(make, worker=w) for w in range(workers)]
    env = TransformedEnv(ParallelEnv(workers, makers), InitTracker())
    trial_steps = 2 * HORIZONS[size]  # padded trial length of 2 episodes
    collector = Collector(
        env, UniformActions(), frames_per_batch=workers * games * trial_steps, total_frames=-1, reset_at_each_iter=True,
        split_trajs=False, auto_register_policy_transforms=False,
    )
    it = iter(collector)
    next(it)  # warm-up: workers and engines start
    start = time.perf_counter()
    frames = sum(int(next(it)["valid"].sum()) for _ in range(batches))  # real steps, not padding
    rate = frames / (time.perf_counter() - start)
    collector.shutdown()  # closes the env too
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5, choices=[5, 9])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="collector worker processes")
    parser.add_argument("--games-per-worker", type=int, nargs="+", default=[1], help="games in each worker")
    args = parser.parse_args()
    torch.set_num_threads(1)
    raw = raw_rate(args.size, args.seconds)
    print(f"maze {args.size}x{args.size}, frame skip 4, agent steps/s (collector rows: worker processes)\n")
    print("| stepping | envs | steps/s | vs raw |")
    print("|---|---:|---:|---:|")
    print(f"| raw DoomGame | 1 | {raw:,.0f} | 100% |")
    for envs in args.envs:
        for threads, label in ((1, "in turn"), (None, "thread pool")):
            if envs == 1 and threads is None:
                continue
            sim = simulator_rate(args.size, envs, args.seconds, threads)
            print(f"| MazeSimulator, {label} | {envs} | {sim:,.0f} | {sim / raw:.0%} |")
        trial = trial_env_rate(args.size, envs, args.seconds)
        print(f"| TrialEnv + InitTracker | {envs} | {trial:,.0f} | {trial / raw:.0%} |")
        rate = inprocess_collector_rate(args.size, envs)
        print(f"| Collector(TrialEnv), in process | {envs} | {rate:,.0f} | {rate / raw:.0%} |")
    for games in args.games_per_worker:
        for workers in args.workers:
            rate = collector_rate(args.size, workers, games)
            label = f"Collector(ParallelEnv), {workers} worker(s) x {games} game(s)"
            print(f"| {label} | {workers * games} | {rate:,.0f} | {rate / raw:.0%} |")


if __name__ == "__main__":
    main()
