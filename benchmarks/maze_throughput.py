"""Maze stepping and training rates: raw ``DoomGame``, the simulator, the collectors, and a training
iteration split by where its time goes, against the bare-PyTorch bound of its network, in one run.

    python benchmarks/maze_throughput.py [--size 5] [--seconds 5] [--envs 1 2 8] [--workers 1 2]
        [--train-iterations 4] [--threads 2] [--recipe maze] [overrides ...]

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

Training iteration (the preset, with ``+recipe=maze`` unless ``--recipe none``): the real actor collects a
batch, the critic runs over it (advantages), PPO's epochs update. The collection is split by timers
wrapped around the games (engine ``make_action``/``new_episode``; frame read: ``get_state`` and the 4x4
downsampling), the policy's forward, and the rest (TorchRL's env, transforms and collector); the split
is taken with the games stepped in turn (``threads=1``), since on threads the engines overlap. Bound: the
same network (conv encoder, action embedding, dense, GRU, heads) and batch shape in plain PyTorch —
step-by-step acting over every step of the batch, one critic pass, ``epochs x minibatches``
forward+backward passes with Adam steps — with no engine, TorchRL or Lightning. End to end:
``rl2_lightning.train.train`` on the same config, real (unpadded) frames per second of whole iterations,
the first excluded; "vs bound" divides it by the bound (the project's target: at least 60%).
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


def raw_rate(size: int, seconds: float, frame_skip: int = 4) -> float:
    sim = MazeSimulator(1, size=size)
    game = sim.games[0]
    game.set_doom_map("MAP01")
    game.new_episode()
    actions = [[True, False, False], [False, True, False], [False, False, True]]
    gen = torch.Generator().manual_seed(0)

    def step():
        game.make_action(actions[int(torch.randint(3, (1,), generator=gen))], frame_skip)
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


# ---------------------------------------------------------------------------------------- training


def training_config(size: int, recipe: str, threads: int, iterations: int, overrides: list[str]):
    from rl2_lightning.config import compose

    return compose([
        f"conf=maze_{size}x{size}", *([f"+recipe={recipe}"] if recipe != "none" else []), f"threads={threads}",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", f"trainer.limit_train_batches={iterations}",
        "trainer.enable_progress_bar=false", "~logger", "callbacks.metatest=null", "runs_dir=/tmp/rl2_bench_runs",
        *overrides,
    ])


class BareMazeNet(torch.nn.Module):
    """The maze agent's trunk and one head in plain PyTorch: the shapes of ``PixelInputEncoder`` + GRU."""

    def __init__(self, obs_shape, num_actions: int, embed: int, hidden: int, heads: tuple[int, ...]):
        from torch import nn

        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(obs_shape[0], 16, 5, stride=2), nn.ReLU(),
                                  nn.Conv2d(16, 16, 5, stride=2), nn.ReLU(), nn.Flatten())
        conv_size = self.conv(torch.zeros(1, *obs_shape)).shape[-1]
        self.action = nn.Linear(num_actions, embed)
        self.dense = nn.Linear(conv_size + embed + 2, embed)
        self.gru = nn.GRU(embed, hidden, batch_first=True)
        self.heads = nn.ModuleList(nn.Linear(hidden, h) for h in heads)

    def forward(self, obs, prev_action, extra, h=None):  # noqa: D102 - obs [B, T, C, H, W] uint8
        b, t = obs.shape[:2]
        x = self.conv(obs.reshape(b * t, *obs.shape[2:]).float() * (1 / 127.5) - 1).reshape(b, t, -1)
        x = torch.relu(self.dense(torch.cat([x, torch.relu(self.action(prev_action)), extra], -1)))
        y, h = self.gru(x, h)
        return [head(y) for head in self.heads], h


