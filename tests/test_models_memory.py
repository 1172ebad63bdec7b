"""Memories (rl2_lightning/models/memory.py): step by step equals whole trials, resets, the
transformer's KV cache, initialisation."""

from __future__ import annotations

import functools

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import set_recurrent_mode

from rl2_lightning.envs import make_trial_env
from rl2_lightning.models import GRUMemory, Init, LSTMMemory, MLPMemory, NormReLUGRUMemory, TransformerMemory, make_agent

pytestmark = pytest.mark.usefixtures("one_thread")

MEMORIES = {
    "gru": GRUMemory,
    "lstm": LSTMMemory,
    "transformer": functools.partial(TransformerMemory, num_layers=2, num_heads=2),
    "mlp": MLPMemory,
    "gru_norm_relu": NormReLUGRUMemory,
}


def tabular(num_envs=4, **kwargs):
    """Trials of 3 episodes x 10 steps."""
    return make_trial_env("tabular", num_envs, 3, num_states=10, num_actions=5, episode_steps=10, **kwargs)


def play(env, agent, steps):
    with torch.no_grad(), set_exploration_type(ExplorationType.RANDOM):
        return env.rollout(steps, agent.actor, break_when_any_done=False)


def replay(agent, rollout):
    with torch.no_grad(), set_recurrent_mode(True):
        return agent.actor(rollout.clone())


@pytest.mark.parametrize("name", MEMORIES)
def test_step_by_step_equals_whole_trial_mode(name):
    env = tabular()
    agent = make_agent(env, memory=MEMORIES[name], hidden_size=16, embed_size=8)
    env = agent.attach_to(env)
    torch.manual_seed(0)
    rollout = play(env, agent, 45)  # a trial of 30 steps, then half of the next one
    assert rollout["is_init"][:, 0].all() and rollout["is_init"][:, 30].all()
    torch.testing.assert_close(replay(agent, rollout)["logits"], rollout["logits"], atol=1e-5, rtol=0)
    if name == "transformer":  # the KV cache grew to the trial's 30 steps and no further
        assert agent.actor.module[0][1]._cache.keys.shape[3] == 30


def memory_td(x, is_init):
    return TensorDict({"x": x, "is_init": is_init.unsqueeze(-1)}, batch_size=x.shape[:2])


def one_step(memory, x, is_init):
    return memory(TensorDict({"x": x, "is_init": is_init.unsqueeze(-1)}, batch_size=x.shape[:1]))["y"]


def transformer(max_steps=12, **kwargs):
    torch.manual_seed(0)
    kwargs = {"num_layers": 2, "num_heads": 2, **kwargs}
    return TransformerMemory(6, 8, "x", "y", "actor", max_steps, **kwargs)


def test_transformer_attends_only_after_an_is_init_inside_a_row():
    memory = transformer()
    x = torch.randn(3, 10, 6)
    is_init = torch.zeros(3, 10, dtype=torch.bool)
    is_init[:, 0] = is_init[:, 4] = True
    with torch.no_grad(), set_recurrent_mode(True):
        out = memory(memory_td(x, is_init))
        first = memory(memory_td(x[:, :4], is_init[:, :4]))["y"]
        second = memory(memory_td(x[:, 4:], is_init[:, 4:]))["y"]
        through = memory(memory_td(x, is_init.index_fill(1, torch.tensor([4]), False)))["y"]
    torch.testing.assert_close(out["y"][:, :4], first)
    torch.testing.assert_close(out["y"][:, 4:], second)  # as the second segment alone: nothing leaks in
    assert not torch.allclose(through[:, 4:], second, atol=1e-3)  # without the reset it would
    positions = out["next", "memory_step_actor"].squeeze(-1)
    assert positions[0].tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 5, 6]


