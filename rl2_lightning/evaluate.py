"""Evaluation command: RL² (from a checkpoint) beside the setting's baselines on its held-out task set.

    python -m rl2_lightning.evaluate conf=bandit_k5_n10 ckpt=runs/bandit_k5_n10/<run>/checkpoints/last.ckpt
    python -m rl2_lightning.evaluate conf=bandit_k10_n10 ckpt=pretrained    # the shipped policy (data/pretrained/)
    python -m rl2_lightning.evaluate conf=tabular_n25                       # baselines only
    python -m rl2_lightning.evaluate conf=maze_5x5 ckpt=<file> callbacks.metatest.num_tasks=100   # Table 3, GIFs
    python -m rl2_lightning.evaluate --family bandit --num-arms 5 --episodes 10 [--out DIR]

The preset names the setting; any override applies (``callbacks.metatest.num_tasks``, ``.batch_size``
and ``.episodes_per_trial`` choose how much of the set is played and how long the trials are;
``.task_set=tuning`` plays the tuning set, on which checkpoints and seeds may be chosen). Prints
the paper-style table and writes ``<setting>.md``, ``.csv``, ``_per_episode.csv`` and ``.png`` to ``out``
(default: ``<run>/evaluate`` beside the checkpoint's run, or ``outputs/evaluate``); for mazes also a GIF
and a paths image of the first held-out maze per policy. Scoring and reporting are :mod:`rl2_lightning.evaluation`.

Bandit and tabular baselines use the hyperparameters tuned on the tuning set (``conf/baselines/``);
tabular ones run with both reward priors, TabulaRL's (``paper``) and the true one (``_bayes``). Families
without the paper's baselines are compared with a uniformly random policy.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

import torch
from hydra.utils import instantiate

from rl2_lightning.evaluation import evaluate, policy_key


def module_from_ckpt_arg(ckpt: str, cfg, verb: str):
    """The module of a ``ckpt=`` argument and the file it came from: ``pretrained`` (the preset's shipped
    policy, ``data/pretrained/``; no file), ``latest`` (the newest intact checkpoint of the preset's experiment
    under ``runs_dir``, as for resuming; ``verb`` says what for) or a checkpoint file."""
    if ckpt == "pretrained":
        from rl2_lightning.checkpoints import check_trained_on
        from rl2_lightning.pretrained import load

        module = load(cfg.experiment)
        check_trained_on(module.hparams, cfg, ("env",), f"ckpt=pretrained ({cfg.experiment})")
        return module, None
    from rl2_lightning.checkpoints import latest_checkpoint, load_module

    path = latest_checkpoint(cfg.runs_dir, cfg.experiment, key="ckpt", verb=verb) if ckpt == "latest" else Path(ckpt)
    return load_module(path, cfg, trust=cfg.trust_checkpoint), path


def evaluate_checkpoint(overrides: list[str], config_dir: str | None = None) -> list[dict]:
    """``conf=<preset> [ckpt=<file>] [out=<dir>] [key=value ...]``: RL² (if ``ckpt``) and the baselines;
    ``config_dir`` is a folder of the user's own presets and config groups (as ``--config-dir``)."""
    from rl2_lightning.config import compose

    args = dict(a.split("=", 1) for a in overrides if a.split("=", 1)[0] in ("ckpt", "out"))
    cfg = compose([a for a in overrides if a.split("=", 1)[0] not in ("ckpt", "out")], config_dir)
    if cfg.threads is not None:  # as in training: 1 is fastest when the CPU is shared
        torch.set_num_threads(cfg.threads)
    env = instantiate(cfg.env)
    module, out = None, args.get("out")
    if "ckpt" in args:
        module, ckpt = module_from_ckpt_arg(args["ckpt"], cfg, verb="evaluating")
        if out is None and ckpt is not None and ckpt.parent.name == "checkpoints":
            out = str(ckpt.parent.parent / "evaluate")
    mt = cfg.callbacks.get("metatest") or {}
    return evaluate(
        env, {policy_key(cfg.env): module.actor} if module is not None else {}, out or "outputs/evaluate",
        agent=module.agent if module is not None else None, seed=mt.get("seed", 0),
        task_set=mt.get("task_set") or "heldout", num_tasks=mt.get("num_tasks"),
        batch_size=mt.get("batch_size") or (8 if env.simulator_class.own_pools else None),
        episodes_per_trial=mt.get("episodes_per_trial"),
    )


USAGE = """%(prog)s conf=<preset> [ckpt=<file>|latest|pretrained] [out=<dir>] [key=value ...] [--config-dir DIR]
       %(prog)s --family {bandit,tabular,riverswim} --episodes N [--num-arms K] [--out DIR]"""

EPILOG = """modes:
  conf=<preset> ...   a policy (ckpt=<training checkpoint>, ckpt=latest for the newest of the preset's runs,
                      or ckpt=pretrained for the shipped one) beside
                      the setting's baselines; without ckpt, the baselines only. Any training override
                      applies, e.g. callbacks.metatest.num_tasks=100, threads=1, env.tasks_dir=<folder>.
                      --config-dir names a folder of your own presets (as for training). Files go to out=
                      (default: <run>/evaluate beside a run's checkpoint, else outputs/evaluate).
  --family ...        the baselines of a family and trial length, without a preset.

examples:
  %(prog)s conf=bandit_k10_n10 ckpt=pretrained
  %(prog)s conf=tabular_n10 ckpt=runs/tabular_n10/<run>/checkpoints/last.ckpt out=results
  %(prog)s --family bandit --num-arms 5 --episodes 10"""


def main(argv: list[str] | None = None) -> list[dict]:
    """CLI: ``conf=<preset> [ckpt=...]`` (a policy and the baselines), or ``--family ...`` (baselines only)."""
    from rl2_lightning.envs import TrialEnvFactory, family_class

    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], usage=USAGE, epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="conf=<preset>, ckpt=, out= and any training override")
    parser.add_argument("--config-dir", "-cd", help="a folder of your own presets and config groups")
    parser.add_argument("--family", choices=["bandit", "tabular", "riverswim"], help="baselines of a family, no preset")
    parser.add_argument("--num-arms", type=int, default=5, help="bandit arms k (--family bandit)")
    parser.add_argument("--episodes", type=int, help="episodes per trial n (--family)")
    parser.add_argument("--out", default="outputs/evaluate", help="directory for the .md/.csv/.png outputs (--family)")
    parser.add_argument("--seed", type=int, default=0, help="(--family)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (--family; 1 is fastest for these small ops)")
    args = parser.parse_args(argv)
    if args.overrides:
        if args.family:
            parser.error("give either conf=<preset> ... or --family, not both")
        bad = [a for a in args.overrides if "=" not in a and not a.startswith("~")]
        if bad:
            parser.error(f"{bad[0]!r} is not key=value")
        return evaluate_checkpoint(args.overrides, args.config_dir)
    if not args.family or args.episodes is None:
        parser.error("give conf=<preset> [ckpt=...], or --family and --episodes")
    torch.set_num_threads(args.threads)
    sizes = {"num_arms": args.num_arms} if args.family == "bandit" else {}
    env = TrialEnvFactory(partial(family_class(args.family), **sizes), args.episodes)
    return evaluate(env, out_dir=args.out, seed=args.seed)


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main()
