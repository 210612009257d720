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
from gpo.data import make_synthetic_survey
from gpo.data.synthetic import make_planted_agreement_survey
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.models import GPOConfig, PALConfig
from gpo.train import TrainingDiverged, train

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = dict(width=16, heads=2, layers=1, feedforward=16, embed_depth=2)


# The two ways episodes reach a training step: sampled on the host, or on the device and
# packed several to a row (what a CPU run of the default length does).
SAMPLERS = {"host": {"sampler": "host"}, "device": {"sampler": "device", "packing": "rows"}}


def tiny_config(steps=30, **train_overrides) -> RunConfig:
    train_cfg = dict(steps=steps, batch_size=4, context_range=(2, 6), target_range=(2, 6),
                     eval_every=10, checkpoint_every=10, learning_rate=3e-3, warmup_steps=2)
    train_cfg.update(train_overrides)
    return RunConfig(head="gpo", model=GPOConfig(embedding_dim=32, **TINY_MODEL),
                     data=DataConfig(eval_k=5), embed=EmbedConfig(model="lexical", dim=32),
                     train=TrainConfig(**train_cfg))


def tiny_table(survey, embeddings, reference_groups):
    """The option table a run over `survey` reads, references = `reference_groups`."""
    from gpo.option_table import EmbeddingStats, References, build_option_table
    return build_option_table(embeddings, EmbeddingStats.fit(embeddings, survey.option_mask_QxO),
                              survey, References.from_survey(survey, reference_groups,
                                                             np.arange(len(survey.questions))))


@pytest.fixture(scope="module")
def tiny_data():
    survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=40).survey
    return survey, embed_survey(survey, LexicalEmbedder(dim=32))


def params_of(run_dir: Path, which: str = "latest"):
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(Path(run_dir).absolute() / "checkpoints" / which)
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(model=ocp.args.StandardRestore()))
    return step, restored.model


def test_config_overrides_from_the_command_line():
    config = tiny_config().override(["train.steps=7", "train.context_range=[3, 9]",
                                     "embed.model=minilm", "data.dataset=opinionqa"])
    assert config.train.steps == 7 and config.train.context_range == (3, 9)
    assert config.embed.model == "minilm" and config.data.dataset == "opinionqa"
    assert config.model == tiny_config().model  # untouched sections stay
    pal = config.override(["head=pal"])  # a GPO model config cannot serve PAL: dropped
    assert pal.head == "pal" and pal.model is None and pal.train == config.train
    assert config.override(["head=gpo"]).model == config.model
    # a field of a head's default model config: the rest stays the default
    pal_wide = pal.override(["model.prototypes=3"]).model
    assert pal_wide.prototypes == 3 and pal_wide.latent == PALConfig(embedding_dim=1).latent
    for bad, match in (("train.steps", "not section.field=value"),
                       ("steps=3", "not section.field=value"),
                       ("optim.lr=1", "unknown section 'optim'"),
                       ("train.stepz=3", "unknown fields \\['stepz'\\]"),
                       ("head=bert", "unknown head 'bert'")):
        with pytest.raises(ValueError, match=match):
            config.override([bad])


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_training_learns_and_keeps_the_best(tiny_data, tmp_path, sampler):
    survey, emb = tiny_data
    result = train(tiny_config(steps=60, **SAMPLERS[sampler]), survey, emb, tmp_path / "run",
                   progress=False)
    assert result.steps == 60 and len(result.history) == 6
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < losses[0]
    assert result.best_step in [h["step"] for h in result.history]
    assert result.best_validation == max(h["validation"] for h in result.history)
    saved = RunConfig.load(tmp_path / "run" / "config.json")
    assert saved.model.embedding_dim == 32 and saved.train.steps == 60
    assert params_of(tmp_path / "run", "best")[0] == result.best_step


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_resuming_gives_the_same_parameters(tiny_data, tmp_path, sampler):
    survey, emb = tiny_data
    config = tiny_config(**SAMPLERS[sampler])
    train(config, survey, emb, tmp_path / "whole", progress=False)
    train(config, survey, emb, tmp_path / "split", progress=False, stop_after=13)
    assert params_of(tmp_path / "split")[0] == 13
    train(config, survey, emb, tmp_path / "split", progress=False)
    _, a = params_of(tmp_path / "whole")
    _, b = params_of(tmp_path / "split")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_a_different_config_does_not_resume(tiny_data, tmp_path):
    survey, emb = tiny_data
    train(tiny_config(steps=10), survey, emb, tmp_path / "run", progress=False)
    with pytest.raises(ValueError, match="different config"):
        train(tiny_config(steps=10, learning_rate=1e-2), survey, emb, tmp_path / "run",
              progress=False)


