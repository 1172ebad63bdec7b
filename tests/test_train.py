"""End-to-end training runs (rl2_lightning/train.py): every family, resume, DDP, meta-test."""

from __future__ import annotations

import subprocess
import time
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from trainkit import ROOT, compose_cfg

from rl2_lightning.train import train


def params(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "preset", ["bandit_k5_n10", "tabular_n10", "riverswim", "bandit_k10_n100"]
)
def test_tiny_run_of_every_family(preset, tmp_path):
    cfg = compose_cfg([f"conf={preset}", f"runs_dir={tmp_path}", "env.episodes_per_trial=3"])
    out = train(cfg)
    module = out["module"]
    steps = 3 * (cfg.env.simulator.get("episode_steps") or 1)
    assert int(module.frames) == 2 * 2 * 8 * steps  # epochs x iterations x trials x trial length
    assert out["trainer"].global_step == 2 * 2 * 2 * 2  # epochs x iterations x PPO epochs x minibatches
    assert out["metatest"] is not None and "return_ep2" in out["metatest"]
    ckpts = list(Path(out["run_dir"], "checkpoints").glob("*.ckpt"))
    assert any(p.name == "last.ckpt" for p in ckpts)
    assert (Path(out["run_dir"]) / "metatest.csv").read_text().count("\n") == 3  # header + 2 epochs


def test_training_changes_the_collecting_policy(tmp_path):
    """The collector runs the module's own actor: an update changes what it collects with."""

    class Snapshot(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            collector = trainer.datamodule.collector
            self.same = collector.policy is pl_module.actor

    snap = Snapshot()
    train(compose_cfg([f"runs_dir={tmp_path}", "trainer.max_epochs=1"]), extra_callbacks=[snap])
    assert snap.same


#: the references' switches, all on (PPO): resume must stay exact with their state (value moments, AdamW)
SWITCHES = ["algo.value_norm=true", "algo.critic_loss=huber", "algo.target_kl=0.02", "algo.advantage_scope=batch",
            "optimizer=adamw", "algo.weight_decay=0.01"]


@pytest.mark.parametrize("algo", ["ppo", "trpo", "ppo-switches"])
def test_resume_from_last_ckpt_continues_exactly(tmp_path, algo):
    extra = SWITCHES if algo == "ppo-switches" else []
    base = [f"runs_dir={tmp_path}", "callbacks.metatest=null", "seed=7", f"algo={algo.split('-')[0]}", *extra]
    full = train(compose_cfg([*base, "trainer.max_epochs=2", "experiment=full"]))
    first = train(compose_cfg([*base, "trainer.max_epochs=1", "experiment=split"]))
    assert int(first["module"].frames) == int(full["module"].frames) // 2
    resumed = train(compose_cfg([*base, "trainer.max_epochs=2", "experiment=split", "ckpt_path=latest"]))
    assert resumed["run_dir"] == first["run_dir"]  # same run directory: curves continue
    assert int(resumed["module"].frames) == int(full["module"].frames)
    a, b = params(full["module"]), params(resumed["module"])
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_rejects_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path"):
        train(compose_cfg([f"runs_dir={tmp_path}", f"ckpt_path={tmp_path}/nope.ckpt"]))
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="ckpt_path=.*not a readable checkpoint"):
        train(compose_cfg([f"runs_dir={tmp_path}", f"ckpt_path={bad}"]))
    with pytest.raises(FileNotFoundError, match="ckpt_path=latest"):
        train(compose_cfg([f"runs_dir={tmp_path}", "ckpt_path=latest", "experiment=never_ran"]))