def bare_iteration(nets, opt, n: int, steps: int, obs_shape, epochs: int, minibatches: int) -> float:
    """Seconds of one iteration's arithmetic in plain PyTorch (shared trunk: one net, two heads)."""
    shared = len(nets) == 1
    t0 = time.perf_counter()
    obs = torch.randint(0, 256, (n, steps, *obs_shape), dtype=torch.uint8)
    prev = torch.zeros(n, steps, 3)
    extra = torch.zeros(n, steps, 2)
    with torch.no_grad():  # acting: one network step per env step
        h = None
        for t in range(steps):
            (logits, *_), h = nets[0](obs[:, t : t + 1], prev[:, t : t + 1], extra[:, t : t + 1], h)
            a = torch.distributions.Categorical(logits=logits[:, 0]).sample()
            if t + 1 < steps:
                prev[torch.arange(n), t + 1, a] = 1.0
        nets[-1](obs, prev, extra)  # the critic pass over whole trials (advantages)
    for _ in range(epochs):
        for idx in torch.tensor_split(torch.randperm(n), minibatches):
            if shared:
                (logits, values), _ = nets[0](obs[idx], prev[idx], extra[idx])
            else:
                (logits,), _ = nets[0](obs[idx], prev[idx], extra[idx])
                (values,), _ = nets[1](obs[idx], prev[idx], extra[idx])
            loss = -torch.log_softmax(logits, -1)[..., 0].mean() + values.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def bare_rate(cfg, iterations: int) -> float:
    """Frames per second of the bare-PyTorch iteration (every trial at its full padded length)."""
    from rl2_lightning.envs.maze.doom import MazeSimulator

    n, steps = cfg.env.num_envs, cfg.env.episodes_per_trial * (cfg.env.simulator.horizon or HORIZONS[cfg.env.simulator.size])
    obs_shape, embed, hidden = MazeSimulator.observation_shape, cfg.model.embed_size, cfg.model.hidden_size
    if cfg.model.shared_trunk:
        nets = [BareMazeNet(obs_shape, 3, embed, hidden, (3, 1))]
    else:
        nets = [BareMazeNet(obs_shape, 3, embed, hidden, (3,)), BareMazeNet(obs_shape, 3, embed, hidden, (1,))]
    opt = torch.optim.Adam([p for net in nets for p in net.parameters()], lr=1e-4)
    times = [bare_iteration(nets, opt, n, steps, obs_shape, cfg.algo.epochs, cfg.algo.minibatches) for _ in range(iterations)]
    return n * steps / (sum(times[1:]) / len(times[1:]))


def actor_collector(cfg, games_in_turn: bool = False):
    """The config's module, its trial env (with the actor's primers) and a collector of whole padded
    trials run by its actor; with ``games_in_turn`` the games are stepped in turn (``threads=1``)."""
    from omegaconf import OmegaConf
    from torchrl.collectors import Collector

    from rl2_lightning.module import RL2Module

    c = OmegaConf.to_container(cfg, resolve=True)
    if games_in_turn:
        c["env"]["simulator"]["threads"] = 1
    module = RL2Module(c["env"], c["model"], c["algo"], c.get("optimizer"), 1)
    env = module.agent.attach_to(module.env.make(module.env.num_envs, seed=0))
    steps = env.base_env.trial_steps
    collector = Collector(env, module.actor, frames_per_batch=module.env.num_envs * steps, total_frames=-1,
                          reset_at_each_iter=True, split_trajs=False, auto_register_policy_transforms=False)
    return module, env, collector, steps


def iteration_split(cfg, iterations: int) -> dict[str, float]:
    """Seconds per iteration of each part (games stepped in turn, so that the timers do not overlap),
    and the real frames per iteration."""
    import collections
    import functools

    from rl2_lightning.algos.base import UpdateContext
    from rl2_lightning.envs.maze import doom
    from rl2_lightning.module import _trim_padding

    spent: dict[str, float] = collections.defaultdict(float)

    def timer(name, fn):
        @functools.wraps(fn)
        def timed_call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - start
        return timed_call

    class TimedGame:
        """A ``DoomGame`` whose engine calls and frame reads are timed."""

        def __init__(self, game):
            self._game = game
            self.make_action = timer("engine stepping", game.make_action)
            self.new_episode = timer("engine stepping", game.new_episode)
            self.get_state = timer("frame read + downsampling", game.get_state)

        def __getattr__(self, name):
            return getattr(self._game, name)

    module, env, collector, steps = actor_collector(cfg, games_in_turn=True)
    sim = env.base_env.simulator
    sim.games = [TimedGame(g) for g in sim.games]
    downsample = doom.downsample
    doom.downsample = timer("frame read + downsampling", downsample)
    module.actor.forward = timer("policy forward", module.actor.forward)  # looked up at each call
    optimizer = module.configure_optimizers()
    optimizer = optimizer[0][0] if isinstance(optimizer, tuple) else optimizer
    batches = iter(collector)
    totals: dict[str, float] = collections.defaultdict(float)
    try:
        for k in range(iterations + 1):
            spent.clear()
            start = time.perf_counter()
            data = _trim_padding(next(batches).reshape(-1, steps))
            collect = time.perf_counter() - start
            start = time.perf_counter()
            module.algo.compute_advantages(data)
            critic = time.perf_counter() - start
            start = time.perf_counter()
            module.algo.update(data, optimizer, UpdateContext())
            update = time.perf_counter() - start
            if k == 0:
                continue  # warm-up
            parts = dict(spent)
            parts["TorchRL env + collector bookkeeping"] = collect - sum(parts.values())
            parts["critic pass (advantages)"] = critic
            parts["PPO epochs"] = update
            parts["frames"] = float(data["valid"].sum())
            for name, value in parts.items():
                totals[name] += value / iterations
    finally:
        doom.downsample = downsample
        collector.shutdown()
    return dict(totals)


