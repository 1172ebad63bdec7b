"""End-to-end training throughput against a bare-PyTorch bound, measured in the same run.

    python benchmarks/train_throughput.py [--preset bandit_k10_n100] [--iterations 6] [--threads 2]
        [--shapes preset bay3s]
    python benchmarks/train_throughput.py --rl3 [--preset tabular_n10_rl3] [--envs 256 2500]

End to end: ``rl2_lightning.train.train`` on the preset (GRU 256), environment frames per second of
wall-clock time over whole iterations (collection + GAE + PPO epochs), first iteration excluded.

Bound: the same arithmetic in plain PyTorch with no TorchRL, Lightning or environment: step-by-step
GRU inference of the actor over every step of the batch (what collection must do at least), one
critic pass over the trials (advantages), and ``epochs x minibatches`` forward+backward passes of
actor and critic over whole trials with Adam steps. The ratio end-to-end / bound is what the
framework, the environments and the glue cost.

``--rl3``: the share of an RL³ iteration spent on the inner estimates (counts, empirical model and
finite-horizon value iteration, :mod:`rl2_lightning.envs.inner`): the seconds a whole-trial rollout of the
preset's env takes with the estimates minus without them (same random actions), against the seconds of a
whole end-to-end training iteration at that batch size, both measured in this run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


class BareNet(nn.Module):
    """Encoder + GRU + head with the shapes of one RL² network."""

    def __init__(self, in_size: int, embed: int, hidden: int, out: int, layer_norm: bool = False):
        super().__init__()
        self.embed, self.gru, self.head = nn.Linear(in_size, embed), nn.GRU(embed, hidden, batch_first=True), nn.Linear(hidden, out)
        self.norm_in = nn.LayerNorm(embed) if layer_norm else nn.Identity()
        self.norm_out = nn.LayerNorm(hidden) if layer_norm else nn.Identity()

    def forward(self, x, h=None):  # noqa: D102
        y, h = self.gru(self.norm_in(torch.relu(self.embed(x))), h)
        return self.head(self.norm_out(y)), h


def bare_iteration(num_trials, trial_len, in_size, num_actions, hidden, epochs, minibatches, nets, opt) -> float:
    """Seconds of one iteration's arithmetic in plain PyTorch."""
    actor, critic = nets
    t0 = time.perf_counter()
    with torch.no_grad():  # collection: one GRU step per env step
        x = torch.zeros(num_trials, 1, in_size)
        h = None
        inputs = []
        for _ in range(trial_len):
            logits, h = actor(x, h)
            a = torch.distributions.Categorical(logits=logits[:, 0]).sample()
            x = torch.zeros(num_trials, 1, in_size)
            x[torch.arange(num_trials), 0, a + 1] = 1.0
            inputs.append(x)
        data = torch.cat(inputs, 1)
        critic(data)  # advantages: one critic pass over the whole trials
    for _ in range(epochs):
        for idx in torch.tensor_split(torch.randperm(num_trials), minibatches):
            mb = data[idx]
            logits, _ = actor(mb)
            values, _ = critic(mb)
            loss = -torch.log_softmax(logits, -1)[..., 0].mean() + values.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def measure_bare(cfg, iterations: int) -> float:
    n, k = cfg.env.num_envs, cfg.env.simulator.num_arms
    trial_len = cfg.env.episodes_per_trial * (cfg.env.simulator.get("episode_steps") or 1)
    in_size = 1 + k + 2
    hidden, embed = cfg.model.hidden_size, cfg.model.embed_size
    ln = cfg.model.layer_norm
    nets = (BareNet(in_size, embed, hidden, k, ln), BareNet(in_size, embed, hidden, 1, ln))
    opt = torch.optim.Adam([*nets[0].parameters(), *nets[1].parameters()], lr=1e-4)
    times = [
        bare_iteration(n, trial_len, in_size, k, hidden, cfg.algo.epochs, cfg.algo.minibatches, nets, opt)
        for _ in range(iterations)
    ]
    return n * trial_len / (sum(times[1:]) / len(times[1:]))


def measure_end_to_end(cfg, iterations: int) -> float:
    import lightning as L

    from rl2_lightning.train import train

    class Clock(L.Callback):
        stamps: list[float] = []

        def on_train_batch_end(self, *args, **kwargs):
            self.stamps.append(time.perf_counter())

    clock = Clock()
    train(cfg, extra_callbacks=[clock])
    gaps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:])]
    frames = cfg.env.num_envs * cfg.env.episodes_per_trial * (cfg.env.simulator.get("episode_steps") or 1)
    return frames / (sum(gaps) / len(gaps))


