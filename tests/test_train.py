"""Meta-training: it learns and keeps the best checkpoint, resumes exactly (also after a
SIGKILL, from a checkpoint whose meta is its own step's), refuses another config or broken
inputs, names the episodes of a divergence, and gives the same steps on 8 simulated devices,
in two processes and on one device."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.data.synthetic import make_planted_agreement_survey
from gpo.run_dir import RunDir
from gpo.training import TrainingDiverged, train
from tests.helpers import ROOT, on_eight_simulated_devices, tiny_config

# The two ways episodes reach a training step: sampled on the host, or on the device (which
# a tiny run of the default packing='auto' leaves padded; the packed path is
# tests/test_packing.py's).
SAMPLERS = {"host": {"sampler": "host"}, "device": {"sampler": "device"}}


def params_of(run_dir: Path, which: str = "latest"):
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints" / which)
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore()))
    return step, restored.model


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_training_learns_and_keeps_the_best(tiny, tmp_path, sampler):
    survey, emb = tiny
    result = train(tiny_config(steps=60, **SAMPLERS[sampler]), survey, emb, tmp_path / "run",
                   progress=False)
    assert result.steps == 60 and len(result.history) == 6
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_step in [h["step"] for h in result.history]
    assert result.best_validation == max(h["validation"] for h in result.history)
    saved = RunConfig.load(tmp_path / "run" / "config.json")
    assert saved == tiny_config(steps=60, **SAMPLERS[sampler])
    assert RunDir(tmp_path / "run").head_config.embedding_dim == 32  # the data's width
    assert params_of(tmp_path / "run", "best")[0] == result.best_step


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_resuming_gives_the_same_parameters(tiny, tmp_path, sampler):
    survey, emb = tiny
    config = tiny_config(**SAMPLERS[sampler])
    train(config, survey, emb, tmp_path / "whole", progress=False)
    train(config, survey, emb, tmp_path / "split", progress=False, stop_after=13)
    assert params_of(tmp_path / "split")[0] == 13
    train(config, survey, emb, tmp_path / "split", progress=False)
    _, a = params_of(tmp_path / "whole")
    _, b = params_of(tmp_path / "split")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_a_different_config_does_not_resume(tiny, tmp_path):
    survey, emb = tiny
    train(tiny_config(steps=10), survey, emb, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(steps=10, learning_rate=1e-2), survey, emb, tmp_path / "run",
              progress=False)


def test_a_run_made_before_the_device_sampler_resumes_on_the_host_sampler(tiny, tmp_path):
    survey, emb = tiny
    train(tiny_config(steps=10, sampler="host"), survey, emb, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    for field in ("sampler", "steps_per_call"):  # as gpo wrote it before they existed
        del saved["train"][field]
    (tmp_path / "run" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(steps=10), survey, emb, tmp_path / "run", progress=False)
    result = train(tiny_config(steps=10, sampler="host"), survey, emb, tmp_path / "run",
                   progress=False)
    assert result.steps == 10 and params_of(tmp_path / "run")[0] == 10


def test_a_run_in_the_layout_before_the_sampling_section_loads_and_resumes(tiny, tmp_path):
    """Runs saved before `train.sampling` and typed model sections: sampling fields under
    `train`, the head's whole config (embedding width included) as `model`, no head config
    in run.json. They load, evaluate and resume as the same run."""
    import gpo
    survey, emb = tiny
    config = tiny_config(steps=10, sampler="host")
    train(config, survey, emb, tmp_path / "run", progress=False, stop_after=5)
    run = tmp_path / "run"
    saved, record = (json.loads((run / name).read_text()) for name in ("config.json",
                                                                         "run.json"))
    saved["train"].update(saved["train"].pop("sampling"))
    saved["model"] = record.pop("head_config")
    record.pop("ordinals")
    record.pop("config")
    (run / "config.json").write_text(json.dumps(saved))
    (run / "run.json").write_text(json.dumps(record))
    model = gpo.load(run)
    assert model.head_config.embedding_dim == 32 and model.config.model == {
        k: v for k, v in saved["model"].items() if k != "embedding_dim"}
    assert model.options(survey.question_keys[0]) == survey.questions[0].answer_options
    result = train(config, survey, emb, run, progress=False)
    assert result.steps == 10 and params_of(run)[0] == 10


def test_non_finite_embeddings_are_rejected_naming_the_question(tiny, tmp_path):
    survey, emb = tiny
    bad = emb.copy()
    bad[3, 1, 0] = np.inf
    with pytest.raises(ValueError, match="first 'SYN0003' option 1"):
        train(tiny_config(), survey, bad, tmp_path / "run", progress=False)


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_divergence_stops_the_run_naming_step_and_episodes(tiny, tmp_path, sampler):
    survey, emb = tiny
    with pytest.raises(TrainingDiverged, match=r"at step \d+; episodes \[[0-9, ]+\] "
                                               r"\(groups \['synthetic=group"):
        train(tiny_config(learning_rate=1e12, warmup_steps=0, **SAMPLERS[sampler]), survey, emb,
              tmp_path / "run", progress=False)


KILL_SCRIPT = """
import sys
sys.path.insert(0, {root!r})
from gpo.training import train
from tests.helpers import tiny_config, tiny_embeddings, tiny_survey
train(tiny_config(steps={steps}, checkpoint_every=5, **{settings!r}), tiny_survey(),
      tiny_embeddings(), sys.argv[1], progress=False)
