"""Stop cleanly on SIGTERM (preemption) or Ctrl-C: finish the current iteration, checkpoint, exit.

Lightning notices SIGTERM itself (``trainer.received_sigterm``) but acts on it only at the end of the
epoch, which a preempted job may not live to see; and a Ctrl-C raised inside TorchRL's PPO loss
surfaces as an unrelated ``RuntimeError``. Here the first Ctrl-C only raises a flag
(a second one interrupts at once, as usual); after the iteration in progress, a flag on any rank stops
every rank: ``last.ckpt`` is saved at that iteration boundary (after an epoch's last iteration the
epoch first ends as usual, with its meta-test and checkpoint) and the process exits with 143 (SIGTERM)
or 130 (Ctrl-C). Resuming from it with ``ckpt_path=latest`` continues the epoch where it stopped and
gives the same parameters as a run never stopped (tested). Lightning's ``OnExceptionCheckpoint`` is not
used: it saves wherever the exception lands, in the middle of a PPO update.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from lightning import Callback, LightningModule, Trainer

from rl2_lightning.runs import say


class TrainingStopped(SystemExit):
    """Raised after the stop checkpoint is written; exits with the shell's code for the signal."""


class GracefulStop(Callback):
    """Checkpoint at the next iteration boundary on SIGTERM or Ctrl-C, then stop.

    Args:
        run_dir: the run directory (``last.ckpt`` goes to its ``checkpoints/``).
    """

    def __init__(self, run_dir: str | Path):
        self.dirpath = Path(run_dir) / "checkpoints"
        self.interrupted = False
        #: the cause of a stop under way ("SIGTERM" or "Ctrl-C"), None while training goes on
        self.stopping: str | None = None
        self._previous = None

    def _on_sigint(self, signum, frame) -> None:
        if self.interrupted:  # second Ctrl-C: stop now, without a checkpoint, with the shell's status for it
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)
            say("second Ctrl-C: stopping now, without a checkpoint; ckpt_path=latest resumes the last one")
            raise TrainingStopped(130)
        self.interrupted = True
        say("Ctrl-C: stopping after this iteration and saving a checkpoint (press Ctrl-C again to stop now)")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self.interrupted, self.stopping = False, None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:  # noqa: D102
        self._restore()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args) -> None:  # noqa: D102
        sigterm = bool(getattr(trainer, "received_sigterm", False))
        local = sigterm or self.interrupted
        stop = trainer.strategy.reduce_boolean_decision(local, all=False) if trainer.world_size > 1 else local
        if not stop or self.stopping:
            return
        self.stopping = "SIGTERM" if sigterm or not self.interrupted else "Ctrl-C"
        batch = trainer.fit_loop.epoch_loop.batch_idx + 1
        if batch >= trainer.num_training_batches:
            # The epoch's last iteration: let the epoch end as usual (meta-test, LR step, checkpoint), so
            # that the resumed run starts the next epoch exactly as an uninterrupted one would.
            say(f"{self.stopping}: stopping at the end of epoch {trainer.current_epoch}, after its checkpoint; "
                "resume with ckpt_path=latest")
            trainer.should_stop = True
            return
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path, weights_only=False)  # the full state; explicit, or Lightning logs its default
        say(f"{self.stopping}: stopped after iteration {batch} of epoch {trainer.current_epoch}; saved {path}; "
            "resume with ckpt_path=latest")
        raise TrainingStopped(self.code)

    @property
    def code(self) -> int:
        """The shell's exit status for the signal that stopped the run."""
        return 143 if self.stopping == "SIGTERM" else 130

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:  # noqa: D102
        self._restore()
        if self.stopping:
            raise TrainingStopped(self.code)
