"""The LayerNorm/ReLU GRU cell (``model=gru_norm_relu``) against torch's fused GRU, measured in one run.

    python benchmarks/cell_throughput.py [--device cpu|cuda] [--trials 125] [--steps 100] [--hidden 256]
        [--threads 1] [--repeats 5] [--compile inductor]

Both networks run a PPO minibatch's work: a forward pass over ``trials`` whole trials of ``steps`` steps
(``batch_first``, input size ``--input``) and its backward pass, and the acting work: ``steps`` single-step
forward passes of ``trials`` envs with no gradient. Prints the best-of-``repeats`` seconds of each and the
ratio fused / cell (1.0: the cell is as fast as the fused kernel). ``--compile BACKEND`` adds the cell with its
step compiled (``model.memory.compile``), its compile time (the first training and acting calls), and the
speed-up compiled / eager.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from train_throughput import synced_now  # noqa: E402


def best_seconds(fn, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls of ``fn`` (after one warm-up), synchronised on a GPU."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = synced_now(device)
        fn()
        best = min(best, synced_now(device) - t0)
    return best


def workloads(gru: torch.nn.Module, x: torch.Tensor, hidden: int):
    """(training pass, acting pass) closures for a batch-first GRU module ``gru``."""
    h0 = torch.zeros(1, x.shape[0], hidden, device=x.device)

    def train():
        out, _ = gru(x, h0)
        out.square().mean().backward()

    @torch.no_grad()
    def act():
        h = h0
        for t in range(x.shape[1]):
            _, h = gru(x[:, t : t + 1], h)

    return train, act


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--trials", type=int, default=125)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--input", type=int, default=256, help="the cell's input size (the embedding's)")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--compile", default=None, help="also time the cell compiled with this torch.compile backend")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from rl2_lightning.models.memory import NormReLUGRU

    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.trials, args.steps, args.input, device=device)
    nets = {
        "torch.nn.GRU (fused)": torch.nn.GRU(args.input, args.hidden, batch_first=True).to(device),
        "NormReLUGRU (model=gru_norm_relu)": NormReLUGRU(args.input, args.hidden).to(device),
    }
    if args.compile:
        compiled = NormReLUGRU(args.input, args.hidden, compile=args.compile).to(device)
        compiled.load_state_dict(nets["NormReLUGRU (model=gru_norm_relu)"].state_dict())
        nets[f"NormReLUGRU, step compiled ({args.compile})"] = compiled
    rows, first_calls = {}, {}
    for name, net in nets.items():
        train, act = workloads(net, x, args.hidden)
        t0 = synced_now(device)
        train(), act()  # the compiled cell compiles here (every network gets the same warm-up)
        first_calls[name] = synced_now(device) - t0
        rows[name] = (best_seconds(train, device, args.repeats), best_seconds(act, device, args.repeats))
    print(f"{args.trials} trials x {args.steps} steps, input {args.input}, hidden {args.hidden}, {args.device}, "
          f"{args.threads} thread(s); best of {args.repeats}")
    print("| network | forward + backward s | acting (step by step) s |")
    print("|---|---:|---:|")
    for name, (train_s, act_s) in rows.items():
        print(f"| {name} | {train_s:.3f} | {act_s:.3f} |")
    (fused_train, fused_act), (cell_train, cell_act), *more = rows.values()
    print(f"ratio fused / cell: forward + backward {fused_train / cell_train:.2f}, acting {fused_act / cell_act:.2f}")
    if more:
        (comp_train, comp_act), = more
        name = list(rows)[-1]
        print(f"ratio fused / compiled cell: forward + backward {fused_train / comp_train:.2f}, acting {fused_act / comp_act:.2f}")
        print(f"speed-up compiled / eager cell: forward + backward {cell_train / comp_train:.2f}, acting "
              f"{cell_act / comp_act:.2f}; first calls (compilation) {first_calls[name]:.1f} s")


if __name__ == "__main__":
    main()
