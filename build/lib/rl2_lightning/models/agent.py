"""RL² agents: input encoder -> memory -> categorical policy head / value head.

The memory is a component (:mod:`rl2_lightning.models.memory`): :class:`GRUMemory` (RL², the
default), :class:`LSTMMemory`, :class:`TransformerMemory`, or :class:`MLPMemory` (the seed
notebook's memoryless ablation). The paper uses separate networks for the policy and the value
function on bandits and MDPs (the default here), and one shared trunk for mazes (``shared_trunk=True``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Callable, Optional

import torch
from tensordict.nn import TensorDictModule, TensorDictModuleBase, TensorDictSequential
from torch import nn
from torch.distributions import Categorical
from torchrl.envs import EnvBase, TensorDictPrimer
from torchrl.modules import ProbabilisticActor

from rl2_lightning.components import Range
from rl2_lightning.models.encoders import INPUT_KEYS, PixelInputEncoder, TrialInputEncoder
from rl2_lightning.models.memory import GRUMemory, LSTMMemory, MLPMemory, TransformerMemory

_MEMORIES = (GRUMemory, LSTMMemory, TransformerMemory, MLPMemory)  # named in errors


class Init(Enum):
    """Weight initialisation: PyTorch's ``default`` or ``orthogonal`` (see :func:`orthogonal_init`)."""

    default = "default"
    orthogonal = "orthogonal"


@dataclass
class Agent:
    """The networks of one agent.

    Attributes:
        actor: ``ProbabilisticActor`` writing ``action``, ``logits`` and ``action_log_prob``.
        critic: value module writing ``state_value``.
        primers: env transforms that register the state the actor's memory carries from step to step
            (empty for the MLP ablation). The critic is only run over whole trials in the loss, so
            its memory starts from zeros there and needs no primer.
    """

    actor: TensorDictSequential
    critic: TensorDictSequential
    primers: list[TensorDictPrimer]

    def attach_to(self, env: EnvBase) -> EnvBase:
        """Append clones of the primers to ``env``; returns the env to use (a ``TransformedEnv``
        stays the same object, a bare env comes back wrapped)."""
        for primer in self.primers:
            env = env.append_transform(primer.clone())
        return env


def _trunk(name: str, obs_shape: tuple, num_actions: int, memory: Callable, embed: int, hidden: int,
           layer_norm: bool, max_steps: int):
    """Encoder + memory for one network; returns (modules, output key, primers).

    Image observations (``[C, H, W]``) get the paper's convolutional encoder, vectors a linear one.
    With ``layer_norm`` the memory's input and output are layer-normalised.
    """
    if len(obs_shape) == 3:
        net = PixelInputEncoder(tuple(obs_shape), num_actions, embed)
    else:
        net = TrialInputEncoder(int(torch.Size(obs_shape).numel()), num_actions, embed)
    if layer_norm:
        net = _LayerNormed(net, embed)
    encoder = TensorDictModule(net, in_keys=list(INPUT_KEYS), out_keys=[f"embed_{name}"])
    norm = []
    if layer_norm:
        norm = [TensorDictModule(nn.LayerNorm(hidden), in_keys=[f"memory_{name}"], out_keys=[f"features_{name}"])]
    mem = memory(
        input_size=embed, hidden_size=hidden, in_key=f"embed_{name}",
        out_key=f"memory_{name}" if layer_norm else f"features_{name}", name=name, max_steps=max_steps,
    )
    if not isinstance(mem, TensorDictModuleBase) or not hasattr(mem, "make_tensordict_primers"):
        raise ValueError(f"model.memory={memory!r} built {type(mem).__name__}, not a memory module")
    return [encoder, mem, *norm], f"features_{name}", list(mem.make_tensordict_primers())


