"""Table and learning curves of a recipe search (a Hydra multirun directory of ``train.py -m sweep=...``).

    python benchmarks/sweep_report.py runs/multirun/<date_time> [more sweep dirs ...] --out docs/img/sweep.png

Reads every trial's swept parameters (``.hydra/overrides.yaml``) and meta-test curve (``metatest.csv``),
prints one Markdown row per trial (``s<k>.t<n>``: search k in the order given, trial n), best last score first (the score the sweeper maximised: the last
meta-test on the tuning set), with the frames the trial reached in its time budget; and draws every
curve against frames, the best one highlighted.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import yaml


def read_trials(sweep_dirs: list[Path]) -> list[dict]:
    """One dict per trial: ``name``, ``params`` (the swept overrides), ``frames`` and ``scores``."""
    trials = []
    for k, sweep in enumerate(sweep_dirs, 1):
        for job in sorted(p for p in sweep.iterdir() if (p / ".hydra" / "overrides.yaml").is_file()):
            overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
            params = dict(o.split("=", 1) for o in overrides if not o.startswith(("sweep=", "runs_dir=")))
            curve = job / "metatest.csv"
            rows = list(csv.DictReader(curve.open())) if curve.is_file() else []
            trials.append({
                "name": f"s{k}.t{job.name.rsplit('_', 1)[-1]}",  # search k (in the order given), trial
                "params": params,
                "frames": [float(r["frames"]) for r in rows],
                "scores": [float(r["trial_return"]) for r in rows],
            })
    return trials


def short(key: str) -> str:
    return key.split(".")[-1]


def fmt(value: str) -> str:
    try:
        x = float(value)
    except ValueError:
        return value
    return f"{x:.2g}" if x < 0.1 else value


def main() -> None:  # noqa: D103
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweeps", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG of the curves")
    parser.add_argument("--title", default="recipe search")
    args = parser.parse_args()
    trials = [t for t in read_trials(args.sweeps) if t["scores"]]
    trials.sort(key=lambda t: -t["scores"][-1])
    keys = sorted({k for t in trials for k in t["params"]})
    print("| trial | last score | frames | " + " | ".join(short(k) for k in keys) + " |")
    print("|---" * (len(keys) + 3) + "|")
    for t in trials:
        cells = " | ".join(fmt(t["params"].get(k, "")) for k in keys)
        print(f"| {t['name']} | {t['scores'][-1]:.1f} | {t['frames'][-1] / 1e6:.2f}M | {cells} |")
    if args.out is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for i, t in enumerate(trials):
        best = i == 0
        ax.plot([f / 1e6 for f in t["frames"]], t["scores"], marker=".", linewidth=2 if best else 0.8,
                alpha=1.0 if best else 0.6, label=t["name"] + (" (best)" if best else ""))
    ax.set_xlabel("environment frames (millions)")
    ax.set_ylabel("meta-test trial return (tuning set)")
    ax.set_title(args.title, fontsize="small")
    ax.legend(fontsize="xx-small", ncol=2)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
