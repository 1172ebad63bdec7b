"""Zero-shot meta-test on held-out tasks during training.

Every ``every_n_epochs`` epochs, rank 0 plays one trial with the frozen actor on each of the first
``num_tasks`` tasks of the held-out set (no gradient step; the same tasks every time) and logs
``meta_test/trial_return`` with its 95% confidence interval, ``meta_test/return_ep{k}``, a figure of
return per episode index within the trial (the curve that shows the agent learning inside a trial),
and appends the same numbers to ``metatest.csv`` in the run directory. Other ranks do no work.
For mazes it also logs the paper's Table 3 columns per episode index: ``success_ep{k}``,
``length_ep{k}`` (mean length of the successful episodes, ``length_se_ep{k}`` its standard error) and
``improved`` (share of trials whose second episode reached the goal no slower than the first), and, with
``video_frames > 0``, one held-out trial (the set's first maze) as an animation of the first-person view
beside the top-down map with the path drawn (``meta_test/trial_video``, TensorBoard's Images tab) and a
map of the paths of all its episodes (``meta_test/trial_paths``).

With ``baselines=True`` (bandits and tabular MDPs) the classical baselines of the paper play the same
tasks once per run, at the first evaluation; their per-episode curves are drawn in the same figure and
their trial returns logged as ``meta_test/baselines/<name>``, so a run shows how far RL² is from
Gittins or OPSRL as it learns.
"""

from __future__ import annotations

import csv
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import torch
from lightning import Callback, LightningModule, Trainer
from tensordict import TensorDictBase
from torchrl.envs.utils import ExplorationType

from rl2_lightning.components import Range
from rl2_lightning.evaluation import policy_key
from rl2_lightning.evaluation.report import per_episode_figure
from rl2_lightning.evaluation.scoring import late_slope, score_on_tasks, seeded, summarize


class Exploration(Enum):
    """How the meta-tested actor picks actions: ``random`` samples (RL² explores through its stochastic
    policy), ``mode`` is greedy."""

    random = "random"
    mode = "mode"

    @property
    def torchrl(self) -> ExplorationType:
        """TorchRL's exploration type."""
        return ExplorationType.RANDOM if self is Exploration.random else ExplorationType.DETERMINISTIC


class TaskSet(Enum):
    """The fixed task sets: ``heldout`` (for reporting) and ``tuning`` (for choosing hyperparameters)."""

    heldout = "heldout"
    tuning = "tuning"


PositiveInt = Annotated[int, Range(1)]


