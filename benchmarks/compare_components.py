"""Swapped components at equal frames: one preset trained with each algorithm or memory, the same batches.

    python benchmarks/compare_components.py conf=tabular_n10 --variants algo=ppo algo=trpo \\
        --epochs 8 --out docs/img/compare_tabular_n10_algo [key=value ...]
    python benchmarks/compare_components.py conf=tabular_n10 --variants model=gru model=lstm model=transformer model=mlp ...

Each variant is the preset plus that override (several overrides per variant: join them with commas,
``"algo=trpo,algo.max_kl=0.02"``), trained for ``--epochs`` epochs (so every variant sees the same
frames: the batch layout comes from the preset) with one torch thread, meta-tested on 1000 **held-out**
tasks every ``--every-epochs`` epochs with the classical baselines played once. This is a report, not a
search: nothing here chooses hyperparameters. Prints one row per variant (final return ± 95% CI, frames,
training seconds without the meta-tests, frames per second) and writes ``compare.csv`` and
``compare.png`` (held-out return against frames, baselines as lines) into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_curve(path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``metatest.csv`` as floats."""
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def experiment_name(variant: str) -> str:
    """The run's experiment name for a variant (``algo=trpo,algo.max_kl=0.02`` -> ``compare_algo-trpo_algo.max_kl-0.02``)."""
    return f"compare_{variant.replace('=', '-').replace(',', '_')}"


def from_run(variant: str, runs_dir: Path) -> dict:
    """A finished variant's result from its newest run directory (``--replot``): the meta-test curve and
    the baselines TensorBoard recorded."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = sorted((runs_dir / experiment_name(variant)).iterdir())[-1]
    rows = read_curve(run / "metatest.csv")
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    prefix = "meta_test/baselines/"
    baselines = {tag[len(prefix):]: events.Scalars(tag)[0].value for tag in events.Tags()["scalars"] if tag.startswith(prefix)}
    last = rows[-1]
    return {"variant": variant, "curve": rows, "baselines": baselines, "final": last["trial_return"],
            "ci95": last["trial_return_ci95"], "frames": int(last["frames"]), "train_s": last["train_s"],
            "wall_s": last["wall_s"], "fps": last["frames"] / last["train_s"]}


def run_variant(base: list[str], variant: str, epochs: int, every: int, runs_dir: Path) -> dict:
    """Train one variant; its curve, final score, frames and timings."""
    from rl2_lightning.config import compose
    from rl2_lightning.train import train

    overrides = [*base, *variant.split(","), f"trainer.max_epochs={epochs}", f"runs_dir={runs_dir}",
                 f"experiment={experiment_name(variant)}",
                 "callbacks.metatest.task_set=heldout", f"callbacks.metatest.every_n_epochs={every}",
                 "trainer.enable_progress_bar=false", "threads=1"]
    start = time.perf_counter()
    out = train(compose(overrides))
    wall = time.perf_counter() - start
    rows = read_curve(Path(out["run_dir"]) / "metatest.csv")
    callback = next(c for c in out["trainer"].callbacks if hasattr(c, "baseline_curves"))
    last = rows[-1]
    return {
        "variant": variant, "curve": rows,
        "baselines": {k: float(c.sum()) for k, c in callback.baseline_curves.items()},
        "final": last["trial_return"], "ci95": last["trial_return_ci95"], "frames": int(last["frames"]),
        "train_s": last["train_s"], "wall_s": wall, "fps": last["frames"] / last["train_s"],
    }


def plot(results: list[dict], title: str, path: Path) -> None:
    """Held-out return against frames per variant (95% bands), the strongest baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rl2_lightning.baselines.registry import display_name

    fig, ax = plt.subplots(figsize=(6.4, 4))
    for i, r in enumerate(results):
        x = [c["frames"] / 1e6 for c in r["curve"]]
        y = [c["trial_return"] for c in r["curve"]]
        ci = [c["trial_return_ci95"] for c in r["curve"]]
        ax.plot(x, y, marker=".", color=f"C{i}", label=f"{r['variant']}: {r['final']:.3g}")
        ax.fill_between(x, [a - b for a, b in zip(y, ci)], [a + b for a, b in zip(y, ci)], color=f"C{i}", alpha=0.15)
    scores = {display_name(k): v for k, v in results[0]["baselines"].items()}
    for j, (name, score) in enumerate(sorted(scores.items(), key=lambda kv: -kv[1])[:2]):
        ax.axhline(score, linestyle="--", linewidth=1, color="gray" if j else "k", label=f"{name} {score:.3g}")
    if "Random" in scores:
        ax.axhline(scores["Random"], linestyle=":", linewidth=1, color="gray", label=f"Random {scores['Random']:.3g}")
    ax.set_xlabel("environment frames (millions)")
    ax.set_ylabel("held-out mean total reward per trial")
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small", loc="upper left", ncol=2, framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run every variant in turn; returns their result rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", required=True, help="one override (or comma-joined overrides) per variant")
    parser.add_argument("--epochs", type=int, required=True, help="epochs per variant (equal frames)")
    parser.add_argument("--every-epochs", type=int, default=1)
    parser.add_argument("--out", required=True)
    parser.add_argument("--runs-dir", default="runs/compare")
    parser.add_argument("--replot", action="store_true", help="redraw from the variants' finished runs, training nothing")
    args, base = parser.parse_known_args(argv)
    import torch

    torch.set_num_threads(1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        results = [from_run(v, Path(args.runs_dir)) for v in args.variants]
    else:
        results = [run_variant(base, v, args.epochs, args.every_epochs, Path(args.runs_dir)) for v in args.variants]
    preset = next((b.split("=", 1)[1] for b in base if b.startswith("conf=")), "bandit_k5_n10")
    print(f"\n{preset}: {args.epochs} epochs each, meta-test on 1000 held-out tasks")
    print("| variant | final (95% CI) | frames | training s | frames/s |\n|---|---|---|---|---|")
    for r in results:
        print(f"| {r['variant']} | {r['final']:.2f} ± {r['ci95']:.2f} | {r['frames']:,} | {r['train_s']:.0f} | {r['fps']:,.0f} |")
    with (out / "compare.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["variant", "final", "ci95", "frames", "train_s", "wall_s", "fps"])
        for r in results:
            writer.writerow([r[k] for k in ("variant", "final", "ci95", "frames", "train_s", "wall_s", "fps")])
    plot(results, f"{preset}: held-out return at equal frames", out / "compare.png")
    print(f"wrote {out / 'compare.png'} and {out / 'compare.csv'}")
    return results


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
