"""A tiny training run that hurts itself at a chosen point (run as a script by tests/test_faults.py).

    python tests/faultkit.py <fault> <override> ...

faults: ``kill9-after-metatest`` (SIGKILL at the end of epoch 1, after its meta-test row and before
its checkpoint), ``sigterm:<iteration>`` / ``sigint:<iteration>`` (the signal arrives inside the first
PPO update of that iteration, counted from 0, of epoch 1), ``none``.
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


if __name__ == "__main__":
    fault, overrides = sys.argv[1], sys.argv[2:]
    train(compose_cfg(overrides), extra_callbacks=[Fault(fault)])
