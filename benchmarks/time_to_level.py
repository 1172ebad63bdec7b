"""Frames and wall-clock until RL² reaches given shares of the gap from random to the best baseline.

    python benchmarks/time_to_level.py conf=bandit_k10_n100 [key=value ...] [--task-set tuning|heldout]
        [--minutes 60] [--every-epochs 1] [--out DIR]

Trains the preset as configured (any Hydra override applies; ``threads=1`` is set unless given), with
the meta-test every ``--every-epochs`` epochs on the chosen task set (``--task-set``, default ``tuning``:
recipes are chosen there; report on ``heldout``) and the classical baselines played once on the same tasks. Then
prints one table: for 50%, 80%, 90%, 95% and 100% of the gap from the random policy to the strongest
baseline (Gittins for bandits, the best tabular baseline, either prior, for MDPs), the frames and the
seconds of training until the first meta-test at or above that level. Seconds count from the start of
this script (start-up included) and leave out the meta-tests themselves (they are the measurement, not
the training). It also prints the final score with its 95% CI and writes ``time_to_level.png`` (the
curve, frames on x, the baselines as lines) and ``time_to_level.csv`` into ``--out`` (default: the run
directory). The meta-test is the training app's own callback: nothing here plays tasks itself.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

START = time.perf_counter()

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def compose(overrides: list[str]):
    """The training config for ``overrides`` (the same composition and checks as train.py)."""
    from rl2_lightning.config import compose as compose_config

    return compose_config(overrides)


def read_curve(path: Path) -> list[dict[str, float]]:
    """The rows of a run's ``metatest.csv`` as floats."""
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def strongest(curves: dict, display_name) -> tuple[str, float]:
    """The non-random baseline with the highest mean trial return: (display name, score)."""
    scores = {k: float(c.sum()) for k, c in curves.items() if k != "random"}
    best = max(scores, key=scores.get)
    return display_name(best), scores[best]


def plot(rows, levels, baselines, paper_rl2, title, path: Path) -> None:
    """Learning curve (mean and 95% band) against frames, with the baselines as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["frames"] / 1e6 for r in rows]
    y = [r["trial_return"] for r in rows]
    ci = [r["trial_return_ci95"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(x, y, marker=".", label="RL² (meta-test)", color="C0")
    ax.fill_between(x, [a - b for a, b in zip(y, ci)], [a + b for a, b in zip(y, ci)], alpha=0.2, color="C0")
    for i, (name, score) in enumerate(sorted(baselines.items(), key=lambda kv: -kv[1])):
        ax.axhline(score, linestyle="--", linewidth=1, color=f"C{i + 1}", label=f"{name} {score:.3g}")
    if paper_rl2 is not None:
        ax.axhline(paper_rl2, linestyle=":", color="k", linewidth=1, label=f"paper's RL² {paper_rl2}")
    ax.set_xlabel("environment frames (millions)")
    ax.set_ylabel("mean total reward per trial")
    ax.set_title(title, fontsize="small")
    ax.legend(fontsize="x-small", ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the benchmark; returns the level rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-set", default="tuning", choices=["tuning", "heldout"])
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock limit of the training run")
    parser.add_argument("--every-epochs", type=int, default=1, help="meta-test period in epochs (the curve's resolution)")
    parser.add_argument("--out", default=None, help="directory for the PNG and CSV (default: the run dir)")
    args, overrides = parser.parse_known_args(argv)
    if not any(o.startswith("threads=") for o in overrides):
        overrides.append("threads=1")
    seconds = int(args.minutes * 60)
    hms = f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    overrides += [
        f"callbacks.metatest.task_set={args.task_set}",
        f"callbacks.metatest.every_n_epochs={args.every_epochs}",
        "callbacks.metatest.baselines=true",
        f"trainer.max_time={hms}",
    ]
    cfg = compose(overrides)

    import lightning as L

    from rl2_lightning.baselines.registry import display_name
    from rl2_lightning.evaluation.paper import PAPER_RESULTS
    from rl2_lightning.evaluation.scoring import level_crossings
    from rl2_lightning.train import train

    class StartUp(L.Callback):
        """Seconds from this script's start to the first iteration."""

        seconds = 0.0

        def on_train_start(self, trainer, pl_module):  # noqa: D102
            StartUp.seconds = time.perf_counter() - START

    out = train(cfg, extra_callbacks=[StartUp()])
    run_dir = Path(out["run_dir"])
    callback = next(c for c in out["trainer"].callbacks if hasattr(c, "baseline_curves"))
    curves = callback.baseline_curves
    rows = read_curve(run_dir / "metatest.csv")
    if not curves or "random" not in curves:
        raise SystemExit(f"{cfg.experiment}: no baselines for this family, so no levels to reach")
    low = float(curves["random"].sum())
    best_name, high = strongest(curves, display_name)
    frames = [r["frames"] for r in rows]
    secs = [StartUp.seconds + r["train_s"] for r in rows]
    levels = level_crossings(frames, secs, [r["trial_return"] for r in rows], low, high)

    final = rows[-1]
    print(f"\n{cfg.experiment}: meta-test on {callback.num_tasks} {args.task_set} tasks; random {low:.2f}, "
          f"strongest baseline {best_name} {high:.2f}; start-up {StartUp.seconds:.0f} s")
    print("| share of gap | level | frames | seconds |\n|---|---|---|---|")
    for lv in levels:
        f = "not reached" if lv["frames"] is None else f"{lv['frames'] / 1e6:.2f}M"
        s = "–" if lv["seconds"] is None else f"{lv['seconds']:.0f}"
        print(f"| {lv['fraction']:.0%} | {lv['level']:.2f} | {f} | {s} |")
    print(f"final: {final['trial_return']:.2f} ± {final['trial_return_ci95']:.2f} (95% CI) after "
          f"{final['frames'] / 1e6:.2f}M frames, {StartUp.seconds + final['train_s']:.0f} s of training "
          f"({final['wall_s'] - final['train_s']:.0f} s more in meta-tests)")

    out_dir = Path(args.out) if args.out else run_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "time_to_level.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["fraction", "level", "frames", "seconds"])
        writer.writeheader()
        writer.writerows(levels)
    baselines = {display_name(k): float(c.sum()) for k, c in curves.items()}
    if cfg.env.simulator._target_.endswith("TabularMDP"):  # the strongest of each prior is enough on the plot
        keep = {"Random", best_name}
        baselines = {k: v for k, v in baselines.items() if k in keep}
    paper = PAPER_RESULTS.get(cfg.experiment, {}).get("rl2")
    title = f"{cfg.experiment}, meta-test on {callback.num_tasks} {args.task_set} tasks"
    plot(rows, levels, baselines, paper, title, out_dir / "time_to_level.png")
    print(f"wrote {out_dir / 'time_to_level.png'} and {out_dir / 'time_to_level.csv'}")
    return levels


if __name__ == "__main__":
    main()
