"""End-to-end training throughput against a bare-PyTorch bound, measured in the same run.

    python benchmarks/train_throughput.py [--preset bandit_k10_n100] [--iterations 6] [--threads 2]
        [--shapes preset bay3s] [--precision bf16-mixed]
    python benchmarks/train_throughput.py --preset tabular_n10 --shapes authors authors_mb500 authors_shared
        --iterations 2 --threads 1
    python benchmarks/train_throughput.py --rl3 [--preset tabular_n10_rl3] [--envs 256 2500]
    python benchmarks/train_throughput.py --preset tabular_n10 --shapes authors --device cuda --iterations 3

End to end: ``rl2_lightning.train.train`` on the preset (GRU 256), environment frames per second of
wall-clock time over whole iterations (collection + GAE + PPO epochs), first iteration excluded.

Bound: the same arithmetic in plain PyTorch with no TorchRL, Lightning or environment: step-by-step
GRU inference of the actor over every step of the batch (what collection must do at least), one
critic pass over the trials (advantages), and ``epochs x minibatches`` forward+backward passes of
actor and critic over whole trials with Adam steps (one trunk with two heads when the shape shares
it). The ratio end-to-end / bound is what the framework, the environments and the glue cost. Each row
also splits both sides into collection, advantages and PPO epochs, so that the profile says where the
iteration's time goes.

``--precision bf16-mixed`` runs both sides under bf16 autocast (``trainer.precision`` end to end,
``torch.autocast`` in the bound): the cost of lower precision on this CPU, against an fp32 row measured in
the same run when ``--precision`` lists both (``--precision 32-true bf16-mixed``).

The ``authors`` shapes are the paper's MDP recipe (``recipe=authors``: 2500 trials x 100 steps, 5 epochs
x 20 minibatches of 125 trials, GRU-256 actor and critic) with its KL guard off, so that every epoch runs
on both sides; ``authors_mb500`` uses 500-trial minibatches (5 x 5), ``authors_shared`` one trunk.

``--device cuda`` runs both sides on one GPU (``trainer.accelerator=gpu``), timing after a synchronisation.

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
        self.value = None

    def features(self, x, h=None):  # noqa: D102
        y, h = self.gru(self.norm_in(torch.relu(self.embed(x))), h)
        return self.norm_out(y), h

    def forward(self, x, h=None):  # noqa: D102
        y, h = self.features(x, h)
        return self.head(y), h


class SharedPair:
    """Actor and critic as one trunk with two heads: the critic's pass reuses the actor's features."""

    def __init__(self, net: BareNet, hidden: int):
        self.net, self.value = net, nn.Linear(hidden, 1)

    def parameters(self):  # noqa: D102
        return [*self.net.parameters(), *self.value.parameters()]


def synced_now(device: torch.device) -> float:
    """Seconds now, once the device has finished the work queued on it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def bare_iteration(num_trials, trial_len, in_size, hidden, epochs, minibatches, nets, opt, bf16=False,
                   device=torch.device("cpu")) -> dict:
    """Seconds of one iteration's arithmetic in plain PyTorch, by part."""
    actor, critic = nets
    shared = isinstance(critic, SharedPair)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)
    t0 = synced_now(device)
    with torch.no_grad(), autocast:  # collection: one GRU step per env step
        x = torch.zeros(num_trials, 1, in_size, device=device)
        h = None
        inputs = []
        for _ in range(trial_len):
            logits, h = actor(x, h)
            a = torch.distributions.Categorical(logits=logits[:, 0].float()).sample()
            x = torch.zeros(num_trials, 1, in_size, device=device)
            x[torch.arange(num_trials, device=device), 0, a + 1] = 1.0
            inputs.append(x)
        data = torch.cat(inputs, 1)
    t1 = synced_now(device)
    with torch.no_grad(), autocast:  # advantages: one critic pass over the whole trials
        critic.value(critic.net.features(data)[0]) if shared else critic(data)
    t2 = synced_now(device)
    for _ in range(epochs):
        for idx in torch.tensor_split(torch.randperm(num_trials, device=device), minibatches):
            mb = data[idx]
            with autocast:
                if shared:
                    y, _ = actor.features(mb)
                    logits, values = actor.head(y), critic.value(y)
                else:
                    logits, _ = actor(mb)
                    values, _ = critic(mb)
                loss = -torch.log_softmax(logits.float(), -1)[..., 0].mean() + values.float().pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    t3 = synced_now(device)
    return {"collection": t1 - t0, "advantages": t2 - t1, "epochs": t3 - t2, "total": t3 - t0}


