"""A tiny training run that hurts itself at a chosen point (run as a script by tests/test_faults.py).

    python tests/faultkit.py <fault> <override> ...

faults: ``kill9-after-metatest`` (SIGKILL at the end of epoch 1, after its meta-test row and before
its checkpoint), ``sigterm:<iteration>`` / ``sigint:<iteration>`` (the signal arrives inside the first
PPO update of that iteration, counted from 0, of epoch 1), ``group-sigint-metatest`` (SIGINT to the whole
process group, engines included, as a terminal sends it, while epoch 1's meta-test plays), ``none``.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lightning as L  # noqa: E402
from trainkit import compose_cfg  # noqa: E402

from rl2_lightning.train import train  # noqa: E402


class Fault(L.Callback):
    """Sends the fault's signal to this process at its point."""

    def __init__(self, fault: str):
        self.fault = fault

    def on_train_epoch_end(self, trainer, pl_module):  # runs after the meta-test, before ModelCheckpoint
        if self.fault == "kill9-after-metatest" and trainer.current_epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # inside a PPO update
        name, _, batch = self.fault.partition(":")
        sig = {"sigterm": signal.SIGTERM, "sigint": signal.SIGINT, "sigint2": signal.SIGINT}.get(name)
        loop = trainer.fit_loop.epoch_loop
        if name == "sigint2" and getattr(self, "sent", False):  # the impatient user: Ctrl-C again, next update
            os.kill(os.getpid(), sig)
        if sig and trainer.current_epoch == 1 and loop.batch_idx == int(batch) and not getattr(self, "sent", False):
            self.sent = True
            os.kill(os.getpid(), sig)


def signal_group_during_metatest() -> None:
    """Make epoch 1's meta-test send SIGINT to this process's whole group once its trials are under way."""
    from rl2_lightning.callbacks import MetaTestCallback
    from rl2_lightning.evaluation import scoring

    real = scoring.play_trials
    state = {"epoch": 0, "sent": False}

    def play_and_interrupt(env, policy, max_steps, exploration=scoring.ExplorationType.RANDOM):
        if state["epoch"] == 1 and not state["sent"]:
            state["sent"] = True
            env.reset()  # the engines are running
            os.killpg(os.getpgrp(), signal.SIGINT)
        return real(env, policy, max_steps, exploration)

    evaluate = MetaTestCallback.evaluate

    def counted(self, pl_module):
        state["epoch"] = pl_module.trainer.current_epoch
        return evaluate(self, pl_module)

    scoring.play_trials = play_and_interrupt
    MetaTestCallback.evaluate = counted


if __name__ == "__main__":
    fault, overrides = sys.argv[1], sys.argv[2:]
    if fault == "group-sigint-metatest":
        signal_group_during_metatest()
    train(compose_cfg(overrides), extra_callbacks=[Fault(fault)])