def test_transformer_cache_follows_the_batch_across_rollouts():
    """The same actor alternates between a collector-sized and a meta-test-sized batch."""
    small, large = tabular(2), tabular(5)
    agent = make_agent(small, memory=MEMORIES["transformer"], hidden_size=16, embed_size=8)
    small, large = agent.attach_to(small), agent.attach_to(large)
    torch.manual_seed(0)
    for env in (small, large, small):
        rollout = play(env, agent, 12)
        torch.testing.assert_close(replay(agent, rollout)["logits"], rollout["logits"], atol=1e-5, rtol=0)
    # nothing of the cache travels in the rollout: the memory's only per-step entry is its step count
    memory = agent.actor.module[0][1]
    assert rollout["memory_step_actor"].shape == (2, 12, 1)
    assert set(memory.state_dict()) == {k for k, _ in memory.named_parameters()}  # no cache, no table
    assert memory._cache.keys.shape[:4] == (2, 2, 2, 16)  # [layers, rows, heads, capacity]: for 2 rows


def test_transformer_refuses_a_stream_it_does_not_hold():
    memory = transformer()
    x, init = torch.randn(3, 6), torch.ones(3, 1, dtype=torch.bool)
    def step(x, init, **td):
        return memory(TensorDict({"x": x, "is_init": init, **td}, batch_size=x.shape[:1]))

    with torch.no_grad():
        out = step(x, init)
        with pytest.raises(RuntimeError, match="must start with a reset"):  # another batch size, mid-trial
            step(torch.randn(4, 6), torch.zeros(4, 1, dtype=torch.bool))
        with pytest.raises(RuntimeError, match="one stream"):  # a second call for the same step
            step(x, ~init, memory_step_actor=torch.zeros(3, 1, dtype=torch.long))
        step(x, ~init, memory_step_actor=out["next", "memory_step_actor"])  # the next step is fine
        memory.reset_cache()
        with pytest.raises(RuntimeError, match="must start with a reset"):
            step(x, ~init)


def test_transformer_runs_past_max_steps_with_a_warning():
    """A meta-test on longer trials than trained on (e.g. 5 maze episodes after training on 2)."""
    memory = transformer(max_steps=4)
    x = torch.randn(2, 10, 6)
    is_init = torch.zeros(2, 10, dtype=torch.bool)
    is_init[:, 0] = True
    with torch.no_grad(), pytest.warns(UserWarning, match="more than max_steps=4"):
        steps = [one_step(memory, x[:, t], is_init[:, t]) for t in range(10)]
        with set_recurrent_mode(True):
            whole = memory(memory_td(x, is_init))["y"]
    torch.testing.assert_close(torch.stack(steps, 1), whole)
    assert set(memory.state_dict()) == set(transformer(max_steps=4).state_dict())


def test_transformer_step_mode_with_gradients_enabled_matches():
    memory = transformer()
    x = torch.randn(2, 5, 6)
    is_init = torch.zeros(2, 5, dtype=torch.bool)
    is_init[:, 0] = True
    outs = [one_step(memory, x[:, t], is_init[:, t]) for t in range(5)]
    outs[-1].sum().backward()  # the cache is detached and copied: no in-place error
    with set_recurrent_mode(True):
        whole = memory(memory_td(x, is_init))["y"]
    torch.testing.assert_close(torch.stack(outs, 1), whole)


def test_max_steps_comes_from_the_env_and_spans_trials_per_reset():
    def max_steps(env, **kwargs):
        agent = make_agent(env, memory=TransformerMemory, hidden_size=8, embed_size=8, **kwargs)
        return agent.actor.module[0][1].max_steps, agent.critic.module[1].max_steps

    assert max_steps(tabular()) == (30, 30)
    assert max_steps(tabular(trials_per_reset=2)) == (60, 60)
    assert max_steps(tabular(), max_steps=7) == (7, 7)