def trial_steps(cfg) -> int:
    """Steps of one trial of the config's env."""
    return cfg.env.episodes_per_trial * (cfg.env.simulator.get("episode_steps") or 1)


def bench_cfg(preset: str, iterations: int, *overrides: str, device: str = "cpu"):
    """The preset for ``iterations`` timed iterations on one device (``cpu`` or ``cuda``): no logger,
    meta-test or progress bar."""
    from trainkit import compose_cfg

    accelerator = "gpu" if device == "cuda" else "cpu"
    return compose_cfg(
        [f"conf={preset}", "trainer.max_epochs=1", f"trainer.limit_train_batches={iterations}",
         "trainer.enable_progress_bar=false", f"trainer.accelerator={accelerator}", "trainer.devices=1", "~logger",
         "callbacks.metatest=null",
         "runs_dir=/tmp/rl2_bench_runs", *overrides],
        tiny=False,
    )


def input_sizes(cfg) -> tuple[int, int]:
    """(encoder input size, number of actions) of the preset's env, read from its specs."""
    from hydra.utils import instantiate

    env = instantiate(cfg.env).spec_env()
    obs = env.observation_spec["observation"].shape[-1]
    actions = env.action_spec.space.n
    env.close()
    return obs + actions + 2, actions


def mean_parts(parts: list[dict]) -> dict:
    """Mean seconds per part."""
    return {k: sum(p[k] for p in parts) / len(parts) for k in parts[0]}


def measure_bare(cfg, iterations: int, bf16: bool = False, device=torch.device("cpu")) -> dict:
    n, trial_len = cfg.env.num_envs, trial_steps(cfg)
    in_size, k = input_sizes(cfg)
    hidden, embed = cfg.model.hidden_size, cfg.model.embed_size
    ln = cfg.model.layer_norm
    actor = BareNet(in_size, embed, hidden, k, ln)
    critic = SharedPair(actor, hidden) if cfg.model.shared_trunk else BareNet(in_size, embed, hidden, 1, ln)
    actor.to(device)
    if cfg.model.shared_trunk:
        critic.value.to(device)
    else:
        critic.to(device)
    params = [*actor.parameters(), *critic.parameters()] if not cfg.model.shared_trunk else critic.parameters()
    opt = torch.optim.Adam(params, lr=1e-4)
    parts = [
        bare_iteration(n, trial_len, in_size, hidden, cfg.algo.epochs, cfg.algo.minibatches, (actor, critic), opt, bf16,
                       device)
        for _ in range(iterations)
    ]
    return mean_parts(parts[1:] or parts)


def measure_end_to_end(cfg, iterations: int) -> dict:
    """Mean seconds per iteration of ``rl2_lightning.train.train``, by part (first iteration excluded)."""
    import lightning as L

    from rl2_lightning.train import train

    class Clock(L.Callback):
        def __init__(self):
            self.stamps, self.parts, self.now = [], [], {}

        def on_fit_start(self, trainer, module):
            algo, device = module.algo, trainer.strategy.root_device
            for name, part in (("compute_advantages", "advantages"), ("update", "epochs")):
                inner = getattr(algo, name)

                def timed(*args, _inner=inner, _part=part, **kwargs):
                    t = synced_now(device)
                    out = _inner(*args, **kwargs)
                    self.now[_part] = synced_now(device) - t
                    return out

                setattr(algo, name, timed)

        def on_train_batch_end(self, trainer, *args, **kwargs):
            self.stamps.append(synced_now(trainer.strategy.root_device))
            self.parts.append(dict(self.now))

    clock = Clock()
    train(cfg, extra_callbacks=[clock])
    parts = []
    for (a, b), now in zip(zip(clock.stamps, clock.stamps[1:]), clock.parts[1:]):
        total = b - a
        parts.append({"collection": total - now["advantages"] - now["epochs"], **now, "total": total})
    return mean_parts(parts)  # the first gap starts after the first iteration