class _LayerNormed(nn.Module):
    """A multi-input encoder followed by LayerNorm over its output."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net, self.norm = net, nn.LayerNorm(size)

    def forward(self, *inputs):  # noqa: D102
        return self.norm(self.net(*inputs))


#: gate blocks stacked in the weights of each recurrent layer type (``nn.RNNBase.mode``)
_GATES = {"LSTM": 4, "GRU": 3}


def orthogonal_init(trunk: nn.Module, head: nn.Linear, head_gain: float) -> None:
    """Orthogonal weights and zero biases (the usual PPO initialisation): gain sqrt(2) for every
    Linear and Conv2d of the trunk (a transformer's projections and MLPs included), 1 for the
    recurrent matrices (each gate's block on its own: 3 for a GRU, 4 for an LSTM), ``head_gain``
    for the output layer (small for the policy, so that it starts near uniform). LayerNorms keep
    their (1, 0) start."""
    for module in trunk.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(module.weight, gain=2**0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.RNNBase):
            gates = _GATES.get(module.mode, 1)
            for pname, param in module.named_parameters():
                if pname.startswith("weight"):
                    for block in param.data.chunk(gates, 0):
                        nn.init.orthogonal_(block)
                else:
                    nn.init.zeros_(param)
    nn.init.orthogonal_(head.weight, gain=head_gain)
    nn.init.zeros_(head.bias)


def _memory_class(memory) -> type:
    """The class a memory argument builds (through any ``functools.partial``), or a clear error."""
    cls = memory
    while isinstance(cls, functools.partial):
        cls = cls.func
    is_module = isinstance(cls, type) and issubclass(cls, TensorDictModuleBase)
    if not (is_module and hasattr(cls, "make_tensordict_primers")):
        names = ", ".join(c.__name__ for c in _MEMORIES)
        raise ValueError(
            f"model.memory={memory!r} is not a memory: pass one of {names} (the class, or a "
            "functools.partial of it with its own hyperparameters)"
        )
    return cls


def _env_max_steps(env: EnvBase) -> int:
    """Steps between two resets of a trial env: ``trial_steps`` times ``trials_per_reset``."""
    for e in (env, getattr(env, "base_env", None)):
        steps = getattr(e, "trial_steps", None)
        if isinstance(steps, int):
            return steps * int(getattr(e, "trials_per_reset", 1))
    raise ValueError(f"make_agent: {type(env).__name__} has no trial_steps; pass max_steps")


def make_agent(
    env: EnvBase,
    memory: Callable = GRUMemory,
    hidden_size: Annotated[int, Range(1)] = 256,
    embed_size: Annotated[int, Range(1)] = 256,
    shared_trunk: bool = False,
    layer_norm: bool = False,
    init: Init = Init.default,
    max_steps: Optional[int] = None,
) -> Agent:
    """Build actor and critic for a trial env from its specs.

    Args:
        env: a trial env (its ``observation`` and ``action`` specs size the networks).
        memory: a memory class (:class:`GRUMemory`, :class:`LSTMMemory`, :class:`TransformerMemory`,
            :class:`MLPMemory`) or a ``functools.partial`` of one with its own hyperparameters.
        hidden_size: the memory's output size (256 GRU units in the paper).
        embed_size: size of the input-tuple embedding.
        shared_trunk: one encoder+memory for both heads (the paper's maze agent) instead of two.
        layer_norm: LayerNorm on the memory's input and output.
        init: :class:`Init` or its name.
        max_steps: the longest sequence between two ``is_init`` resets; ``None`` reads it from the env
            (``trial_steps * trials_per_reset``).
    """
    _memory_class(memory)
    try:
        init = Init(init)
    except ValueError:
        allowed = ", ".join(i.value for i in Init)
        raise ValueError(f"model.init={init!r} is unknown; allowed: {allowed}") from None
    if max_steps is None:
        max_steps = _env_max_steps(env)
    obs_shape = tuple(env.observation_spec["observation"].shape[len(env.batch_size) :])
    num_actions = env.action_spec.space.n
    args = (obs_shape, num_actions, memory, embed_size, hidden_size, layer_norm, max_steps)

    actor_trunk, actor_features, primers = _trunk("actor", *args)
    if shared_trunk:
        critic_trunk, critic_features = actor_trunk, actor_features
    else:
        critic_trunk, critic_features, _ = _trunk("critic", *args)

    policy_head = TensorDictModule(nn.Linear(hidden_size, num_actions), in_keys=[actor_features], out_keys=["logits"])
    value_head = TensorDictModule(nn.Linear(hidden_size, 1), in_keys=[critic_features], out_keys=["state_value"])
    if init is Init.orthogonal:
        orthogonal_init(nn.ModuleList(actor_trunk), policy_head.module, 0.01)
        if not shared_trunk:
            orthogonal_init(nn.ModuleList(critic_trunk), value_head.module, 1.0)
        else:
            nn.init.orthogonal_(value_head.module.weight)
            nn.init.zeros_(value_head.module.bias)
    actor = ProbabilisticActor(
        TensorDictSequential(*actor_trunk, policy_head),
        in_keys=["logits"],
        out_keys=["action"],
        distribution_class=Categorical,
        return_log_prob=True,
        spec=env.action_spec,
    )
    critic = TensorDictSequential(*critic_trunk, value_head)
    return Agent(actor=actor, critic=critic, primers=primers)
