"""Training throughput (1 device vs 8 simulated CPU devices, one run each) and the latency of
adapt + predict for one group, at the paper's config.

    python experiments/bench_train.py            # prints one table of measured ratios

Paper config: 32 episodes a step, 10-100 context and 10-100 target questions, GPO 6 x 128.
Episodes are synthetic (5-option questions at most, like OpinionQA's bulk) with 576-wide
inputs (SmolLM2's width); throughput does not depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

THROUGHPUT = """
import json, time, dataclasses
import jax, numpy as np
from gpo.config import RunConfig, TrainConfig
from gpo.data import make_synthetic_survey
from gpo.data.episodes import EpisodeSampler
from gpo.models import GPOConfig
from gpo.option_table import EmbeddingStats, References, build_option_table
from gpo.sharding import make_mesh, put_batch, replicated
from gpo.train import init_model_state, make_optimizer, make_train_step
survey = make_synthetic_survey(seed=0, n_groups=36, n_questions=300).survey
emb = np.random.default_rng(0).normal(size=survey.option_mask_QxO.shape + (576,))
cfg = RunConfig(head="gpo", model=GPOConfig.paper(576), train=TrainConfig(batch_size={batch}))
mesh = make_mesh()
references = References.from_survey(survey, np.arange(14), np.arange(300))
table = jax.device_put(build_option_table(emb, EmbeddingStats.fit(emb, survey.option_mask_QxO),
                                          survey, references), replicated(mesh))
graphdef, state = init_model_state(cfg, 0, mesh)
tx = make_optimizer(cfg)
opt = jax.jit(tx.init, out_shardings=jax.tree.map(lambda _: replicated(mesh),
              jax.eval_shape(tx.init, state)))(state)
step = make_train_step(graphdef, tx, "gaussian_nll", mesh)
sampler = EpisodeSampler(survey, np.arange(14), np.arange(300), {batch}, (10, 100), (10, 100),
                         reference_groups=np.arange(14))
batches = [put_batch(sampler.sample(i).arrays(), mesh) for i in range({steps} + 2)]
for b in batches[:2]:  # compile (the first donated call recompiles once)
    state, opt, m = step(state, opt, table, b)
jax.block_until_ready(m["loss"])
start = time.perf_counter()
for b in batches[2:]:
    state, opt, m = step(state, opt, table, b)
jax.block_until_ready(m["loss"])
seconds = time.perf_counter() - start
print(json.dumps({{"devices": len(jax.devices()), "steps_per_s": {steps} / seconds}}))
"""


def throughput(devices: int, steps: int, batch_size: int = 32) -> dict:
    """Steps/s at the paper's episode sizes, in a fresh process with `devices` devices."""
    env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    done = subprocess.run([sys.executable, "-c", THROUGHPUT.format(steps=steps,
                                                                  batch=batch_size)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"throughput run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def latency(repeats: int = 50) -> dict:
    """adapt (20 context questions) + predict (500 target options), after compilation."""
    import numpy as np
    from flax import nnx

    from gpo.api import GroupPreferenceModel
    from gpo.config import RunConfig
    from gpo.models import GPO, GPOConfig
    from gpo.option_table import EmbeddingStats

    E = 576
    config = RunConfig(head="gpo", model=GPOConfig.paper(E))
    stats = EmbeddingStats(np.zeros(E, np.float32), np.ones(E, np.float32))
    model = GroupPreferenceModel(config, GPO(config.model, rngs=nnx.Rngs(0)), stats)
    rng = np.random.default_rng(0)
    context = [(rng.normal(size=(4, E)).astype(np.float32), rng.dirichlet(np.ones(4)))
               for _ in range(20)]
    targets = [rng.normal(size=(4, E)).astype(np.float32) for _ in range(125)]  # 500 options
    model.adapt(context).predict(targets)  # compile
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.adapt(context).predict(targets)
        times.append(time.perf_counter() - start)
    return {"median_ms": 1e3 * float(np.median(times)), "p90_ms": 1e3 * float(
        np.percentile(times, 90))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed steps (default: 5)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="episodes a step (default: 32, the paper's)")
    parser.add_argument("--repeats", type=int, default=50,
                        help="adapt + predict calls timed (default: 50)")
    args = parser.parse_args()
    one = throughput(1, args.steps, args.batch_size)
    eight = throughput(8, args.steps, args.batch_size)
    lat = latency(args.repeats)
    rows = [("1 device", one["steps_per_s"]), ("8 simulated CPU devices", eight["steps_per_s"])]
    print(f"GPO meta-training, paper config ({args.batch_size} episodes/step, 10-100 + 10-100 "
          "questions)")
    for name, sps in rows:
        print(f"  {name:<26} {sps:6.3f} steps/s  {args.batch_size * sps:7.2f} episodes/s")
    print(f"  ratio 8 / 1 devices        {eight['steps_per_s'] / one['steps_per_s']:.2f}x "
          "(simulated devices share the same cores: no speed-up is expected on CPU)")
    print(f"adapt + predict, 20 context questions, 500 target options: median "
          f"{lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms "
          f"(target < 20 ms: {'met' if lat['median_ms'] < 20 else 'not met'})")


if __name__ == "__main__":
    main()