"""


def test_a_checkpoint_keeps_the_meta_of_its_own_step(tmp_path):
    """Orbax writes a checkpoint's JSON in the background: the loop's meta, changed right
    after the save (as at the next step), must not reach the file, or a resume after a kill
    would start at a later step than its weights."""
    import jax.numpy as jnp

    from gpo.checkpoint import Checkpoints
    checkpoints = Checkpoints(tmp_path / "checkpoints")
    state = {"w": jnp.ones(3)}
    meta = {"step": 5, "history": [{"step": 5}]}
    checkpoints.save_latest(5, state, state, meta)
    meta["step"] = 10
    meta["history"].append({"step": 10})
    checkpoints.wait()
    assert checkpoints.restore_latest(state, state)[2] == {"step": 5, "history": [{"step": 5}]}
    checkpoints.close()


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_sigkill_mid_training_then_resume_matches_uninterrupted(tiny, tmp_path, sampler):
    steps = 100  # checkpoints every 5: the kill lands well before the end
    survey, emb = tiny
    script = KILL_SCRIPT.format(root=str(ROOT), steps=steps, settings=SAMPLERS[sampler])
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed")],
                             cwd=ROOT, stderr=subprocess.PIPE)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if latest.exists() and any(p.name.isdigit() and int(p.name) >= 10
                                   for p in latest.iterdir()):
            break
        time.sleep(0.02)
    assert child.poll() is None, f"child ended early: {child.stderr.read().decode()[-2000:]}"
    child.send_signal(signal.SIGKILL)
    child.wait()
    killed_at = params_of(tmp_path / "killed")[0]
    assert 10 <= killed_at < steps
    config = tiny_config(steps=steps, checkpoint_every=5, **SAMPLERS[sampler])
    train(config, survey, emb, tmp_path / "killed", progress=False)
    train(config, survey, emb, tmp_path / "whole", progress=False)
    _, a = params_of(tmp_path / "killed")
    _, b = params_of(tmp_path / "whole")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


# What the scripts below share: the tiny survey's table over 8 reference groups, one
# batch of 8 host episodes, a tiny GPO's initial state and optimiser.
SCRIPT_SETUP = """
import json, sys
import jax, numpy as np
sys.path.insert(0, {root!r})
from gpo.sharding import maybe_initialize_distributed
distributed = maybe_initialize_distributed()
from gpo.sharding import make_mesh, put_batch, replicated
from gpo.training.device_sampler import DeviceSampler
from gpo.training.packing import RowLayout
from gpo.training.sampling import EpisodeSampler
from gpo.training.steps import (init_model_state, init_optimizer_state, make_device_steps,
                                make_optimizer, make_train_step)
