"""Recipe search that sees past the first minutes: a multi-fidelity Optuna study over training runs.

    rl2-search tabular_n10              # work on the study of conf/search/tabular_n10.yaml (continues it)
    rl2-search tabular_n10 --trials 4   # at most 4 more trials from this process
    rl2-search tabular_n10 --show       # its trials, best first, the plot of every trial's curve, and
                                        # each curve as searches/tabular_n10_curves/trial_NNN.csv
    rl2-search tabular_n10 --set budget.max_minutes=120   # change a key of the search's config

Each trial trains the search's preset with the sampled parameters for up to ``budget.max_minutes`` of
training, meta-testing on the **tuning** set as it goes. Every meta-test is reported to the study
(value: trial return, step: seconds of training), and Optuna's Hyperband pruner stops a trial whose
curve trails the others' at the same training time (successive halving in several brackets, from
``budget.min_minutes``), so only promising trials run long. The study lives in a real database (SQLite by
default, ``searches/<name>.db``; any SQLAlchemy URL with ``--storage``): a search continues after a
restart, several processes or machines can work on one study, and a trial whose process died is
retried from its last checkpoint, up to ``heartbeat.max_retry`` times (Optuna's heartbeat). The
search's own Optuna is the library's current version (the ``search`` extra), used through its own API.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf

from rl2_lightning.envs.tasks import derive_seed
from rl2_lightning.errors import require_extra
from rl2_lightning.resources import conf_dir

SEARCH_DIR = conf_dir() / "search"
HEARTBEAT_DEFAULTS = {"interval": 60, "grace_period": 180, "max_retry": 3}  # seconds, seconds, retries


def read_search(name: str, config_dir: str | Path | None = None, sets: list[str] = ()) -> DictConfig:
    """``conf/search/<name>.yaml`` (or ``<config_dir>/search/<name>.yaml``) with the ``key=value`` changes
    of ``sets``, checked."""
    dirs = ([Path(config_dir) / "search"] if config_dir else []) + [SEARCH_DIR]
    path = next((d / f"{name}.yaml" for d in dirs if (d / f"{name}.yaml").is_file()), None)
    if path is None:
        names = sorted({p.stem for d in dirs for p in d.glob("*.yaml")})
        raise ValueError(f"search {name!r} does not exist; choose one of: {', '.join(names)}")
    spec = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(sets)))
    for key in ("overrides", "budget", "space"):
        if key not in spec:
            raise ValueError(f"{path}: the key {key!r} is missing")
    budget = spec.budget
    if not 0 < budget.min_minutes <= budget.max_minutes:
        raise ValueError(f"{path}: budget needs 0 < min_minutes <= max_minutes, got {budget.min_minutes}, {budget.max_minutes}")
    for param, dist in spec.space.items():
        if "choices" not in dist and not ("low" in dist and "high" in dist):
            raise ValueError(f"{path}: space.{param} needs choices, or low and high")
    if any(o.split("=", 1)[0].lstrip("+~") in ("runs_dir", "experiment", "trainer.max_time") for o in spec.overrides):
        raise ValueError(f"{path}: runs_dir, experiment and trainer.max_time are the search's to set")
    for key, default in HEARTBEAT_DEFAULTS.items():  # every key checked here, named in its error
        value, low = (spec.get("heartbeat") or {}).get(key, default), 0 if key == "max_retry" else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{path}: heartbeat.{key} must be an integer (>= {low}), got {value!r}")
    return spec


def suggest(trial, name: str, dist: DictConfig) -> Any:
    """One parameter from its distribution: ``choices`` (categorical), or ``low``/``high`` with optional
    ``log`` (an int range when both bounds are ints, else a float range)."""
    if "choices" in dist:
        return trial.suggest_categorical(name, list(dist.choices))
    low, high, log = dist.low, dist.high, bool(dist.get("log", False))
    if isinstance(low, int) and isinstance(high, int):
        return trial.suggest_int(name, low, high, log=log)
    return trial.suggest_float(name, float(low), float(high), log=log)


def frozen(trial):
    """The stored state of a running trial (its system attributes and intermediate values)."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


