"""Components from config (rl2_lightning/components.py): checks by signature, and new parts by config alone."""

from __future__ import annotations

import dataclasses
from enum import Enum
from typing import Annotated, Optional

import pytest
import torch
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from tensordict import TensorDict
from trainkit import compose_cfg

from rl2_lightning.components import Range, check
from rl2_lightning.envs.trial import TaskSimulator
from rl2_lightning.models import GRUMemory


class Colour(Enum):
    red = "red"
    blue = "blue"


class Widget:
    """A toy component: every kind of argument the checker types."""

    def __init__(self, size: Annotated[int, Range(1, 10)], rate: Annotated[float, Range(0.0, None, low_open=True)] = 1.0,
                 colour: Colour = Colour.red, label: Optional[str] = None, child=None):
        self.size, self.rate, self.colour, self.label, self.child = size, rate, Colour(colour), label, child


def node(**values):
    return OmegaConf.create({"_target_": f"{__name__}.Widget", **values})


def test_a_good_node_passes_and_builds():
    cfg = node(size=3, rate=2, colour="blue", child={"_target_": f"{__name__}.Widget", "size": 1})
    check(cfg, "widget")
    from hydra.utils import instantiate

    built = instantiate(cfg)
    assert (built.size, built.rate, built.colour, built.child.size) == (3, 2, Colour.blue, 1)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"size": 3, "sise": 2}, r"widget\.sise is not an argument of .*Widget; it takes: size, rate, colour, label, child"),
        ({"size": "big"}, r"widget\.size: Value 'big' of type 'str' could not be converted to Integer"),
        ({"size": 11}, r"widget\.size=11 is not allowed; it must be in \[1, 10\]"),
        ({"size": 0}, r"widget\.size=0 is not allowed"),
        ({"size": 2, "rate": 0}, r"widget\.rate=0\.0 is not allowed; it must be > 0"),
        ({"size": 2, "colour": "green"}, r"widget\.colour: Invalid value 'green', expected one of \[red, blue\]"),
        ({"size": 2, "child": {"_target_": f"{__name__}.Widget", "size": 20}}, r"widget\.child\.size=20 is not allowed"),
    ],
)
def test_bad_nodes_fail_naming_the_full_key(values, message):
    with pytest.raises(ValueError, match=message):
        check(node(**values), "widget")


def test_an_unimportable_target_fails_in_one_line():
    with pytest.raises(ValueError, match=r"_target_: nowhere\.Thing cannot be imported"):
        check(OmegaConf.create({"_target_": "nowhere.Thing"}), "env")


def test_range_describes_itself():
    assert Range(0, 1).describe() == "in [0, 1]"
    assert Range(0, None, low_open=True).describe() == "> 0"
    assert Range(1).describe() == ">= 1"
    Range(0, 1).check("k", None)  # unset optional values pass


# ---------------------------------------------------------------------- a new family and a new memory
class GuessTheSide(TaskSimulator):
    """A task is a hidden side, 0 or 1; each one-step episode pays 1 for guessing it. RL² can learn to
    guess at random first and then repeat what paid."""

    num_actions = 2
    observation_shape = (1,)
    max_episode_steps = fixed_episode_steps = 1

    def __init__(self, num_envs: int, device="cpu"):
        super().__init__(num_envs, device)
        self.side = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    @property
    def distribution(self) -> str:
        return "guess_the_side"

    def sample_tasks(self, n, generator):
        return TensorDict({"side": torch.randint(2, (n,), generator=generator, device=generator.device)}, [n])

    def set_tasks(self, tasks, mask):
        self.side[mask] = tasks["side"].to(self.device)

    def reset_episodes(self, mask):
        pass

    def step(self, action):
        return (action == self.side).float(), torch.ones_like(self.side, dtype=torch.bool)

    def observation(self):
        return torch.zeros(self.num_envs, 1, device=self.device)


class TwoLayerGRU(GRUMemory):
    """A new memory: a two-layer GRU."""

    def __init__(self, input_size, hidden_size, in_key, out_key, name, max_steps):
        super().__init__(input_size, hidden_size, in_key, out_key, name, max_steps, num_layers=2)


def register_new_parts() -> None:
    """What a user adds: one class each (above) and one config node each (here, in Hydra's store)."""
    store = ConfigStore.instance()
    store.store(group="env", name="guess_the_side", node={
        "_target_": "rl2_lightning.envs.TrialEnvFactory",
        "simulator": {"_target_": f"{__name__}.GuessTheSide", "_partial_": True},
        "episodes_per_trial": 4, "num_envs": 16,
    })
    store.store(group="model", name="two_layer_gru", node={
        "_target_": "rl2_lightning.models.make_agent", "_partial_": True,
        "memory": {"_target_": f"{__name__}.TwoLayerGRU", "_partial_": True},
        "hidden_size": 16, "embed_size": 16,
    })


def test_a_family_and_a_memory_registered_through_config_alone_train(tmp_path):
    from rl2_lightning.train import train

    register_new_parts()
    # no preset (the default one sets bandit sizes): a new family brings its own, or runs without
    cfg = compose_cfg(["~conf", "experiment=guess", "env=guess_the_side", "model=two_layer_gru",
                       "callbacks.metatest=null", f"runs_dir={tmp_path}"])
    out = train(cfg)
    module = out["module"]
    assert module.env.simulator_class is GuessTheSide
    assert module.agent.actor.module[0][1].gru.num_layers == 2  # the new memory is the one that trained
    assert int(module.frames) == 2 * 2 * 8 * 4  # epochs x iterations x trials (the tiny runs' 8) x steps


def test_a_new_part_is_checked_like_the_built_in_ones():
    register_new_parts()
    with pytest.raises(ValueError, match=r"env\.simulator\.sides is not an argument of .*GuessTheSide"):
        compose_cfg(["~conf", "experiment=guess", "env=guess_the_side", "+env.simulator.sides=3"])


def test_fields_of_the_schema_are_dataclass_fields():
    """The checker's schema is built from the signature: a sanity check of that machinery."""
    from rl2_lightning.components import signature_of

    params, hints, var_kw = signature_of(Widget)
    assert list(params) == ["size", "rate", "colour", "label", "child"] and not var_kw
    assert hints["colour"] is Colour
    assert dataclasses.is_dataclass(dataclasses.make_dataclass("X", [("a", int)]))
