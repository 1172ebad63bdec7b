"""Classical baselines of the paper's Tables 1 and 2, batched over tasks and scored like RL².

* bandits (:mod:`~rl2_lightning.baselines.bandit`): Random, Gittins, TS, OTS, UCB1, ε-greedy, greedy;
* tabular MDPs (:mod:`~rl2_lightning.baselines.mdp`): Random, PSRL, OPSRL, UCRL2, BEB, ε-greedy, greedy.

Hyperparameters tuned on the tuning task sets live in ``conf/baselines/<setting>.yaml``
(:mod:`~rl2_lightning.baselines.tune`); :mod:`rl2_lightning.evaluate` scores them on the held-out sets.
"""

from rl2_lightning.baselines.bandit import BANDIT_BASELINES, make_bandit_baseline
from rl2_lightning.baselines.common import Baseline, RandomPolicy
from rl2_lightning.baselines.mdp import TABULAR_BASELINES, make_tabular_baseline

__all__ = ["BANDIT_BASELINES", "TABULAR_BASELINES", "Baseline", "RandomPolicy", "make_bandit_baseline", "make_tabular_baseline"]