class ReportMetaTests(L.Callback):
    """Reports each meta-test (trial return at seconds of training) to an Optuna trial, and stops the run
    at the end of that epoch if the study's pruner says so (the run still writes its checkpoint).

    The seconds are the run's own clock (meta-tests included), which its checkpoints carry: a trial
    resumed after its process died reports where its curve left off."""

    def __init__(self, trial):
        self.trial, self.pruned, self._reported = trial, False, None
        stored = frozen(trial)  # a retried trial inherits its curve so far
        self._step = max(stored.intermediate_values, default=0)
        self._curve = list(stored.user_attrs.get("curve", []))

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        from rl2_lightning.callbacks import MetaTestCallback

        metatest = next((c for c in trainer.callbacks if isinstance(c, MetaTestCallback)), None)
        if metatest is None or metatest.last is None or metatest.last is self._reported:
            return
        self._reported = metatest.last
        # strictly increasing, as Optuna keeps one value per step
        step = max(int(metatest.state_dict()["wall_s"]), self._step + 1)
        self._step = step
        self.trial.report(float(metatest.last["trial_return"]), step)
        self.trial.set_user_attr("frames", int(pl_module.frames))
        # frames and training seconds (meta-tests left out) at each step: the curve `--show` writes as CSV
        self._curve.append([step, int(pl_module.frames), round(float(metatest.state_dict()["last_test_train_s"]), 1)])
        self.trial.set_user_attr("curve", self._curve)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def storage_for(url: str, heartbeat_interval: int = HEARTBEAT_DEFAULTS["interval"],
                grace_period: int = HEARTBEAT_DEFAULTS["grace_period"], max_retry: int = HEARTBEAT_DEFAULTS["max_retry"]):
    """Optuna's RDB storage with a heartbeat: a trial whose process died (no heartbeat for
    ``grace_period`` seconds) is failed when a process next works on the study, and retried (up to
    ``max_retry`` times: a long trial may span several session ends) with its curve so far; the retry
    resumes the dead trial's run from its last checkpoint (:func:`objective`)."""
    optuna = require_extra("optuna", "search", "a recipe search")
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():  # the heartbeat is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=max_retry, inherit_intermediate_values=True),
        )


def open_study(name: str, spec: DictConfig, storage_url: str, pruner=None):
    """The stored study (created on first use): TPE sampler, Hyperband pruner over seconds of training."""
    optuna = require_extra("optuna", "search", "a recipe search")
    budget = spec.budget
    if pruner is None:
        pruner = optuna.pruners.HyperbandPruner(
            min_resource=max(1, int(budget.min_minutes * 60)), max_resource=max(1, int(budget.max_minutes * 60)),
            reduction_factor=int(budget.get("reduction_factor", 3)),
        )
    sampler_cfg = spec.get("sampler") or {}
    beat = {**HEARTBEAT_DEFAULTS, **(spec.get("heartbeat") or {})}
    storage = storage_for(storage_url, beat["interval"], beat["grace_period"], beat["max_retry"])
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize", pruner=pruner,
                                load_if_exists=True)
    # The sampler's seed is the config's and the number of trials the study already holds: a process that
    # continues the study draws new parameters (with the config's seed alone, each new process replayed the
    # first process's random start-up draws: trials 4 and 5 of the committed study repeat trials 0 and 1).
    seed = sampler_cfg.get("seed")
    if seed is not None:
        seed = derive_seed(int(seed), "sampler", len(study.get_trials(deepcopy=False)))
    study.sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=sampler_cfg.get("n_startup_trials", 10))
    return study


def objective(trial, spec: DictConfig, runs_dir: Path, config_dir: str | Path | None = None) -> float:
    """Train one trial; its value is the last meta-test's trial return on the tuning set."""
    import optuna

    from rl2_lightning.config import compose
    from rl2_lightning.train import train

    params = {name: suggest(trial, name, dist) for name, dist in spec.space.items()}
    seconds = int(math.ceil(spec.budget.max_minutes * 60))
    max_time = f"{seconds // 86400:02d}:{seconds // 3600 % 24:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
    overrides = [*spec.overrides, *(f"{k}={v}" for k, v in params.items()), f"runs_dir={runs_dir}",
                 f"experiment=trial_{trial.number:03d}", f"trainer.max_time={max_time}"]
    resume = dead_trial_checkpoint(trial, runs_dir)
    if resume is not None:  # a retry of a trial whose process died: continue its run (budget clock included)
        overrides.append(f"ckpt_path={resume}")
    report = ReportMetaTests(trial)
    out = train(compose(overrides, config_dir), extra_callbacks=[report])
    trial.set_user_attr("run_dir", str(out["run_dir"]))
    if out["metatest"] is None:
        raise ValueError("the search's overrides turn the meta-test off: a trial needs its score")
    if report.pruned:
        raise optuna.TrialPruned(f"stopped at {trial.user_attrs.get('frames', 0):,} frames")
    return float(out["metatest"]["trial_return"])