def test_a_run_made_before_the_device_sampler_resumes_on_the_host_sampler(tiny_data, tmp_path):
    survey, emb = tiny_data
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


def test_non_finite_embeddings_are_rejected_naming_the_question(tiny_data, tmp_path):
    survey, emb = tiny_data
    bad = emb.copy()
    bad[3, 1, 0] = np.inf
    with pytest.raises(ValueError, match="first 'SYN0003' option 1"):
        train(tiny_config(), survey, bad, tmp_path / "run", progress=False)


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_divergence_stops_the_run_naming_step_and_episodes(tiny_data, tmp_path, sampler):
    survey, emb = tiny_data
    with pytest.raises(TrainingDiverged, match=r"at step \d+; episodes \[[0-9, ]+\] "
                                               r"\(groups \['synthetic=group"):
        train(tiny_config(learning_rate=1e12, warmup_steps=0, **SAMPLERS[sampler]), survey, emb,
              tmp_path / "run", progress=False)


KILL_SCRIPT = """
import sys
from gpo.data import make_synthetic_survey
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.train import train
sys.path.insert(0, {tests!r})
from test_train import tiny_config
survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=40).survey
train(tiny_config(steps={steps}, checkpoint_every=5, **{settings!r}), survey,
      embed_survey(survey, LexicalEmbedder(dim=32)), sys.argv[1], progress=False)
"""


@pytest.mark.parametrize("sampler", ["host", "device"])
def test_sigkill_mid_training_then_resume_matches_uninterrupted(tiny_data, tmp_path, sampler):
    steps = 400
    survey, emb = tiny_data
    script = KILL_SCRIPT.format(tests=str(ROOT / "tests"), steps=steps,
                                settings=SAMPLERS[sampler])
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "killed")],
                             cwd=ROOT, stderr=subprocess.PIPE)
    latest = tmp_path / "killed" / "checkpoints" / "latest"
    deadline = time.time() + 240
    while time.time() < deadline and child.poll() is None:
        if latest.exists() and any(p.name.isdigit() and int(p.name) >= 10
                                   for p in latest.iterdir()):
            break
        time.sleep(0.05)
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


SHARDED_SCRIPT = """
import json, sys
import jax, numpy as np
from gpo.data import make_synthetic_survey
from gpo.data.episodes import EpisodeSampler
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.sharding import make_mesh, put_batch, replicated
from gpo.train import init_model_state, make_optimizer, make_train_step
sys.path.insert(0, {tests!r})
from test_train import tiny_config, tiny_table
cfg = tiny_config()
survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=40).survey
table_host = tiny_table(survey, embed_survey(survey, LexicalEmbedder(dim=32)), np.arange(8))
batch = EpisodeSampler(survey, np.arange(8), np.arange(40), 8, (2, 6), (2, 6),
                       reference_groups=np.arange(8)).sample(0)
out = {{"devices": len(jax.devices())}}
for n in (1, 8):
    mesh = make_mesh(n)
    graphdef, state = init_model_state(cfg, 0, mesh)
    tx = make_optimizer(cfg)
    step = make_train_step(graphdef, tx, "gaussian_nll", mesh)
    state, _, metrics = step(state, tx.init(state), jax.device_put(table_host,
                             replicated(mesh)), put_batch(batch.arrays(), mesh))
    out[n] = {{"loss": float(metrics["loss"]),
               "param": float(np.asarray(jax.tree.leaves(state)[0]).sum())}}
print(json.dumps(out))
"""