from tests.helpers import (tiny_config, tiny_embeddings, tiny_head_config, tiny_sampling,
                           tiny_survey, tiny_table)
cfg, survey = tiny_config(), tiny_survey()
table_host = tiny_table(survey, tiny_embeddings(), np.arange(8))
batch = EpisodeSampler(survey, np.arange(8), np.arange(40), tiny_sampling(),
                       reference_groups=np.arange(8)).sample(0)

def start(mesh):
    graphdef, state = init_model_state("gpo", tiny_head_config(), 0, mesh)
    tx = make_optimizer(cfg.train)
    table = jax.tree.map(lambda a: jax.make_array_from_callback(
        a.shape, replicated(mesh), lambda index: a[index]), table_host)
    return graphdef, state, tx, init_optimizer_state(tx, state, mesh), table
"""

SHARDED_SCRIPT = SCRIPT_SETUP + """
out = {{"devices": len(jax.devices())}}
for n in (1, 8):
    mesh = make_mesh(n)
    graphdef, state, tx, opt, table = start(mesh)
    step = make_train_step(graphdef, tx, "gaussian_nll", mesh)
    state, _, metrics = step(state, opt, table, put_batch(batch, mesh))
    out[n] = {{"loss": float(metrics["loss"]),
               "param": float(np.asarray(jax.tree.leaves(state)[0]).sum())}}
print(json.dumps(out))
"""


def test_eight_simulated_devices_match_one():
    out = on_eight_simulated_devices(SHARDED_SCRIPT.format(root=str(ROOT)))
    assert out["8"]["loss"] == pytest.approx(out["1"]["loss"], abs=1e-5)
    assert out["8"]["param"] == pytest.approx(out["1"]["param"], abs=1e-4)


DEVICE_STEPS_SCRIPT = SCRIPT_SETUP + """
sampler, arrays_host = DeviceSampler.build(survey, np.arange(8), np.arange(40), tiny_sampling(),
                                           reference_groups=np.arange(8))
out = {{"devices": len(jax.devices())}}
for n in (1, 8):
    mesh = make_mesh(n)
    arrays = jax.device_put(arrays_host, replicated(mesh))
    # two episodes' room a row: 8 episodes in 8 rows (one a device) leaves rows empty
    layout = RowLayout(8, 2 * sampler.context_capacity, 2 * sampler.target_capacity)
    for packed in (False, True):
        graphdef, state, tx, opt, table = start(mesh)
        run_steps = make_device_steps(graphdef, tx, "gaussian_nll", mesh, sampler,
                                      layout if packed else None)
        state, _, metrics = run_steps(state, opt, table, arrays, 0, 3)
        out[f"{{n}} {{packed}}"] = {{"loss": np.asarray(metrics["loss"]).tolist(),
                                 "groups": np.asarray(metrics["group_B"]).tolist(),
                                 "param": float(np.asarray(jax.tree.leaves(state)[0]).sum())}}
print(json.dumps(out))
"""


def test_device_sampler_steps_on_eight_simulated_devices_match_one():
    out = on_eight_simulated_devices(DEVICE_STEPS_SCRIPT.format(root=str(ROOT)))
    one = out["1 False"]
    for run in ("1 True", "8 False", "8 True"):  # packed or not, on 1 device or split over 8
        assert out[run]["groups"] == one["groups"]  # the same episodes, however laid out
        assert out[run]["loss"] == pytest.approx(one["loss"], abs=1e-5)
        assert out[run]["param"] == pytest.approx(one["param"], abs=1e-4)


MULTI_PROCESS_SCRIPT = SCRIPT_SETUP + """
mesh = make_mesh()
graphdef, state, tx, opt, table = start(mesh)
step = make_train_step(graphdef, tx, "gaussian_nll", mesh)
state, _, metrics = step(state, opt, table, put_batch(batch, mesh))
print(json.dumps({{"distributed": distributed, "processes": jax.process_count(),
                  "devices": len(jax.devices()), "loss": float(metrics["loss"])}}))