def test_transformer_memory_lasts_across_trials_without_reset():
    env = tabular(2, trials_per_reset=2)
    agent = make_agent(env, memory=MEMORIES["transformer"], hidden_size=16, embed_size=8)
    env = agent.attach_to(env)
    rollout = play(env, agent, 60)
    assert rollout["is_init"].squeeze(-1).sum(1).tolist() == [1, 1]
    assert rollout["next", "memory_step_actor"][:, -1].squeeze(-1).tolist() == [60, 60]
    torch.testing.assert_close(replay(agent, rollout)["logits"], rollout["logits"], atol=1e-5, rtol=0)


def is_orthogonal(w, gain=1.0):
    w = w.detach()
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return torch.allclose(gram, gain**2 * torch.eye(gram.shape[0]), atol=1e-5)


def test_orthogonal_init_covers_lstm_gates_and_transformer_layers():
    env = tabular()
    torch.manual_seed(0)
    lstm_agent = make_agent(env, memory=LSTMMemory, hidden_size=16, embed_size=8, init="orthogonal")
    lstm = next(m for m in lstm_agent.actor.modules() if isinstance(m, nn.LSTM))
    for weight in (lstm.weight_hh_l0, lstm.weight_ih_l0):
        blocks = weight.chunk(4, 0)
        assert all(is_orthogonal(b) for b in blocks)  # each of the 4 gates on its own
    assert all((b == 0).all() for n, b in lstm.named_parameters() if n.startswith("bias"))
    torch.manual_seed(0)
    default = make_agent(env, memory=LSTMMemory, hidden_size=16, embed_size=8, init=Init.default)
    lstm = next(m for m in default.actor.modules() if isinstance(m, nn.LSTM))
    assert not is_orthogonal(lstm.weight_hh_l0.chunk(4, 0)[0])

    agent = make_agent(env, memory=MEMORIES["transformer"], hidden_size=16, embed_size=8,
                       init=Init.orthogonal)
    block = agent.critic.module[1].blocks[1]
    for linear in (block.qkv, block.proj, block.mlp[0], block.mlp[2], agent.critic.module[1].input):
        assert is_orthogonal(linear.weight, 2**0.5) and (linear.bias == 0).all()
    assert (block.norm1.weight == 1).all()  # LayerNorms are left alone


def test_unknown_init_and_bad_hyperparameters_are_rejected():
    env = tabular()
    with pytest.raises(ValueError, match="model.init='xavier' is unknown; allowed: default, orthogonal"):
        make_agent(env, init="xavier")
    with pytest.raises(ValueError, match="not a multiple of num_heads"):
        make_agent(env, memory=functools.partial(TransformerMemory, num_heads=3), hidden_size=16)
    with pytest.raises(TypeError, match="num_heads"):
        make_agent(env, memory=functools.partial(GRUMemory, num_heads=2))


def test_attach_to_appends_clones_and_returns_the_env():
    env = tabular()
    agent = make_agent(env, memory=LSTMMemory, hidden_size=8, embed_size=8)
    assert agent.attach_to(env) is env  # a TransformedEnv grows in place
    assert {"recurrent_state_h_actor", "recurrent_state_c_actor"} <= set(env.reset().keys())
    assert all(p.parent is None for p in agent.primers)  # the agent's own primers stay unattached
    bare = make_trial_env("bandit", 2, 3, num_arms=2, init_tracker=False)
    wrapped = agent.attach_to(bare)
    assert wrapped is not bare and "recurrent_state_h_actor" in wrapped.reset().keys()