def end_to_end_rate(cfg) -> tuple[float, float]:
    """``train()`` on the config: real frames per second over whole iterations (the first excluded),
    and the frames of one iteration."""
    import lightning as L

    from rl2_lightning.train import train

    class Clock(L.Callback):
        def __init__(self):
            self.stamps: list[tuple[float, int]] = []

        def on_train_batch_end(self, trainer, pl_module, *args, **kwargs):
            self.stamps.append((time.perf_counter(), int(pl_module.frames)))

    clock = Clock()
    train(cfg, extra_callbacks=[clock])
    (t0, f0), (t1, f1) = clock.stamps[0], clock.stamps[-1]
    return (f1 - f0) / (t1 - t0), (f1 - f0) / (len(clock.stamps) - 1)


def training_collection_rate(cfg, iterations: int) -> float:
    """Real frames per second of the training configuration's collection alone: the actor over the
    preset's games on their threads, whole padded trials per batch."""
    _, _, collector, _ = actor_collector(cfg)
    batches = iter(collector)
    next(batches)
    start = time.perf_counter()
    frames = sum(int(next(batches)["valid"].sum()) for _ in range(iterations))
    rate = frames / (time.perf_counter() - start)
    collector.shutdown()
    return rate


def training_rows(args, raw: float) -> None:
    cfg = training_config(args.size, args.recipe, args.threads, args.train_iterations, args.overrides)
    torch.set_num_threads(args.threads)
    collect = training_collection_rate(cfg, args.train_iterations)
    games, skip = cfg.env.num_envs, cfg.env.simulator.frame_skip
    if skip != 4:  # the raw game at the training configuration's tics per step
        torch.set_num_threads(1)
        raw = raw_rate(args.size, args.seconds, skip)
        torch.set_num_threads(args.threads)
    print(f"\n| collection, training configuration (frame skip {skip}) | games | steps/s | vs raw DoomGame at frame skip {skip} |")
    print("|---|---:|---:|---:|")
    print(f"| raw DoomGame | 1 | {raw:,.0f} | 100% |")
    print(f"| Collector(TrialEnv) + the actor, games on threads | {games} | {collect:,.0f} | {collect / raw:.0%} |")
    split = iteration_split(cfg, args.train_iterations)
    frames = split.pop("frames")
    total = sum(split.values())
    shape = (f"{cfg.env.num_envs} trials x {cfg.env.episodes_per_trial} episodes, PPO {cfg.algo.epochs}x{cfg.algo.minibatches}, "
             f"{'shared' if cfg.model.shared_trunk else 'separate'} conv+GRU {cfg.model.hidden_size}, {args.threads} torch thread(s)")
    print(f"\ntraining iteration ({shape}), games stepped in turn; {frames:,.0f} real frames per iteration\n")
    print("| part | s / iteration | share |")
    print("|---|---:|---:|")
    for name, value in split.items():
        print(f"| {name} | {value:.2f} | {value / total:.0%} |")
    print(f"| total | {total:.2f} | {frames / total:,.0f} frames/s |")
    bound = bare_rate(cfg, args.train_iterations)
    e2e, per_iteration = end_to_end_rate(cfg)
    print("\n| end to end | frames / iteration | frames/s | bare PyTorch bound frames/s | vs bound |")
    print("|---|---:|---:|---:|---:|")
    print(f"| train() (games on threads) | {per_iteration:,.0f} | {e2e:,.0f} | {bound:,.0f} | {e2e / bound:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=5, choices=[5, 9])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="collector worker processes")
    parser.add_argument("--games-per-worker", type=int, nargs="+", default=[1], help="games in each worker")
    parser.add_argument("--train-iterations", type=int, default=4, help="training iterations timed (0: no training rows)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the training rows")
    parser.add_argument("--recipe", default="maze", help="recipe of the training rows (none: the preset alone)")
    parser.add_argument("--only-training", action="store_true", help="only the training rows")
    parser.add_argument("overrides", nargs="*", help="config overrides of the training rows, e.g. env.num_envs=8")
    args = parser.parse_args()
    if args.train_iterations == 1:
        parser.error("--train-iterations must be 0 (no training rows) or at least 2: the first iteration is a warm-up")
    if args.only_training:
        torch.set_num_threads(1)
        training_rows(args, raw_rate(args.size, args.seconds))
        return
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
    if args.train_iterations > 0:
        training_rows(args, raw)


if __name__ == "__main__":
    main()