def dead_trial_checkpoint(trial, runs_dir: Path) -> Path | None:
    """For a retried trial, the newest ``last.ckpt`` of the runs of the trials it retries; else None."""
    import warnings

    import optuna

    with warnings.catch_warnings():  # marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        history = optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(frozen(trial))
    found = [p for n in history for p in (Path(runs_dir) / f"trial_{n:03d}").glob("*/checkpoints/last.ckpt")]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_search(name: str, trials: int | None = None, storage: str | None = None, config_dir: str | Path | None = None,
               pruner=None, root: str | Path = "searches", sets: list[str] = ()):
    """Work on the study ``name`` for ``trials`` more trials (None: until stopped); returns the study.
    ``sets`` are ``key=value`` changes to the search's config (``budget.max_minutes=120``)."""
    spec = read_search(name, config_dir, sets)
    storage = storage or spec.get("storage") or f"sqlite:///{Path(root) / name}.db"
    study = open_study(name, spec, storage, pruner)
    study.optimize(lambda t: objective(t, spec, Path(root) / name / "runs", config_dir), n_trials=trials,
                   catch=(ValueError,), gc_after_trial=True)  # a bad combination fails that trial only
    return study


def trials_table(study) -> str:
    """Markdown: every trial, best first: state, last value, training minutes reached, frames, parameters."""
    rows = []
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        last = t.value if t.value is not None else (t.intermediate_values[steps[-1]] if steps else None)
        minutes = steps[-1] / 60 if steps else 0.0
        params = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
        rows.append((last if last is not None else -math.inf, t.number, t.state.name.lower(), last, minutes,
                     t.user_attrs.get("frames", 0), params))
    rows.sort(key=lambda r: (-r[0], r[1]))
    lines = ["| trial | state | tuning trial return (last) | minutes trained | frames | parameters |", "|---|---|---|---|---|---|"]
    lines += [f"| {n} | {state} | {'' if v is None else f'{v:.2f}'} | {m:.1f} | {f / 1e6:.1f}M | {p} |"
              for _, n, state, v, m, f, p in rows]
    return "\n".join(lines)


def curves_figure(study, path: Path) -> Path:
    """Every trial's meta-test curve against training minutes (pruned ones end early)."""
    from rl2_lightning.evaluation.report import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for t in study.trials:
        steps = sorted(t.intermediate_values)
        if steps:
            ax.plot([s / 60 for s in steps], [t.intermediate_values[s] for s in steps], marker=".",
                    lw=2.0 if t.state.name == "COMPLETE" else 0.8, label=f"{t.number} ({t.state.name.lower()})")
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("meta-test trial return (tuning set)")
    ax.set_title(study.study_name)
    if len(study.trials) <= 20:
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_trial_curves(study, folder: Path) -> list[Path]:
    """Each trial's curve as ``folder/trial_NNN.csv`` (frames, train_s, trial_return: the columns of a run's
    ``metatest.csv`` that ``rl2_lightning.evaluation.curves --compare`` reads), from the frames the trial
    recorded at each report; a trial reported before frames were recorded per step has none and is left out."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for t in study.trials:
        points = [(step, frames, train_s) for step, frames, train_s in t.user_attrs.get("curve", [])
                  if step in t.intermediate_values]
        if not points:
            continue
        path = folder / f"trial_{t.number:03d}.csv"
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["frames", "train_s", "trial_return"])
            writer.writerows([frames, train_s, t.intermediate_values[step]] for step, frames, train_s in points)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """CLI: see the module's docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:6]))
    parser.add_argument("name", help="a search of conf/search/ (or of --config-dir's search/)")
    parser.add_argument("--trials", type=int, default=None, help="at most this many more trials (default: until stopped)")
    parser.add_argument("--storage", help="SQLAlchemy URL of the study's database (default: sqlite:///searches/<name>.db)")
    parser.add_argument("--root", default="searches", help="folder of the default database and of the trials' runs")
    parser.add_argument("--config-dir", "-cd", help="a folder of your own presets and searches")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="sets",
                        help="change the search's config, e.g. budget.max_minutes=120 (repeatable)")
    parser.add_argument("--show", action="store_true", help="print the study's trials and write its curves figure")
    args = parser.parse_args(argv)
    if args.show:
        spec = read_search(args.name, args.config_dir, args.sets)
        study = open_study(args.name, spec, args.storage or spec.get("storage") or f"sqlite:///{Path(args.root) / args.name}.db")
        print(trials_table(study))
        print(f"wrote {curves_figure(study, Path(args.root) / f'{args.name}_curves.png')}")
        csvs = write_trial_curves(study, Path(args.root) / f"{args.name}_curves")
        print(f"wrote {len(csvs)} trial curve(s) for `curves --compare` under {Path(args.root) / f'{args.name}_curves'}"
              f" ({len(study.trials) - len(csvs)} trial(s) without frames per report)")
        return
    study = run_search(args.name, args.trials, args.storage, args.config_dir, root=args.root, sets=args.sets)
    print(trials_table(study))


if __name__ == "__main__":
    from rl2_lightning.errors import one_line_errors

    with one_line_errors():
        main(sys.argv[1:])
