"""A TorchRL collector over batched trial envs, served to Lightning as an iterable dataset.

Each item is one batch of whole trials, ``[num_envs, trial_steps]`` (times ``trials_per_reset`` for the
no-reset ablation): with ``frames_per_batch = num_envs x trial length`` and ``reset_at_each_iter`` every
row starts at a reset and ends at a trial end, so no hidden state crosses batches.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset
from torchrl.collectors import AsyncCollector, Collector
from torchrl.envs import InitTracker, ParallelEnv, TransformedEnv

from rl2_lightning.envs import TrialEnvFactory
from rl2_lightning.envs.tasks import derive_seed
from rl2_lightning.envs.trial import EngineRestarted

log = logging.getLogger(__name__)


def _env_with_primers(make, primers):
    """Built in the prefetch worker process: the trial env with the actor's memory primers."""
    env = make()
    for primer in primers:
        env = env.append_transform(primer.clone())
    return env


def _as_is(batch):
    """Collate function that hands the TensorDict over untouched (the default one treats it as a dict)."""
    return batch


class TrialBatches(IterableDataset):
    """Yields ``iterations`` batches of whole trials per epoch from the data module's collector.

    If an engine dies mid-batch, the data module rebuilds env and collector, puts the envs' random
    streams back where they stood before the batch, and the batch is collected again; the run goes on.
    In one process the dead engine surfaces as :class:`~rl2_lightning.envs.trial.EngineRestarted`; with
    ``env.workers > 1`` it ends its worker process and TorchRL's ``ParallelEnv`` raises a
    ``RuntimeError`` (it then shuts every worker down). ``max_retries`` failures in a row end the run with
    the last error (a bug would otherwise be retried forever).
    """

    max_retries = 3

    def __init__(self, datamodule: TrialDataModule, iterations: int):
        self.datamodule, self.iterations = datamodule, iterations

    def __iter__(self):  # noqa: D105
        # A finite epoch: Lightning's prefetching then never collects a batch it would throw away.
        dm = self.datamodule
        batches = dm.batches()
        done = failures = 0
        while done < self.iterations:
            before = dm.state_dict()  # the envs' random streams before this batch
            try:
                batch = next(batches)
            except (EngineRestarted, RuntimeError) as err:
                engine = isinstance(err, EngineRestarted) or dm.parallel  # (EngineRestarted is a RuntimeError)
                if not engine or failures >= self.max_retries:
                    raise
                failures += 1
                log.warning("%s; rebuilding the envs and collecting the batch again", err)
                dm.rebuild(before)
                batches = dm.batches()
                continue
            done, failures = done + 1, 0
            yield batch.reshape(-1, batch.shape[-1])  # [workers, envs, T] -> [trials, T]