def test_resume_rejects_a_checkpoint_of_another_architecture(tmp_path):
    out = train(compose_cfg([f"runs_dir={tmp_path}", "trainer.max_epochs=1", "callbacks.metatest=null"]))
    ckpt = Path(out["run_dir"]) / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match="model.hidden_size"):
        train(compose_cfg([f"runs_dir={tmp_path}", f"ckpt_path={ckpt}", "model.hidden_size=32"]))
    with pytest.raises(ValueError, match=r"was trained with algo\.lmbda=0\.3, but the config has 0\.5"):
        train(compose_cfg([f"runs_dir={tmp_path}", f"ckpt_path={ckpt}", "algo.lmbda=0.5"]))
    with pytest.raises(ValueError, match=r"was trained with algo\._target_='rl2_lightning\.algos\.PPO'"):
        train(compose_cfg([f"runs_dir={tmp_path}", f"ckpt_path={ckpt}", "algo=trpo"]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cpu_checkpoint_trains_on_and_resumes_on_a_gpu(tmp_path):
    """Session 14's first GPU runs: an iteration's statistics mixed CPU and CUDA tensors in one stack, and
    a CPU checkpoint's env random states could not be set on CUDA generators; both ended the run."""
    base = [f"runs_dir={tmp_path}", "callbacks.metatest=null", "trainer.devices=1"]
    cpu = train(compose_cfg([*base, "trainer.max_epochs=1", "trainer.accelerator=cpu", "experiment=cpu"]))
    ckpt = Path(cpu["run_dir"]) / "checkpoints" / "last.ckpt"
    with pytest.warns(UserWarning, match="not bit-identical"):
        gpu = train(compose_cfg([*base, "trainer.max_epochs=2", "trainer.accelerator=gpu", f"ckpt_path={ckpt}"]))
    assert int(gpu["module"].frames) == 2 * int(cpu["module"].frames)
    assert all(p.device.type == "cuda" for p in gpu["module"].parameters())


def test_init_from_warm_starts_a_longer_trial_with_the_weights_and_frames_of_the_source(tmp_path):
    """``init_from=<ckpt>`` into a run with longer trials (and another learning rate): the run starts
    from the source's networks and frame count, with a fresh optimizer and its own algorithm settings."""
    base = [f"runs_dir={tmp_path}", "callbacks.metatest=null"]
    source = train(compose_cfg([*base, "trainer.max_epochs=1", "experiment=short"]))
    ckpt = Path(source["run_dir"]) / "checkpoints" / "last.ckpt"
    seen = {}

    class FirstBatch(L.Callback):
        def on_train_start(self, trainer, pl_module):
            seen["frames"] = int(pl_module.frames)
            seen["weights"] = params(pl_module)

    out = train(compose_cfg([*base, "trainer.max_epochs=1", "experiment=long", "env.episodes_per_trial=20",
                             "algo.actor_lr=1e-4", f"init_from={ckpt}"]), extra_callbacks=[FirstBatch()])
    frames = int(source["module"].frames)
    assert seen["frames"] == frames
    want = params(source["module"])
    for key, value in seen["weights"].items():
        if key.startswith(("actor.", "critic.")):
            torch.testing.assert_close(value, want[key], rtol=0, atol=0, msg=key)
    assert int(out["module"].frames) == frames + 2 * 8 * 20  # two iterations of 8 trials of 20 pulls
    assert out["module"].hparams.algo["actor_lr"] == 1e-4


def test_init_from_refuses_another_model_another_action_space_and_a_missing_file(tmp_path):
    base = [f"runs_dir={tmp_path}", "callbacks.metatest=null"]
    source = train(compose_cfg([*base, "trainer.max_epochs=1"]))
    ckpt = Path(source["run_dir"]) / "checkpoints" / "last.ckpt"
    with pytest.raises(ValueError, match=r"init_from=.*was trained with model\.hidden_size"):
        train(compose_cfg([*base, f"init_from={ckpt}", "model.hidden_size=32"]))
    with pytest.raises(ValueError, match=r"init_from=.*does not fit this config's agent"):
        train(compose_cfg([*base, f"init_from={ckpt}", "env.simulator.num_arms=10"]))
    with pytest.raises(FileNotFoundError, match=r"init_from=.*no such checkpoint file"):
        train(compose_cfg([*base, f"init_from={tmp_path}/nope.ckpt"]))
    with pytest.raises(FileNotFoundError, match=r"no shipped policy for nothing_shipped"):
        train(compose_cfg([*base, "init_from=pretrained:nothing_shipped"]))


class AtTrainStart(L.Callback):
    """Records ``look(module)`` under ``name`` in ``seen`` when training starts (after any warm start)."""

    def __init__(self, seen: dict, name: str, look):
        self.seen, self.name, self.look = seen, name, look

    def on_train_start(self, trainer, pl_module):
        self.seen[self.name] = self.look(pl_module)


def test_init_parts_actor_warm_starts_the_actor_and_leaves_the_critic_as_a_fresh_run_builds_it(tmp_path):
    """``init_parts=[actor]``: the actor is the source's, the critic is exactly what a run without a warm
    start builds (same seed), and the frames still carry over; a wrong list is refused in one line."""
    base = [f"runs_dir={tmp_path}", "callbacks.metatest=null", "trainer.max_epochs=1"]
    source = train(compose_cfg([*base, "experiment=source", "seed=3"]))
    ckpt = Path(source["run_dir"]) / "checkpoints" / "last.ckpt"
    seen = {}
    look = lambda m: (int(m.frames), params(m))  # noqa: E731
    train(compose_cfg([*base, "experiment=fresh"]), extra_callbacks=[AtTrainStart(seen, "fresh", look)])
    train(compose_cfg([*base, "experiment=warm", f"init_from={ckpt}", "init_parts=[actor]"]),
          extra_callbacks=[AtTrainStart(seen, "warm", look)])
    want, (frames, got), (_, fresh) = params(source["module"]), seen["warm"], seen["fresh"]
    assert frames == int(source["module"].frames) > 0
    actor = [k for k in got if k.startswith("actor.")]
    critic = [k for k in got if k.startswith("critic.")]
    assert actor and critic
    for key in actor:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    for key in critic:
        torch.testing.assert_close(got[key], fresh[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(got[k], want[k]) for k in critic)  # the source's critic was trained: not loaded
    for bad in ("[]", "[policy]", "[actor,actor]"):
        with pytest.raises(ValueError, match=r"init_parts=.* is not allowed"):
            train(compose_cfg([*base, f"init_from={ckpt}", f"init_parts={bad}"]))


def test_a_warm_started_value_normalised_critic_keeps_the_statistics_its_outputs_are_in_units_of(tmp_path):
    """The critic's outputs are normalised returns: ``init_from`` brings the source's running moments with
    it (without them a fresh run reads those outputs in its first batch's units); ``init_parts=[actor]``
    starts both afresh; a shipped value-normalised policy, which keeps no statistics, warns."""
    from rl2_lightning.checkpoints import warm_start_weights

    base = [f"runs_dir={tmp_path}", "callbacks.metatest=null", "trainer.max_epochs=1", "algo.value_norm=true"]
    source = train(compose_cfg([*base, "experiment=source"]))
    moments = source["module"].algo.value_moments.clone()
    assert moments[2] > 0  # it has seen value targets
    ckpt = Path(source["run_dir"]) / "checkpoints" / "last.ckpt"
    seen = {}
    look = lambda m: m.algo.value_moments.clone()  # noqa: E731
    train(compose_cfg([*base, "experiment=warm", f"init_from={ckpt}"]), extra_callbacks=[AtTrainStart(seen, "both", look)])
    torch.testing.assert_close(seen["both"], moments, rtol=0, atol=0)
    train(compose_cfg([*base, "experiment=actor", f"init_from={ckpt}", "init_parts=[actor]"]),
          extra_callbacks=[AtTrainStart(seen, "actor", look)])
    torch.testing.assert_close(seen["actor"], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64), rtol=0, atol=0)
    with pytest.warns(UserWarning, match="holds no normalisation statistics"):
        state, _ = warm_start_weights("pretrained:tabular_n10", compose_cfg(["conf=tabular_n10", "recipe=authors"], tiny=False))
    assert "algo.value_moments" not in state and any(k.startswith("critic.") for k in state)


PRE_REDESIGN = ROOT / "tests" / "data" / "pre_redesign_bandit_k5_n10.ckpt"


def test_a_checkpoint_written_before_the_components_redesign_loads_and_resumes(tmp_path):
    """Written by commit 5a359f2 (flat env.family / model.architecture hyperparameters, loss_module.* keys):
    its agent rebuilds through today's config nodes with the same weights, and training resumes from it."""
    from rl2_lightning.module import RL2Module

    old = torch.load(PRE_REDESIGN, map_location="cpu", weights_only=False)
    assert "family" in old["hyper_parameters"]["env"] and "loss_module.actor_network_params.module.0.module.0.module.linear.weight" in old["state_dict"]
    module = RL2Module.load_from_checkpoint(PRE_REDESIGN, map_location="cpu")
    assert module.hparams.model["memory"]["_target_"] == "rl2_lightning.models.GRUMemory"
    assert module.hparams.env["simulator"] == {"_target_": "rl2_lightning.envs.BernoulliBandit", "_partial_": True, "num_arms": 5}
    for key, value in module.state_dict().items():
        if key.startswith(("actor.", "critic.")):
            assert torch.equal(value, old["state_dict"][key]), key
    out = train(compose_cfg([f"runs_dir={tmp_path}", f"ckpt_path={PRE_REDESIGN}", "trainer.max_epochs=3",
                             "callbacks.metatest=null"]))
    assert int(out["module"].frames) == int(old["state_dict"]["frames"]) * 3 // 2  # one more epoch of the same size


class RecordRank(L.Callback):
    """Writes each rank's final parameters and current tasks to a file (for the DDP test)."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def on_train_end(self, trainer, pl_module):
        sim = trainer.datamodule.env.base_env.simulator
        torch.save(
            {"params": params(pl_module), "tasks": sim.p.clone(), "frames": int(pl_module.frames)},
            Path(self.out_dir) / f"rank{trainer.global_rank}.pt",
        )


@pytest.mark.parametrize("algo", ["ppo", pytest.param("trpo", marks=pytest.mark.slow)])  # trpo: ~19 s more
def test_ddp_two_cpu_processes_stay_in_sync_with_different_tasks(tmp_path, algo):
    cfg = compose_cfg(
        [f"runs_dir={tmp_path}", "trainer.devices=2", "trainer.strategy=ddp_spawn", "callbacks.metatest.num_tasks=20",
         f"algo={algo}"]
    )
    train(cfg, extra_callbacks=[RecordRank(str(tmp_path))])
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for key in r0["params"]:
        torch.testing.assert_close(r0["params"][key], r1["params"][key], rtol=0, atol=0, msg=key)
    assert not torch.equal(r0["tasks"], r1["tasks"])
    assert r0["frames"] == 2 * 2 * 2 * 8 * 10  # both ranks' frames: epochs x iterations x ranks x trials x steps


@pytest.mark.slow  # ~15 s; the in-process DDP test runs in CI
def test_train_py_runs_with_ddp_strategy_from_the_command_line(tmp_path):
    """The README's CPU multi-process command, launched as a user would (Lightning relaunches the script)."""
    from trainkit import TINY

    cmd = [sys.executable, "train.py", *TINY, "trainer.devices=2", "trainer.strategy=ddp", f"runs_dir={tmp_path}"]
    cmd += ["trainer.max_epochs=3", "callbacks.metatest.num_tasks=20"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    listening = set()
    while proc.poll() is None:  # every socket the run's processes listen on, sampled as it trains
        pids = set(subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.split())
        ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
        listening |= {line.split()[3] for line in ss if any(f"pid={p}," in line for p in pids)}
        time.sleep(0.2)
    _, err = proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert list(Path(tmp_path).glob("bandit_k5_n10/*/checkpoints/last.ckpt"))
    # one machine: the rendezvous store and gloo listen on loopback only, not on every interface
    assert listening and all(addr.startswith(("127.0.0.1:", "[::1]:")) for addr in listening), listening


@pytest.mark.slow  # ~20 s: three runs
def test_multirun_sweep_over_seeds(tmp_path):
    from trainkit import TINY

    cmd = [sys.executable, "train.py", "-m", *TINY, "seed=1,2", f"runs_dir={tmp_path}", "trainer.max_epochs=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p.parent.parent.name for p in Path(tmp_path, "multirun").glob("*/*/checkpoints/last.ckpt"))
    assert runs == ["bandit_k5_n10_seed1_0", "bandit_k5_n10_seed2_1"]


@pytest.mark.maze
def test_tiny_maze_run_trains_end_to_end(tmp_path):
    pytest.importorskip("vizdoom")
    cfg = compose_cfg(
        [
            "conf=maze_5x5",
            f"runs_dir={tmp_path}",
            "env.num_envs=2",
            "env.simulator.horizon=6",
            "callbacks.metatest.num_tasks=4",
            "callbacks.metatest.batch_size=2",
            "callbacks.metatest.every_n_epochs=1",
            "callbacks.metatest.episodes_per_trial=3",
            "logger=tensorboard",
        ]
    )
    out = train(cfg)
    module = out["module"]
    assert module.agent.primers and module.hparams.model["shared_trunk"]
    # real (unpadded) frames only: at most epochs x iterations x envs x 2 episodes x 6 steps
    assert 0 < int(module.frames) <= 2 * 2 * 2 * 2 * 6
    assert "return_ep2" in out["metatest"]  # meta-test trials of 3 episodes (extrapolation)
    assert {"success_ep0", "length_ep2", "improved"} <= set(out["metatest"])  # Table 3's columns
    assert 0 <= out["metatest"]["success_ep0"] <= 1
    # TensorBoard: per meta-test, an animated held-out trial (view beside map) and its paths image
    import io

    from PIL import Image
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(out["run_dir"]) / "tb"), size_guidance={"images": 0})
    events.Reload()
    videos = events.Images("meta_test/trial_video")
    assert len(videos) == 2 and len(events.Images("meta_test/trial_paths")) == 2  # one per epoch
    gif = Image.open(io.BytesIO(videos[-1].encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames > 1  # 3 episodes of at most 6 steps: several frames
    assert gif.size[0] > gif.size[1]  # the view beside the map
    # the evaluation command on this checkpoint: RL² and a random policy on held-out mazes (Table 3)
    from rl2_lightning.evaluate import main as evaluate_main

    ckpt = Path(out["run_dir"]) / "checkpoints" / "last.ckpt"
    ev = tmp_path / "evaluate"
    args = ["conf=maze_5x5", f"ckpt={ckpt}", "env.simulator.horizon=6", "callbacks.metatest.num_tasks=3", "callbacks.metatest.batch_size=2"]
    rows = evaluate_main([*args, f"out={ev}"])
    assert [r["key"] for r in rows] == ["random", "rl2"]  # the comparison first, then RL²
    assert all(0 <= r["success_ep1"] <= 1 and 0 <= r["improved"] <= 1 for r in rows)
    table = (ev / "maze_5x5.md").read_text()
    assert "| RL² |" in table and "| Random |" in table and "| RL² (paper) |" in table and "99.3%" in table
    for name in ("maze_5x5.png", "maze_5x5.csv", "trial_rl2_paths.png", "trial_random_paths.png"):
        assert (ev / name).stat().st_size > 0
    assert Image.open(ev / "trial_rl2.gif").n_frames > 1
    with pytest.raises(ValueError, match=r"ckpt=.* was trained with env\.simulator\.horizon=6, but the config has 250"):  # a checkpoint of another setting
        evaluate_main(["conf=maze_5x5", f"ckpt={ckpt}", f"out={ev}"])


def test_fps_and_frames_are_logged_against_frames(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = train(compose_cfg([f"runs_dir={tmp_path}", "logger=tensorboard", "callbacks.metatest.num_tasks=20"]))
    events = EventAccumulator(str(Path(out["run_dir"]) / "tb"))
    events.Reload()
    fps = events.Scalars("time/fps")
    assert len(fps) == 4 and all(e.value > 0 for e in fps)  # every iteration, none NaN
    assert [e.step for e in fps] == [80 * k for k in range(1, 5)]  # x-axis: environment frames
    # the critic against its λ-return targets and against the returns that actually followed
    assert {"train/explained_variance", "train/explained_variance_returns"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("meta_test/trial_return")] == [160, 320]
    assert "meta_test/return_per_episode" in events.Tags()["images"]
    # the within-trial slope from the fourth episode on, from the same meta-tests as metatest.csv's rows
    import csv

    from rl2_lightning.evaluation.scoring import late_slope

    with open(Path(out["run_dir"]) / "metatest.csv") as f:
        rows = list(csv.DictReader(f))
    expected = [late_slope([float(r[f"return_ep{k}"]) for k in range(10)]) for r in rows]
    assert [e.value for e in events.Scalars("meta_test/late_slope")] == pytest.approx(expected, abs=1e-5)


@pytest.mark.slow  # ~27 s; the one-process maze run is in CI
@pytest.mark.maze
def test_maze_run_with_two_env_worker_processes(tmp_path):
    pytest.importorskip("vizdoom")
    cfg_overrides = [
        "conf=maze_5x5",
        f"runs_dir={tmp_path}",
        "env.num_envs=2",
        "env.workers=2",
        "env.simulator.horizon=6",
        "callbacks.metatest.num_tasks=2",
        "callbacks.metatest.batch_size=2",
        "callbacks.metatest.video_frames=0",
    ]
    cfg = compose_cfg([*cfg_overrides, "trainer.max_epochs=1"])

    class Keep(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.batch = batch

    keep = Keep()
    out = train(cfg, extra_callbacks=[keep])
    # one epoch of 2 iterations x 2 trials (one per worker) of 2 episodes of at most 6 steps
    assert 0 < int(out["module"].frames) <= 2 * 2 * 2 * 6
    assert out["metatest"] is not None
    batch = keep.batch
    assert batch.shape == (2, 12)  # [workers x envs, padded trial]
    assert batch["is_init"][:, 0].all() and not batch["is_init"][:, 1:].any()
    hidden = batch["recurrent_state_actor"].flatten(2).norm(dim=-1)
    assert (hidden[:, 0] == 0).all() and (hidden[:, 1:][batch["valid"][:, 1:].squeeze(-1)] > 0).all()
    assert not torch.equal(batch["observation"][0, 0], batch["observation"][1, 0])  # workers' own tasks
    # the checkpoint holds each worker's random streams, and a resumed run starts from exactly those
    ckpt = Path(out["run_dir"]) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)["TrialDataModule"]["workers"]
    assert len(saved) == 2 and not torch.equal(saved[0]["tasks"], saved[1]["tasks"])

    class AtStart(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            self.state = trainer.datamodule.state_dict()["workers"]

    at_start = AtStart()
    train(compose_cfg([*cfg_overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt}"]), extra_callbacks=[at_start])
    for restored, kept in zip(at_start.state, saved):
        assert torch.equal(restored["tasks"], kept["tasks"]) and torch.equal(restored["simulator"], kept["simulator"])
    with pytest.raises(ValueError, match="env.workers=2, but the config has 1"):  # resume with other workers
        train(compose_cfg([*cfg_overrides, "env.workers=1", "trainer.max_epochs=2", f"ckpt_path={ckpt}"]))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_the_users_gpu_command_on_a_cpu_machine_is_refused_with_the_fix():
    """`python train.py conf=maze_9x9 trainer.devices=4` typed where there is no GPU: one line, before any work."""
    import os

    from rl2_lightning.train import check_devices

    cores = len(os.sched_getaffinity(0))
    with pytest.raises(ValueError, match=rf"asks for 4 GPUs, and this machine has none: .*32 envs.*trainer\.accelerator=cpu trainer\.devices={min(4, cores)}"):
        check_devices(compose_cfg(["conf=maze_9x9", "trainer.devices=4"], tiny=False))
    with pytest.raises(ValueError, match=rf"trainer\.devices={cores + 1} CPU processes on {cores} cores"):
        check_devices(compose_cfg(["trainer.accelerator=cpu", f"trainer.devices={cores + 1}"]))
    check_devices(compose_cfg(["trainer.accelerator=cpu", f"trainer.devices={cores}"]))  # asked for, and fits


def _prefetch_factory(prefetch: bool):
    import functools

    from rl2_lightning.envs import TabularMDP, TrialEnvFactory

    return TrialEnvFactory(functools.partial(TabularMDP, num_states=4, num_actions=3, episode_steps=3),
                           episodes_per_trial=2, num_envs=4, prefetch=prefetch)


def test_prefetched_batches_equal_sequential_ones_for_the_same_seeds():
    """env.prefetch (TorchRL's AsyncCollector in a worker process) yields, for a fixed policy, exactly the
    batches a sequential collector yields from the same env and torch seeds."""
    from torchrl.collectors import Collector

    from rl2_lightning.datamodule import TrialDataModule

    dm = TrialDataModule(_prefetch_factory(True), seed=5, iterations_per_epoch=3)
    dm.setup()
    assert dm.env is None  # no envs in this process: they live in the collector's worker
    try:
        prefetched = [b.clone() for b in dm.train_dataloader()]
        again = [b.clone() for b in dm.train_dataloader()]  # the next epoch continues the one iterator
    finally:
        dm.teardown()
    factory = _prefetch_factory(False)
    env = factory.make(seed=5)
    steps = env.base_env.trial_steps
    collector = Collector(env, None, frames_per_batch=4 * steps, total_frames=-1, reset_at_each_iter=True,
                          split_trajs=False, auto_register_policy_transforms=False)
    seed = dm.prefetch_seed(0)
    collector.set_seed(seed)  # as TorchRL does in the worker: seed the env, then torch, then reset the env
    torch.manual_seed(seed)
    collector.reset()
    batches = iter(collector)
    sequential = [next(batches).reshape(-1, steps) for _ in range(6)]
    collector.shutdown()
    assert len(prefetched) == len(again) == 3
    same = [[torch.equal(a[k], b[k]) for k in ("action", ("next", "reward"), "observation", "episode_index")]
            for a, b in zip(prefetched + again, sequential)]
    assert all(all(row) for row in same), same
    assert not torch.equal(sequential[0]["action"], sequential[1]["action"])  # the batches do differ


def test_a_prefetching_run_trains_every_iteration_and_tears_its_worker_down(tmp_path):
    torch.manual_seed(0)
    cfg = compose_cfg(["conf=tabular_n10", "env.prefetch=true", f"runs_dir={tmp_path}", "callbacks.metatest=null",
                       "trainer.max_epochs=2", "trainer.limit_train_batches=3"])
    out = train(cfg)
    module = out["module"]
    assert int(module.frames) == 2 * 3 * cfg.env.num_envs * 10 * 10
    assert out["trainer"].datamodule.collector is None  # torn down, worker and envs closed
    assert out["trainer"].global_step == 2 * 3 * cfg.algo.epochs * cfg.algo.minibatches  # every batch trained on


def test_prefetch_with_env_workers_is_refused_in_one_line():
    from rl2_lightning.config import compose

    with pytest.raises(Exception, match="env.prefetch=true collects in one worker process"):
        compose(["conf=maze_5x5", "env.prefetch=true", "env.workers=2"])


def test_debug_smoke_is_a_tiny_run_in_one_override(tmp_path):
    from rl2_lightning.config import compose

    cfg = compose(["debug=smoke", f"runs_dir={tmp_path}", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false"])
    assert (cfg.env.num_envs, cfg.model.hidden_size, cfg.trainer.max_epochs, cfg.logger) == (16, 16, 2, None)
    out = train(cfg)
    assert int(out["module"].frames) == 2 * 2 * 16 * 10 and out["metatest"]["trial_return"] > 0