#: equal-work rows: the preset as shipped, and bay3s/rl-squared's bandit configuration (2500 trials x 100
#: steps per iteration, 10 PPO epochs x 50 minibatches, GRU-256 actor and critic)
SHAPES = {
    "preset": [],
    "bay3s": ["env.num_envs=2500", "algo.epochs=10", "algo.minibatches=50", "model.hidden_size=256", "model.embed_size=256"],
}


def rollout_seconds(cfg, num_envs: int, inner: bool, repeats: int = 3) -> float:
    """Best-of-``repeats`` seconds of one whole-trial rollout with uniformly random actions."""
    from hydra.utils import instantiate

    factory = instantiate(cfg.env)
    factory.inner_estimates = inner
    env = factory.make(num_envs)
    best = float("inf")
    for _ in range(repeats):
        torch.manual_seed(0)
        t0 = time.perf_counter()
        env.rollout(env.base_env.trial_steps, break_when_any_done=False)
        best = min(best, time.perf_counter() - t0)
    env.close()
    return best


def measure_inner_share(preset: str, envs: list[int], iterations: int) -> None:
    """Print the inner estimates' seconds per iteration against a whole iteration's, per batch size."""
    from trainkit import compose_cfg

    print("| preset | trials/iteration | inner estimates s/iteration | whole iteration s | share |")
    print("|---|---|---|---|---|")
    for n in envs:
        cfg = compose_cfg(
            [f"conf={preset}", f"env.num_envs={n}", "trainer.max_epochs=1", f"trainer.limit_train_batches={iterations}",
             "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", "~logger", "callbacks.metatest=null",
             "runs_dir=/tmp/rl2_bench_runs"],
            tiny=False,
        )
        inner = rollout_seconds(cfg, n, True) - rollout_seconds(cfg, n, False)
        frames = n * cfg.env.episodes_per_trial * (cfg.env.simulator.get("episode_steps") or 1)
        whole = frames / measure_end_to_end(cfg, iterations)
        print(f"| {preset} | {n} | {inner:.3f} | {whole:.2f} | {inner / whole:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rl3", action="store_true", help="the inner estimates' share of an RL³ iteration")
    parser.add_argument("--envs", type=int, nargs="+", default=[256, 2500], help="--rl3: trials per iteration")
    parser.add_argument("--preset", default="bandit_k10_n100")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--shapes", nargs="+", default=["preset"], choices=list(SHAPES), help="rows to measure")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. env.num_envs=128")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rl3:
        preset = args.preset if args.preset.endswith("_rl3") else "tabular_n10_rl3"
        return measure_inner_share(preset, args.envs, args.iterations)
    from trainkit import compose_cfg

    rows = []
    for shape in args.shapes:
        cfg = compose_cfg(
            [
                f"conf={args.preset}",
                "trainer.max_epochs=1",
                f"trainer.limit_train_batches={args.iterations}",
                "trainer.enable_progress_bar=false",
                "trainer.accelerator=cpu",
                "~logger",
                "callbacks.metatest=null",
                "runs_dir=/tmp/rl2_bench_runs",
                *SHAPES[shape],
                *args.overrides,
            ],
            tiny=False,
        )
        if "num_arms" not in cfg.env.simulator:
            sys.exit(f"error: the bare-PyTorch bound is written for bandit presets; {args.preset} is not one "
                     "(--rl3 measures the MDPs' inner estimates)")
        bound = measure_bare(cfg, args.iterations)
        e2e = measure_end_to_end(cfg, args.iterations)
        frames = cfg.env.num_envs * cfg.env.episodes_per_trial * (cfg.env.simulator.get("episode_steps") or 1)
        ppo = f"{cfg.algo.epochs}x{cfg.algo.minibatches}, GRU {cfg.model.hidden_size}"
        rows.append(f"| {args.preset} ({shape}: {ppo}) | {frames} | {args.threads} | {e2e:,.0f} | {bound:,.0f} | {e2e / bound:.0%} |")
    print("| preset (shape) | frames/iteration | threads | end-to-end steps/s | bare PyTorch bound steps/s | ratio |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
