"""Draws docs/img/architecture.png: the config groups, what each builds, and one iteration's data flow.

    python docs/architecture.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

GROUPS = [  # (group, options, what it builds)
    ("env", "bandit | tabular | riverswim | maze", "TrialEnvFactory(simulator=partial(TaskSimulator))"),
    ("model", "gru | lstm | transformer | mlp", "make_agent(spec env, memory=partial(Memory)) -> actor, critic"),
    ("algo", "ppo | trpo", "TrialAlgorithm(actor, critic): GAE + update"),
    ("optimizer", "adam", "partial(torch.optim.Adam) over the algorithm's param groups"),
    ("callbacks", "checkpoint, stop, metatest", "RunCheckpoint, GracefulStop, MetaTestCallback (run_dir)"),
    ("logger", "tensorboard | ~logger", "TensorBoardLogger(save_dir=run_dir)"),
    ("trainer", "default", "lightning.Trainer(callbacks, logger, plugins)"),
]
FLOW = [
    ("task", "TaskSource:\ntraining stream or\na fixed task set"),
    ("trial env", "TrialEnv:\nepisode = trial\n(n episodes, one task)"),
    ("collector", "TorchRL Collector\nin TrialDataModule"),
    ("batch", "[num_envs, trial steps]\nwhole trials"),
    ("advantages", "critic over\nwhole trials, GAE\n(stops at trial ends)"),
    ("update", "PPO: epochs x\nminibatches; TRPO:\nnatural step"),
    ("meta-test", "MetaTestCallback:\nfrozen actor on\nheld-out tasks"),
]


def box(ax, x, y, w, h, title, body, colour):
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02", fc=colour, ec="0.3", lw=0.8))
    ax.text(x + w / 2, y + h - 0.12, title, ha="center", va="top", fontsize=8.5, weight="bold")
    ax.text(x + w / 2, y + h / 2 - 0.1, body, ha="center", va="center", fontsize=6.8)


def main() -> None:
    fig, ax = plt.subplots(figsize=(12, 6.2))
    ax.set_xlim(0, 14)
    ax.set_ylim(0, 7.4)
    ax.axis("off")
    ax.text(0.1, 7.2, "conf/train.yaml: one group per part (a _target_ node each; keys = constructor arguments)",
            fontsize=9, weight="bold", va="top")
    for i, (group, options, builds) in enumerate(GROUPS):
        y = 6.45 - i * 0.52
        ax.text(0.2, y, f"{group}/", fontsize=8, family="monospace", weight="bold", va="center")
        ax.text(1.45, y, options, fontsize=7.5, family="monospace", va="center")
        ax.text(5.2, y, builds, fontsize=7.5, va="center")
    ax.text(10.6, 6.45, "conf/conf/<preset>.yaml picks the options\nand sizes of a setting:\n"
            "python train.py conf=maze_9x9\n\nchecked at composition against\nthe constructors' signatures\n"
            "(rl2_lightning/components.py)", fontsize=7.5, va="top",
            bbox=dict(boxstyle="round", fc="#f4f4f4", ec="0.6"))
    ax.text(0.1, 2.55, "one iteration (RL2Module.training_step), then the meta-test", fontsize=9, weight="bold")
    w, h, gap = 1.72, 1.25, 0.22
    colours = ["#dbe9f6", "#dbe9f6", "#e3f1dc", "#e3f1dc", "#fbe5d6", "#fbe5d6", "#eee0f3"]
    for i, ((title, body), colour) in enumerate(zip(FLOW, colours)):
        x = 0.15 + i * (w + gap)
        box(ax, x, 0.75, w, h, title, body, colour)
        if i:
            ax.add_patch(FancyArrowPatch((x - gap, 0.75 + h / 2), (x, 0.75 + h / 2), arrowstyle="-|>",
                                         mutation_scale=10, color="0.25"))
    for label, x0, x1, colour in (("env", 0, 2, "#4c78a8"), ("datamodule", 2, 4, "#54a24b"),
                                  ("algo", 4, 6, "#e45756"), ("callbacks", 6, 7, "#8e44ad")):
        xa, xb = 0.15 + x0 * (w + gap), 0.15 + x1 * (w + gap) - gap
        ax.plot([xa, xb], [0.55, 0.55], color=colour, lw=2)
        ax.text((xa + xb) / 2, 0.32, label, ha="center", fontsize=7.5, color=colour)
    out = Path(__file__).resolve().parent / "img" / "architecture.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