def on_eight_simulated_devices(script: str) -> dict:
    """Run a script (formatted with the tests folder) with 8 simulated CPU devices; its JSON."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", script.format(tests=str(ROOT / "tests"))],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    return out


def test_eight_simulated_devices_match_one():
    out = on_eight_simulated_devices(SHARDED_SCRIPT)
    assert out["8"]["loss"] == pytest.approx(out["1"]["loss"], abs=1e-5)
    assert out["8"]["param"] == pytest.approx(out["1"]["param"], abs=1e-4)


DEVICE_STEPS_SCRIPT = """
import json, sys
import jax, numpy as np
from gpo.data import make_synthetic_survey
from gpo.data.episodes import EpisodeSampler
from gpo.device_sampler import DeviceSampler
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.sharding import make_mesh, replicated
from gpo.packing import RowLayout
from gpo.train import init_model_state, make_device_steps, make_optimizer
sys.path.insert(0, {tests!r})
from test_train import tiny_config, tiny_table
cfg = tiny_config()
survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=40).survey
table_host = tiny_table(survey, embed_survey(survey, LexicalEmbedder(dim=32)), np.arange(8))
sampler, arrays_host = DeviceSampler.like(EpisodeSampler(
    survey, np.arange(8), np.arange(40), 8, (2, 6), (2, 6), reference_groups=np.arange(8)))
out = {{"devices": len(jax.devices())}}
for n in (1, 8):
    mesh = make_mesh(n)
    arrays = jax.device_put(arrays_host, replicated(mesh))
    # two episodes' room a row: 8 episodes in 8 rows (one a device) leaves rows empty
    layout = RowLayout(8, 2 * sampler.context_capacity, 2 * sampler.target_capacity)
    for packed in (False, True):
        graphdef, state = init_model_state(cfg, 0, mesh)
        tx = make_optimizer(cfg)
        run_steps = make_device_steps(graphdef, tx, "gaussian_nll", mesh, sampler,
                                      layout if packed else None)
        state, _, metrics = run_steps(state, tx.init(state), jax.device_put(table_host,
                                      replicated(mesh)), arrays, 0, 3)
        out[f"{{n}} {{packed}}"] = {{"loss": np.asarray(metrics["loss"]).tolist(),
                                 "groups": np.asarray(metrics["group_B"]).tolist(),
                                 "param": float(np.asarray(jax.tree.leaves(state)[0]).sum())}}
print(json.dumps(out))
"""


def test_device_sampler_steps_on_eight_simulated_devices_match_one():
    out = on_eight_simulated_devices(DEVICE_STEPS_SCRIPT)
    one = out["1 False"]
    for run in ("1 True", "8 False", "8 True"):  # packed or not, on 1 device or split over 8
        assert out[run]["groups"] == one["groups"]  # the same episodes, however laid out
        assert out[run]["loss"] == pytest.approx(one["loss"], abs=1e-5)
        assert out[run]["param"] == pytest.approx(one["param"], abs=1e-4)


MULTI_PROCESS_SCRIPT = """
import json, sys
import jax, numpy as np
from gpo.sharding import maybe_initialize_distributed
distributed = maybe_initialize_distributed()
from gpo.data import make_synthetic_survey
from gpo.data.episodes import EpisodeSampler
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.sharding import make_mesh, put_batch, replicated
from gpo.train import init_model_state, make_optimizer, make_train_step
sys.path.insert(0, {tests!r})
from test_train import tiny_config, tiny_table
cfg = tiny_config()
survey = make_synthetic_survey(seed=0, n_groups=12, n_questions=40).survey
table_host = tiny_table(survey, embed_survey(survey, LexicalEmbedder(dim=32)), np.arange(8))
batch = EpisodeSampler(survey, np.arange(8), np.arange(40), 8, (2, 6), (2, 6),
                       reference_groups=np.arange(8)).sample(0)
mesh = make_mesh()
graphdef, state = init_model_state(cfg, 0, mesh)
tx = make_optimizer(cfg)
opt = jax.jit(tx.init, out_shardings=jax.tree.map(lambda _: replicated(mesh),
              jax.eval_shape(tx.init, state)))(state)
step = make_train_step(graphdef, tx, "gaussian_nll", mesh)
table = jax.tree.map(lambda a: jax.make_array_from_callback(
    a.shape, replicated(mesh), lambda index: a[index]), table_host)
state, _, metrics = step(state, opt, table, put_batch(batch.arrays(), mesh))
print(json.dumps({{"distributed": distributed, "processes": jax.process_count(),
                  "devices": len(jax.devices()), "loss": float(metrics["loss"])}}))
"""


def test_two_processes_on_localhost_match_one_process():
    import socket
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    script = MULTI_PROCESS_SCRIPT.format(tests=str(ROOT / "tests"))
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
    from gpo.evaluate import evaluate_run
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
    from gpo.models import Points
    from gpo.train import episode_loss
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