class MetaTestCallback(Callback):
    """Meta-test of the actor on a fixed task set.

    Args:
        every_n_epochs: evaluation period in epochs (also runs after the last epoch).
        task_set: ``"heldout"`` (default) or ``"tuning"``.
        num_tasks: number of tasks of the set to play.
        exploration: ``"random"`` (sample actions) or ``"mode"`` (greedy actions).
        seed: seed of the evaluation's own random streams (rewards, action sampling), so that every
            evaluation is comparable and training's random streams are left untouched.
        run_dir: where ``metatest.csv`` goes (default: the trainer's ``default_root_dir``).
        baselines: overlay the classical baselines (bandits and tabular MDPs).
        batch_size: trials played at once (default: all ``num_tasks``); mazes need a few, as each
            trial runs its own engine.
        episodes_per_trial: episodes of a meta-test trial (default: the training value); a larger
            value tests extrapolation beyond the trial length trained on.
        video_frames: mazes: frames of the logged trial animation (every k-th step past this; 0: none).
        every_minutes: a period in minutes of training instead of epochs: meta-test at the end of the first
            epoch after this long since the previous meta-test (also after the last epoch). Runs of very
            different cost per epoch (a search's trials) then report at comparable times.
    """

    def __init__(
        self,
        every_n_epochs: PositiveInt = 1,
        task_set: TaskSet = TaskSet.heldout,
        num_tasks: PositiveInt = 1000,
        exploration: Exploration = Exploration.random,
        seed: int = 0,
        run_dir: str | None = None,
        baselines: bool = True,
        batch_size: Optional[PositiveInt] = None,
        episodes_per_trial: Optional[PositiveInt] = None,
        video_frames: Annotated[int, Range(0)] = 200,
        every_minutes: Optional[Annotated[float, Range(0, None, low_open=True)]] = None,
    ):
        self.every_n_epochs, self.task_set, self.num_tasks = every_n_epochs, TaskSet(task_set).value, num_tasks
        self.exploration, self.seed, self.run_dir = Exploration(exploration).torchrl, seed, run_dir
        self.baselines = baselines
        self.batch_size = min(batch_size or num_tasks, num_tasks)
        self.episodes_per_trial = episodes_per_trial
        self.video_frames = video_frames
        self.every_minutes = every_minutes
        self.env = None
        self.video_env = None
        self.tasks = None
        self.last: dict[str, float] | None = None
        #: the latest evaluation's per-step episode index, validity and reward (for maze metrics)
        self.steps: TensorDictBase | None = None
        #: per-episode mean returns of each baseline on the same tasks (computed once per run)
        self.baseline_curves: dict[str, torch.Tensor] | None = None
        #: wall-clock of this process's fit and the part of it spent in meta-tests (for ``metatest.csv``)
        self._fit_start: float | None = None
        # seconds of wall-clock and of meta-tests before this process (a resumed run continues its clocks)
        self._clock_offset = {"wall_s": 0.0, "metatest_s": 0.0}
        self._metatest_seconds = 0.0
        #: seconds of training (meta-tests left out) at the previous meta-test, for ``every_minutes``
        self._last_test_train_s = 0.0

    def _make_env(self, pl_module: LightningModule, num_envs: int):
        env = pl_module.env.make(
            num_envs, task_set=self.task_set, episodes_per_trial=self.episodes_per_trial, device=pl_module.device
        )
        return pl_module.agent.attach_to(env)

    def _build(self, pl_module: LightningModule) -> None:
        self.episodes_per_trial = self.episodes_per_trial or pl_module.env.episodes_per_trial
        self.env = self._make_env(pl_module, self.batch_size)
        self.tasks = self.env.base_env.task_source.tasks[: self.num_tasks]

    @torch.no_grad()
    def evaluate(self, pl_module: LightningModule) -> torch.Tensor:
        """Per-episode returns ``[num_tasks, episodes_per_trial]`` of the current actor."""
        was_training = pl_module.training
        pl_module.eval()
        returns = self._play(pl_module, pl_module.actor, policy_key(pl_module.env))
        pl_module.train(was_training)
        return returns

    def _play(self, pl_module: LightningModule, policy, key: str) -> torch.Tensor:
        """Per-episode returns of ``policy`` on the task set, seeded as the evaluation command seeds
        ``key`` (:func:`~rl2_lightning.evaluation.scoring.seeded`): the same tasks, in the same order,
        with the same random numbers every time."""
        if self.env is None:
            self._build(pl_module)
        returns, self.steps = score_on_tasks(
            self.env, policy, self.tasks, key=key, seed=self.seed, task_set=self.task_set, exploration=self.exploration
        )
        return returns

    @torch.no_grad()
    def evaluate_baselines(self, pl_module: LightningModule) -> dict[str, torch.Tensor]:
        """Mean return per episode index of every classical baseline on the same tasks (cached)."""
        if self.env is None:
            self._build(pl_module)
        if self.baseline_curves is None:
            self.baseline_curves = {}
            from rl2_lightning.baselines.registry import baseline_policies, baseline_setting

            setting = baseline_setting(pl_module.env.simulator) if self.baselines else None
            if setting is not None:
                for key, make in baseline_policies(setting, self.episodes_per_trial).items():
                    self.baseline_curves[key] = self._play(pl_module, make(), key).double().mean(0).cpu()
        return self.baseline_curves

    @torch.no_grad()
    def record(self, pl_module: LightningModule) -> dict:
        """Play the set's first maze with the current actor, one engine; :func:`record_trial`'s output."""
        from rl2_lightning.envs.maze.render import record_trial
        from torchrl.envs.utils import set_exploration_type

        if self.env is None:
            self._build(pl_module)
        if self.video_env is None:
            self.video_env = self._make_env(pl_module, 1)
        self.video_env.base_env.use_tasks(self.tasks[:1])
        was_training = pl_module.training
        pl_module.eval()
        with seeded(self.video_env, policy_key(pl_module.env), self.seed, self.task_set), set_exploration_type(self.exploration):
            trial = record_trial(self.video_env, pl_module.actor)
        pl_module.train(was_training)
        return trial

    def log_trial_media(self, experiment, pl_module: LightningModule, step: int) -> None:
        """The recorded held-out trial as a TensorBoard animation and a paths image."""
        from rl2_lightning.envs.maze.render import draw_map, episode_paths, tensorboard_gif, trial_frames

        trial = self.record(pl_module)
        frames = trial_frames(
            trial["layout"], trial["observation"], trial["position"], trial["episode_index"], self.video_frames
        )
        experiment._get_file_writer().add_summary(tensorboard_gif("meta_test/trial_video", frames), step)
        paths = draw_map(trial["layout"], episode_paths(trial["position"], trial["episode_index"]))
        experiment.add_image("meta_test/trial_paths", paths, global_step=step, dataformats="HWC")

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:  # noqa: D102
        # Not gated on ``is_closed``: a plain TorchRL env reads closed from birth until it is started, so that
        # check skipped every meta-test env and left its maze engines to the garbage collector.
        for env in (self.env, self.video_env):
            if env is not None:
                env.close(raise_if_closed=False)
        self.env = self.video_env = None

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the clocks; on a resumed run, drop the ``metatest.csv`` rows of epochs the checkpoint
        does not hold (a kill between an epoch's meta-test and its checkpoint), as they run again."""
        self._fit_start, self._metatest_seconds = time.perf_counter(), self._clock_offset["metatest_s"]
        path = self._csv_path(trainer)
        if trainer.is_global_zero and path.exists():
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            keep = [r for r in rows if int(r["epoch"]) < trainer.current_epoch]
            if len(keep) < len(rows):
                with path.open("w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                    writer.writeheader()
                    writer.writerows(keep)

    def state_dict(self) -> dict[str, float]:
        """The run's clocks so far, kept in checkpoints so that a resumed run's ``wall_s`` and ``train_s``
        continue where the checkpoint left them instead of restarting at 0."""
        elapsed = time.perf_counter() - self._fit_start if self._fit_start is not None else 0.0
        return {"wall_s": self._clock_offset["wall_s"] + elapsed, "metatest_s": self._metatest_seconds,
                "last_test_train_s": self._last_test_train_s}

    def load_state_dict(self, state: dict[str, float]) -> None:  # noqa: D102
        self._clock_offset = {"wall_s": float(state.get("wall_s", 0.0)), "metatest_s": float(state.get("metatest_s", 0.0))}
        self._last_test_train_s = float(state.get("last_test_train_s", 0.0))

    def _due(self, trainer: Trainer) -> bool:
        """Whether this epoch's end is a meta-test by the period (epochs, or minutes of training)."""
        if self.every_minutes is None:
            return (trainer.current_epoch + 1) % self.every_n_epochs == 0
        clock = self.state_dict()
        return clock["wall_s"] - clock["metatest_s"] - self._last_test_train_s >= 60 * self.every_minutes

    def _csv_path(self, trainer: Trainer) -> Path:
        return Path(self.run_dir or trainer.default_root_dir) / "metatest.csv"

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        # the last epoch, also when the run stops early (max_time, a signal): its score is the run's result
        last_epoch = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        if not (self._due(trainer) or last_epoch):
            return
        if not trainer.is_global_zero:
            return
        started = time.perf_counter()
        returns = self.evaluate(pl_module)
        curves = self.evaluate_baselines(pl_module)
        summary = summarize(returns)
        # the family's own metrics (mazes: Table 3's success, lengths, %improved)
        summary.update(self.env.base_env.simulator.trial_metrics(self.steps, self.episodes_per_trial))
        self.last = summary
        frames = int(pl_module.frames)
        metrics = {f"meta_test/{k}": v for k, v in summary.items()}
        if returns.shape[-1] >= 5:  # how much the policy still improves from the fourth episode on (not in the CSV,
            metrics["meta_test/late_slope"] = late_slope(returns.double().mean(0).tolist())  # whose columns stay fixed)
        metrics.update({f"meta_test/baselines/{k}": c.sum().item() for k, c in curves.items()})
        if trainer.logger is not None:
            trainer.logger.log_metrics(metrics, step=frames)
            experiment = getattr(trainer.logger, "experiment", None)
            if hasattr(experiment, "add_figure"):
                fig = self.figure(returns, curves)
                experiment.add_figure("meta_test/return_per_episode", fig, global_step=frames)
            if hasattr(self.env.base_env.simulator, "positions") and self.video_frames and hasattr(experiment, "add_image"):
                self.log_trial_media(experiment, pl_module, frames)
        now = time.perf_counter()
        self._metatest_seconds += now - started
        wall = now - (self._fit_start or started) + self._clock_offset["wall_s"]
        timing = {"wall_s": wall, "train_s": wall - self._metatest_seconds}
        self._last_test_train_s = timing["train_s"]
        self._append_csv(trainer, frames, {**summary, **timing})

    def figure(self, returns: torch.Tensor, baselines: dict[str, torch.Tensor] | None = None):
        """Mean return of each episode index within the trial (95% CI band), baselines dashed."""
        return per_episode_figure(returns, baselines or {}, f"meta-test on {returns.shape[0]} {self.task_set} tasks")

    def _append_csv(self, trainer: Trainer, frames: int, summary: dict[str, float]) -> None:
        path = self._csv_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"epoch": trainer.current_epoch, "frames": frames, **summary}
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)