"""


def test_two_processes_on_localhost_match_one_process():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script = MULTI_PROCESS_SCRIPT.format(root=str(ROOT))
    base = dict(os.environ, JAX_PLATFORMS="cpu")
    base.pop("XLA_FLAGS", None)
    procs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=f"localhost:{port}",
                                       JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(i)))
             for i in range(2)]
    outs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, stderr[-3000:]
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    single = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=base,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads(single.stdout.strip().splitlines()[-1])
    assert one["processes"] == 1 and not one["distributed"]
    for out in outs:
        assert out["distributed"] and out["processes"] == 2 and out["devices"] == 2
        assert out["loss"] == pytest.approx(one["loss"], abs=1e-5)


def test_gpo_reads_the_context(tmp_path):
    """At the paper's width and depth, a short meta-training run learns to read a group's
    rate from its context: far above the population prior on unseen groups."""
    from gpo.evaluation.evaluate import evaluate_run
    survey, embeddings = make_planted_agreement_survey()
    config = RunConfig(head="gpo", data=DataConfig(eval_k=10),
                       embed=EmbedConfig(model="lexical"),
                       train=TrainConfig.cpu(150, learning_rate=3e-4, loss="kl"))
    train(config, survey, embeddings, tmp_path, progress=False)
    evaluation = evaluate_run(tmp_path, survey, (10,))
    scores = {m: evaluation.per_split(m, 10)[0] for m in evaluation.methods}
    assert scores["population prior"] < 0.8
    assert scores["GPO"] > scores["population prior"] + 0.1, scores


def test_plus_nll_losses_train_the_std_and_leave_the_mean_to_the_metric():
    """'X+nll': the probabilities' gradient is X's alone; the std's is the Gaussian NLL's."""
    from gpo.points import Points
    from gpo.training.losses import episode_loss
    rng = np.random.default_rng(0)
    q = np.repeat(np.arange(4), 3)[None]
    true = rng.dirichlet(np.ones(3), size=4).reshape(1, 12).astype(np.float32)
    prob = rng.dirichlet(np.ones(3), size=4).reshape(1, 12).astype(np.float32)
    targets = Points.of(np.zeros((1, 12, 2)), q, prob_BxN=true)
    targets = type(targets)(**{**targets.__dict__, "ordinal_BxN": np.tile([0.0, 0.5, 1.0], 4)[None],
                               "gap_BxN": np.tile([0.5, 0.5, 0.0], 4)[None]})
    std = np.full((1, 12), 0.1, np.float32)
    for name in ("wasserstein", "kl"):
        grad = jax.grad(lambda p, s, n=name: episode_loss(f"{n}+nll", p, s, targets), (0, 1))
        alone = jax.grad(lambda p, n=name: episode_loss(n, p, std, targets))(prob)
        nll_std = jax.grad(lambda s: episode_loss("gaussian_nll", prob, s, targets))(std)
        d_prob, d_std = grad(prob, std)
        np.testing.assert_allclose(d_prob, alone, atol=1e-6)
        np.testing.assert_allclose(d_std, nll_std, atol=1e-6)


def test_a_batch_that_does_not_split_over_the_devices_is_refused_before_training():
    from types import SimpleNamespace

    from gpo.sharding import check_batch_split
    check_batch_split(16, SimpleNamespace(shape={"data": 8}))
    with pytest.raises(ValueError, match="batch of 12 episodes does not split over 8 devices"):
        check_batch_split(12, SimpleNamespace(shape={"data": 8}))