#: equal-work rows: the preset as shipped, and bay3s/rl-squared's bandit configuration (2500 trials x 100
#: steps per iteration, 10 PPO epochs x 50 minibatches, GRU-256 actor and critic)
SHAPES = {
    "preset": [],
    "bay3s": ["env.num_envs=2500", "algo.epochs=10", "algo.minibatches=50", "model.hidden_size=256", "model.embed_size=256"],
    "authors": ["recipe=authors", "algo.target_kl=null"],
    "authors_mb500": ["recipe=authors", "algo.target_kl=null", "algo.minibatches=5"],
    "authors_shared": ["recipe=authors", "algo.target_kl=null", "model.shared_trunk=true"],
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
    print("| preset | trials/iteration | inner estimates s/iteration | whole iteration s | share |")
    print("|---|---|---|---|---|")
    for n in envs:
        cfg = bench_cfg(preset, iterations, f"env.num_envs={n}")
        inner = rollout_seconds(cfg, n, True) - rollout_seconds(cfg, n, False)
        whole = measure_end_to_end(cfg, iterations)["total"]
        print(f"| {preset} | {n} | {inner:.3f} | {whole:.2f} | {inner / whole:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rl3", action="store_true", help="the inner estimates' share of an RL³ iteration")
    parser.add_argument("--envs", type=int, nargs="+", default=[256, 2500], help="--rl3: trials per iteration")
    parser.add_argument("--preset", default="bandit_k10_n100")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--shapes", nargs="+", default=["preset"], choices=list(SHAPES), help="rows to measure")
    parser.add_argument("--precision", nargs="+", default=["32-true"], choices=["32-true", "bf16-mixed"],
                        help="one row per shape and precision (bf16-mixed: autocast on both sides)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="where both sides run (cuda: trainer.accelerator=gpu, one device)")
    parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. env.num_envs=128")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.rl3:
        preset = args.preset if args.preset.endswith("_rl3") else "tabular_n10_rl3"
        return measure_inner_share(preset, args.envs, args.iterations)
    rows, profile = [], []
    for shape in args.shapes:
        for precision in args.precision:
            cfg = bench_cfg(args.preset, args.iterations, f"trainer.precision={precision}", *SHAPES[shape],
                            *args.overrides, device=args.device)
            bound = measure_bare(cfg, args.iterations, bf16=precision == "bf16-mixed", device=torch.device(args.device))
            e2e = measure_end_to_end(cfg, args.iterations)
            frames = cfg.env.num_envs * trial_steps(cfg)
            trunk = "shared trunk" if cfg.model.shared_trunk else "actor + critic"
            name = (f"{args.preset} ({shape}: {cfg.algo.epochs}x{cfg.algo.minibatches}, GRU {cfg.model.hidden_size}, "
                    f"{trunk}, {precision}, {args.device})")
            rows.append(f"| {name} | {frames} | {args.threads} | {frames / e2e['total']:,.0f} | "
                        f"{frames / bound['total']:,.0f} | {bound['total'] / e2e['total']:.0%} |")
            profile.append(f"| {name} | " + " | ".join(
                f"{e2e[k]:.1f} / {bound[k]:.1f}" for k in ("collection", "advantages", "epochs", "total")) + " |")
    print("| preset (shape) | frames/iteration | threads | end-to-end steps/s | bare PyTorch bound steps/s | ratio |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| preset (shape) | collection s (end to end / bound) | advantages s | PPO epochs s | iteration s |")
    print("|---|---|---|---|---|")
    print("\n".join(profile))


if __name__ == "__main__":
    main()