class TrialDataModule(LightningDataModule):
    """Builds each rank's trial env (seeded by rank) in ``setup`` and its collector for the module's actor.

    Args:
        env: the env component (simulator and trial layout).
        seed: run seed; tasks and dynamics are seeded by ``(seed, global rank)``.
        iterations_per_epoch: collect-update cycles per Lightning epoch.
    """

    def __init__(self, env: TrialEnvFactory, seed: int, iterations_per_epoch: int):
        super().__init__()
        self.env_factory, self.seed, self.iterations_per_epoch = env, seed, iterations_per_epoch
        self.env = None
        self.collector = None
        self._batches = None  # env.prefetch: the collector's one iterator
        #: steps of one collected row (a trial, padded for mazes, or ``trials_per_reset`` trials)
        self.trial_steps: int | None = None

    @property
    def device(self) -> torch.device:
        """Where envs, policy and batches live: the strategy's device (CPU without a trainer)."""
        return self.trainer.strategy.root_device if self.trainer else torch.device("cpu")

    def setup(self, stage: str | None = None) -> None:  # noqa: D102
        if self.env is None:
            self.env = self._make_env()

    def _make_env(self):
        factory = self.env_factory
        workers = factory.workers
        make = functools.partial(
            factory.make, factory.num_envs // workers, seed=self.seed, rank=self.trainer.global_rank if self.trainer else 0
        )
        if factory.prefetch:  # the envs will live in the collector's worker process
            spec = factory.spec_env()
            self.trial_steps = spec.trial_steps * factory.trials_per_reset
            spec.close()
            return None
        if workers == 1:
            env = make(device=self.device)
            self.trial_steps = env.base_env.trial_steps * factory.trials_per_reset
            return env
        if self.trial_steps is None:  # the trial envs will live in the workers: ask a spec env
            spec = factory.spec_env()
            self.trial_steps = spec.trial_steps * factory.trials_per_reset
            spec.close()
        # Engines in several processes; each worker's task stream is seeded by its index.
        makers = [functools.partial(make, worker=w, device="cpu", init_tracker=False) for w in range(workers)]
        return TransformedEnv(ParallelEnv(workers, makers, device=self.device), InitTracker())

    def _make_collector(self) -> None:
        """The collector over ``self.env``, running the module's actor (random actions without a trainer)."""
        module = self.trainer.lightning_module if self.trainer else None
        if self.env_factory.prefetch:
            self._make_prefetch_collector(module)
            return
        if module is not None:
            self.env = module.agent.attach_to(self.env)
        device = self.device
        # Building the collector resets the env and runs the policy once; keep that off the
        # random streams, so a resumed run continues them exactly where the checkpoint left them.
        states = self.state_dict()
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            self.collector = Collector(
                self.env,
                module.actor if module else None,
                frames_per_batch=self.env_factory.num_envs * self.trial_steps,
                total_frames=-1,
                reset_at_each_iter=True,
                split_trajs=False,
                device=device,
                storing_device=device,
                auto_register_policy_transforms=False,
            )
        self.load_state_dict(states)

    def _make_prefetch_collector(self, module) -> None:
        """``env.prefetch``: a TorchRL ``AsyncCollector``. Its worker process builds the envs (with the
        actor's primers) and collects the next batch as soon as a batch has been handed over; the
        actor's weights are pushed to it at that moment (``update_at_each_batch``). The envs' random
        streams live in the worker, so a checkpoint cannot hold them: the worker's env seed is derived
        from the run seed and the frames trained so far, and a resumed run draws new tasks."""
        factory = self.env_factory
        rank = self.trainer.global_rank if self.trainer else 0
        make = functools.partial(factory.make, factory.num_envs, seed=self.seed, rank=rank)
        primers = module.agent.primers if module is not None else []
        self.collector = AsyncCollector(
            functools.partial(_env_with_primers, make, primers),
            module.actor if module is not None else None,
            frames_per_batch=factory.num_envs * self.trial_steps,
            total_frames=-1,
            reset_at_each_iter=True,
            split_trajs=False,
            env_device="cpu",
            policy_device=self.device,
            storing_device=self.device,
            update_at_each_batch=module is not None,
            num_threads=torch.get_num_threads(),  # the training process keeps its threads (TorchRL would take one)
            auto_register_policy_transforms=False,
        )
        # TorchRL seeds the worker's env (its task and dynamics streams) and torch (action sampling)
        self.collector.set_seed(self.prefetch_seed(int(module.frames) if module is not None else 0, rank))

    def prefetch_seed(self, frames: int, rank: int = 0) -> int:
        """The seed of the prefetch worker's env and torch streams: from the run seed, the rank and the
        frames trained so far (a resumed run continues on new streams, not on the first run's again)."""
        return derive_seed(self.seed, "prefetch", rank, frames)

    def batches(self):
        """An iterator over the collector's batches: a new one per epoch, except with ``env.prefetch``,
        whose one iterator lives as long as the collector (each new one would send the worker one more
        request, and a batch more would wait in the queue at every epoch)."""
        if not self.env_factory.prefetch:
            return iter(self.collector)
        if self._batches is None:
            self._batches = iter(self.collector)
        return self._batches

    @property
    def parallel(self) -> bool:
        """Whether the trial envs run in worker processes (``env.workers > 1``: TorchRL ``ParallelEnv``;
        ``env.prefetch``: the ``AsyncCollector``'s worker), where an engine failure ends the worker."""
        if self.env_factory.prefetch:
            return True
        return self.env is not None and isinstance(self.env.base_env, ParallelEnv)

    def rebuild(self, states: dict[str, Any]) -> None:
        """New env and collector after an engine failure, the envs' random streams set to ``states``."""
        self.teardown()
        self.env = self._make_env()
        self.load_state_dict(states)
        self._make_collector()

    def train_dataloader(self) -> DataLoader:
        """The collector is built here, once the module sits on its device, so it runs the module's own actor."""
        if self.collector is None:
            self._make_collector()
        # Its own generator: a DataLoader draws a base seed from the generator at every iter(), which would
        # move torch's global stream when Lightning restarts an epoch (a run resumed mid-epoch).
        return DataLoader(
            TrialBatches(self, self.iterations_per_epoch), batch_size=None, num_workers=0, collate_fn=_as_is,
            generator=torch.Generator(),
        )

    def teardown(self, stage: str | None = None) -> None:  # noqa: D102
        if self.collector is not None:
            # the prefetch worker's envs close with it; the others are closed below
            self.collector.shutdown(close_env=self.env_factory.prefetch, raise_on_error=False)
            self.collector = None
        self._batches = None
        if self.env is not None:  # also after a failure, when the collector has dropped it already
            try:
                self.env.close(raise_if_closed=False)
            except RuntimeError as err:  # a ParallelEnv whose worker died: TorchRL stops the others and says so
                log.warning("closing the envs after a worker failure: %s", err)
        self.env = None

    # Random streams of the envs (dynamics and task draws), saved in checkpoints so that a resumed run
    # draws the same tasks; with env.workers > 1, one entry per worker process, fetched through ParallelEnv.
    def state_dict(self) -> dict[str, Any]:  # noqa: D102
        if self.env is None:  # also with env.prefetch: the streams live in the collector's worker
            return {}
        base = self.env.base_env
        if self.parallel:
            if base.is_closed:
                base.start()
            return {"workers": base.rng_state()}
        return base.rng_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:  # noqa: D102
        if state_dict and self.env_factory.prefetch:
            log.warning("env.prefetch: the checkpoint's env random streams are not restored (the envs live in "
                        "the collector's worker); this run draws new tasks from a seed derived from its frames")
            return
        if not state_dict or self.env is None:
            return
        base = self.env.base_env
        if "simulator_rng" in state_dict:  # checkpoints written before the per-worker format
            state_dict = {"simulator": state_dict["simulator_rng"], "tasks": state_dict["task_rng"]}
        if self.parallel:
            workers = state_dict.get("workers")
            if workers is None or len(workers) != base.num_workers:
                raise ValueError(
                    f"env.workers={base.num_workers} differs from the checkpoint's "
                    f"({len(workers) if workers else 1}); resume with the same env.workers"
                )
            if base.is_closed:
                base.start()
            base.set_rng_state(workers)
        elif "workers" in state_dict:
            raise ValueError(
                f"the checkpoint was written with env.workers={len(state_dict['workers'])}; resume with the same env.workers"
            )
        else:
            base.set_rng_state(state_dict)
