"""Policy-optimisation algorithms over batches of whole trials (``algo=ppo`` or ``algo=trpo``).

Each is a :class:`~rl2_lightning.algos.base.TrialAlgorithm`: GAE over whole trials, then its own
``update``. A new algorithm is one subclass and one ``conf/algo/<name>.yaml``.
"""

from rl2_lightning.algos.base import LRSchedule, TrialAlgorithm, UpdateContext
from rl2_lightning.algos.ppo import PPO, GradClip
from rl2_lightning.algos.trpo import TRPO

__all__ = ["PPO", "TRPO", "GradClip", "LRSchedule", "TrialAlgorithm", "UpdateContext"]