def test_the_norm_relu_cell_against_hand_numbers():
    """Zero weights: every LayerNorm sees a constant vector and gives 0, so r = 1/2, z = σ(keep_bias) and the
    ReLU candidate is 0: the state decays by σ(keep_bias) per step. A negative pre-activation is cut to 0."""
    from rl2_lightning.models.memory import NormReLUGRU

    cell = NormReLUGRU(3, 4, keep_bias=1.0)
    with torch.no_grad():
        cell.weight_ih_l0.zero_()
        cell.weight_hh_l0.zero_()
    h0 = torch.tensor([[[1.0, -2.0, 0.5, 3.0]]])
    out, h1 = cell(torch.randn(1, 2, 3), h0)
    keep = torch.sigmoid(torch.tensor(1.0))
    torch.testing.assert_close(out[0, 0], keep * h0[0, 0])
    torch.testing.assert_close(h1[0, 0], keep**2 * h0[0, 0])
    # the candidate is a ReLU: with the input's candidate block making (+a, -a, +a, -a) before LayerNorm,
    # LN gives (+1, -1, +1, -1) (up to its epsilon), and the candidate is (1, 0, 1, 0)
    with torch.no_grad():
        cell.weight_ih_l0[8:12] = torch.tensor([[1.0, 0, 0], [-1.0, 0, 0], [1.0, 0, 0], [-1.0, 0, 0]])
    x = torch.tensor([[[2.0, 0.0, 0.0]]])
    out, _ = cell(x, torch.zeros(1, 1, 4))
    torch.testing.assert_close(out[0, 0], (1 - keep) * torch.tensor([1.0, 0.0, 1.0, 0.0]), atol=1e-4, rtol=0)


def test_the_norm_relu_cell_over_a_sequence_equals_stepping_it_and_a_mask_freezes_ended_trials():
    """The sequence pass takes the input's paths out of the time loop (one GEMM and normalisation for every
    step): it must equal feeding the steps one at a time, and a ``mask`` (TorchRL's, for trials split to
    different lengths) must hold each trial's state from its end on."""
    from rl2_lightning.models.memory import NormReLUGRU

    torch.manual_seed(3)
    cell = NormReLUGRU(5, 6, keep_bias=1.0)
    with torch.no_grad():  # LayerNorm affines away from their (1, 0) start: each block must meet its own
        for norm in [*cell.norm_x, *cell.norm_h]:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    x, h0 = torch.randn(3, 7, 5), torch.randn(1, 3, 6)
    whole, h_last = cell(x, h0)
    h, stepped = h0, []
    for t in range(7):
        out, h = cell(x[:, t : t + 1], h)
        stepped.append(out[:, 0])
    torch.testing.assert_close(whole, torch.stack(stepped, 1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h_last, h, rtol=1e-5, atol=1e-6)
    # and the docstring's equations, written out with each LayerNorm module on its own block
    h, reference = h0[0], []
    for t in range(7):
        x_r, x_z, x_n = (n(g) for n, g in zip(cell.norm_x, (x[:, t] @ cell.weight_ih_l0.T).split(6, -1)))
        h_r, h_z, h_n = (n(g) for n, g in zip(cell.norm_h, (h @ cell.weight_hh_l0.T).split(6, -1)))
        r, z = torch.sigmoid(x_r + h_r), torch.sigmoid(x_z + h_z + 1.0)
        n_ = torch.relu(x_n + r * h_n)
        h = (1 - z) * n_ + z * h
        reference.append(h)
    torch.testing.assert_close(whole, torch.stack(reference, 1), rtol=1e-5, atol=1e-5)
    lengths = torch.tensor([7, 4, 1])
    mask = torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)
    masked, h_masked = cell(x, h0, mask=mask)
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(masked[i, :n], whole[i, :n])
        assert torch.equal(masked[i, n:], masked[i, n - 1].expand_as(masked[i, n:]))
        torch.testing.assert_close(h_masked[0, i], whole[i, n - 1])


def _norm_relu_pair(compile, seed=4):
    """An eager NormReLUGRU and a compiled copy with the same (non-trivial) parameters."""
    from rl2_lightning.models.memory import NormReLUGRU

    torch.manual_seed(seed)
    eager = NormReLUGRU(5, 6, keep_bias=1.0)
    with torch.no_grad():
        for norm in [*eager.norm_x, *eager.norm_h]:
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    compiled = NormReLUGRU(5, 6, keep_bias=1.0, compile=compile)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled


