"""RL² agents: input encoder -> GRU (or MLP ablation) -> categorical policy head / value head.

The paper uses separate GRUs for the policy and the value function on bandits and MDPs (the default
here), and one shared trunk for mazes (``shared_trunk=True``). ``architecture="mlp"`` is the seed
notebook's memoryless ablation: the same encoder followed by a feed-forward layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn
from torchrl.envs import EnvBase, TensorDictPrimer
from torchrl.modules import GRUModule, ProbabilisticActor
from torch.distributions import Categorical

from rl2_lightning.models.encoders import INPUT_KEYS, PixelInputEncoder, TrialInputEncoder

ARCHITECTURES = ("gru", "mlp")
INITS = ("default", "orthogonal")


@dataclass
class Agent:
    """The networks of one agent.

    Attributes:
        actor: ``ProbabilisticActor`` writing ``action``, ``logits`` and ``action_log_prob``.
        critic: value module writing ``state_value``.
        primers: env transforms that register the recurrent states the actor carries from step to
            step (empty for the MLP ablation). The critic is only run over whole trials in the loss,
            so its GRU starts from zeros there and needs no primer.
    """

    actor: TensorDictSequential
    critic: TensorDictSequential
    primers: list[TensorDictPrimer]


def _trunk(
    name: str, obs_shape: tuple, num_actions: int, architecture: str, embed: int, hidden: int, layer_norm: bool
):
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
    memory_out = f"memory_{name}" if layer_norm else f"features_{name}"
    if architecture == "gru":
        gru = GRUModule(
            input_size=embed,
            hidden_size=hidden,
            in_keys=[f"embed_{name}", f"recurrent_state_{name}"],
            out_keys=[memory_out, ("next", f"recurrent_state_{name}")],
        )
        return [encoder, gru, *norm], f"features_{name}", [gru.make_tensordict_primer()]
    mlp = TensorDictModule(
        nn.Sequential(nn.Linear(embed, hidden), nn.ReLU()), in_keys=[f"embed_{name}"], out_keys=[memory_out]
    )
    return [encoder, mlp, *norm], f"features_{name}", []


class _LayerNormed(nn.Module):
    """A multi-input encoder followed by LayerNorm over its output."""

    def __init__(self, net: nn.Module, size: int):
        super().__init__()
        self.net, self.norm = net, nn.LayerNorm(size)

    def forward(self, *inputs):  # noqa: D102
        return self.norm(self.net(*inputs))


def orthogonal_init(trunk: nn.Module, head: nn.Linear, head_gain: float) -> None:
    """Orthogonal weights and zero biases (the usual PPO initialisation): gain sqrt(2) for the ReLU
    layers, 1 for the recurrent matrices (each gate's block on its own), ``head_gain`` for the output
    layer (small for the policy, so that it starts near uniform)."""
    for module in trunk.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(module.weight, gain=2**0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.GRU):
            for pname, param in module.named_parameters():
                if pname.startswith("weight"):
                    for block in param.data.chunk(3, 0):
                        nn.init.orthogonal_(block)
                else:
                    nn.init.zeros_(param)
    nn.init.orthogonal_(head.weight, gain=head_gain)
    nn.init.zeros_(head.bias)


def make_agent(
    env: EnvBase,
    architecture: str = "gru",
    hidden_size: int = 256,
    embed_size: int = 256,
    shared_trunk: bool = False,
    layer_norm: bool = False,
    init: str = "default",
) -> Agent:
    """Build actor and critic for a trial env from its specs.

    Args:
        env: a trial env (its ``observation`` and ``action`` specs size the networks).
        architecture: ``"gru"`` (RL²) or ``"mlp"`` (memoryless ablation).
        hidden_size: GRU units (256 in the paper).
        embed_size: size of the input-tuple embedding.
        shared_trunk: one encoder+GRU for both heads (the paper's maze agent) instead of two.
        layer_norm: LayerNorm on the memory's input and output.
        init: ``"default"`` (PyTorch's) or ``"orthogonal"`` (see :func:`orthogonal_init`).
    """
    if architecture not in ARCHITECTURES:
        raise ValueError(f"model.architecture={architecture!r} is unknown; allowed: {', '.join(ARCHITECTURES)}")
    if init not in INITS:
        raise ValueError(f"model.init={init!r} is unknown; allowed: {', '.join(INITS)}")
    obs_shape = tuple(env.observation_spec["observation"].shape[len(env.batch_size) :])
    num_actions = env.action_spec.space.n
    args = (obs_shape, num_actions, architecture, embed_size, hidden_size, layer_norm)

    actor_trunk, actor_features, primers = _trunk("actor", *args)
    if shared_trunk:
        critic_trunk, critic_features = actor_trunk, actor_features
    else:
        critic_trunk, critic_features, _ = _trunk("critic", *args)

    policy_head = TensorDictModule(nn.Linear(hidden_size, num_actions), in_keys=[actor_features], out_keys=["logits"])
    value_head = TensorDictModule(nn.Linear(hidden_size, 1), in_keys=[critic_features], out_keys=["state_value"])
    if init == "orthogonal":
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