def _assert_same_cell(eager, compiled, device="cpu"):
    """Same outputs, final state and gradients over whole masked trials, and when stepped one input at a time
    with batches of other sizes (acting)."""
    eager, compiled = eager.to(device), compiled.to(device)
    x, h0 = torch.randn(3, 7, 5, device=device), torch.randn(1, 3, 6, device=device)
    mask = torch.arange(7, device=device).unsqueeze(0) < torch.tensor([7, 4, 1], device=device).unsqueeze(1)
    for net in (eager, compiled):
        out, h = net(x, h0, mask=mask)
        (out.square().mean() + h.sum()).backward()
        net.result = (out.detach(), h.detach())
    torch.testing.assert_close(compiled.result, eager.result, rtol=1e-5, atol=1e-6)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    with torch.no_grad():
        for batch in (2, 5):
            h_e = h_c = torch.randn(1, batch, 6, device=device)
            for t in range(3):
                step = torch.randn(batch, 1, 5, device=device)
                (out_e, h_e), (out_c, h_c) = eager(step, h_e), compiled(step, h_c)
                torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)


def test_the_compiled_norm_relu_step_equals_the_eager_one():
    """``model.memory.compile`` runs the same step through torch.compile: ``aot_eager`` traces it into
    graphs (forward and backward) without code generation, so this runs with or without a C++ compiler."""
    eager, compiled = _norm_relu_pair("aot_eager")
    assert eager.compile_backend is None and compiled.compile_backend == "aot_eager"
    _assert_same_cell(eager, compiled)
    from rl2_lightning.models.memory import _COMPILED_STEPS

    assert "aot_eager" in _COMPILED_STEPS  # the compiled function ran, not the eager one


@pytest.mark.gpu
def test_the_inductor_compiled_norm_relu_step_equals_the_eager_one_on_a_gpu():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    _assert_same_cell(*_norm_relu_pair(True), device="cuda")


def test_an_unknown_compile_backend_is_refused_in_one_line():
    from rl2_lightning.models.memory import NormReLUGRU

    with pytest.raises(ValueError, match=r"model.memory.compile='fast' is not a torch.compile backend") as err:
        NormReLUGRU(5, 6, compile="fast")
    assert "\n" not in str(err.value)
    assert NormReLUGRU(5, 6, compile=True).compile_backend == "inductor"
    assert NormReLUGRU(5, 6, compile=False).compile_backend is None


def test_compile_is_how_a_checkpoint_runs_not_what_it_is(tmp_path):
    """A run trained with a compiled cell loads, is checked and resumes under the loading config's
    ``model.memory.compile`` (e.g. a GPU run evaluated where no compiler is); every other model key still
    has to match."""
    from pathlib import Path

    from trainkit import compose_cfg

    from rl2_lightning.checkpoints import check_checkpoint, load_module
    from rl2_lightning.train import train

    def cfg(*more):
        return compose_cfg([f"runs_dir={tmp_path}", "model=gru_norm_relu", "trainer.max_epochs=1", *more])

    out = train(cfg("model.memory.compile=aot_eager"))
    ckpt = Path(out["run_dir"]) / "checkpoints" / "last.ckpt"

    def backends(module):
        return {m.compile_backend for m in module.modules() if hasattr(m, "compile_backend")}

    assert backends(out["module"]) == {"aot_eager"}
    assert backends(load_module(ckpt, cfg("model.memory.compile=false"))) == {None}
    assert backends(load_module(ckpt, cfg("model.memory.compile=aot_eager"))) == {"aot_eager"}
    check_checkpoint(ckpt, cfg("model.memory.compile=false"))  # resumable without compiling
    with pytest.raises(ValueError, match=r"was trained with model.memory.keep_bias=1.0, but the config has 2.0"):
        check_checkpoint(ckpt, cfg("model.memory.keep_bias=2.0"))
    resumed = train(cfg("model.memory.compile=false", "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    assert backends(resumed["module"]) == {None} and resumed["module"].frames > out["module"].frames
