"""Meta-training throughput at the paper's config, each path in its own process, one run:
the host sampler (NumPy episodes, one dispatch a step), the device sampler (episodes drawn by
jax.random inside `lax.scan`, many steps a dispatch) with every episode padded to its capacity
(train.packing=off) or packed several to a row (train.packing=rows, what gpo.training does on
a CPU), and a plain PyTorch implementation of the same architecture built the way GPO's
reference code builds it; then 8 simulated CPU devices against 1, and the latency of adapt +
predict for one group.

    python experiments/bench_train.py                       # 2 CPU cores: every row
    python experiments/bench_train.py --platform gpu --steps 1000 --per-call 100 \\
        --torch-steps 50 --no-devices --no-latency \\
        --out reports/bench_train_gpu.json                  # one GPU (records its utilisation)
    python experiments/bench_train.py --platform gpu --steps 1000 --per-call 100 \\
        --paths device packed --matmul-dtype float32 bfloat16 --no-devices --no-latency \\
        --out reports/bench_train_gpu_bf16.json             # packing and bf16 on a GPU

Paper config: 32 episodes a step, 10-100 context and 10-100 target questions, GPO 6 x 128.
Episodes come from an OpinionQA-sized synthetic survey (36 groups, 624 questions of 2-5
options, 14 training groups as references) with 576-wide inputs (SmolLM2's width):
throughput does not depend on the values. "host ms/step" is the time the Python process
spends per step in the training loop outside waiting for results (sampling, packing, transfer,
dispatch; for the device sampler, one dispatch and one check of the metrics shared by a call's
steps). On a GPU, XLA drives a compiled loop's iterations from the host thread, so there the
device sampler's dispatch returns only once its steps have run: its host ms/step is then
mostly that wait, not host work. "shapes": distinct batch shapes compiled in the timed run
(packed: the rows, and the padded layout a step falls back to when its episodes do not fit);
"compile s" includes choosing the rows (`gpo.training.packing.choose_layout`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time

SETUP = """
import dataclasses, json, time
import jax, jax.numpy as jnp, numpy as np
from gpo.config import SamplingConfig, TrainConfig
from gpo.data import make_synthetic_survey
from gpo.models import GPOConfig
from gpo.points import EmbeddingStats, References, survey_option_table
from gpo.sharding import make_mesh, put_batch, replicated
from gpo.training.sampling import EpisodeSampler
survey = make_synthetic_survey(seed=0, n_groups=36, n_questions=624).survey
emb = np.random.default_rng(0).normal(size=survey.option_mask_QxO.shape + (576,)).astype("f4")
head_config = dataclasses.replace(GPOConfig.paper(576), matmul_dtype="{matmul_dtype}")
sampling = SamplingConfig(batch_size={batch}, hide_references=0.0)  # paper: 10-100 + 10-100
train = TrainConfig(sampling=sampling)
sampler = EpisodeSampler(survey, np.arange(14), np.arange(624), sampling,
                         reference_groups=np.arange(14))
"""

JAX_PATH = SETUP + """
from gpo.training.device_sampler import DeviceSampler
from gpo.training.packing import choose_layout, pack_rows
from gpo.training.steps import (init_model_state, init_optimizer_state, make_device_steps,
                                make_optimizer, make_train_step)
mesh = make_mesh()
references = References.from_survey(survey, np.arange(14), np.arange(624))
table = jax.device_put(survey_option_table(emb, EmbeddingStats.fit(emb, survey.option_mask_QxO),
                                           survey, references), replicated(mesh))
graphdef, state = init_model_state("gpo", head_config, 0, mesh)
tx = make_optimizer(train)
opt = init_optimizer_state(tx, state, mesh)
steps, host, shapes, extra = {steps}, 0.0, set(), {{}}
if "{path}" == "host":  # as gpo.training's loop: sample, pack, put, dispatch; read a step late
    step = make_train_step(graphdef, tx, "gaussian_nll", mesh)
    def one(i):
        global state, opt
        batch = sampler.sample(i)
        shapes.add((batch.context.option_BxN.shape[1], batch.target.option_BxN.shape[1]))
        state, opt, m = step(state, opt, table, put_batch(batch, mesh))
        return m
    start = time.perf_counter()
    jax.block_until_ready(one(0)["loss"])  # compile (the first donated call recompiles once)
    jax.block_until_ready(one(1)["loss"])
    compile_s = time.perf_counter() - start
    pending = None
    start = time.perf_counter()
    for i in range(2, steps + 2):
        t = time.perf_counter()
        m = one(i)
        host += time.perf_counter() - t
        if pending is not None:
            float(pending["loss"])
        pending = m
    float(pending["loss"])
    seconds = time.perf_counter() - start
    host_ms = 1e3 * host / steps
else:  # gpo.training with train.sampler=device: n steps per dispatch, metrics read per call
    device_sampler, arrays = DeviceSampler.build(survey, np.arange(14), np.arange(624),
                                                 sampling, reference_groups=np.arange(14))
    arrays = jax.device_put(arrays, replicated(mesh))
    sample = lambda step: device_sampler.sample(arrays, step)
    start = time.perf_counter()
    layout = None  # "device": every episode padded to the most points it may have
    if "{path}" == "packed":  # as train.packing=rows: episodes several to a row
        layout = choose_layout(sample, head_config.width, multiple=len(jax.devices()))
        shapes.add(dataclasses.astuple(layout))
    extra["capacity"] = "%d + %d" % (device_sampler.context_capacity,
                                     device_sampler.target_capacity)
    run = make_device_steps(graphdef, tx, "gaussian_nll", mesh, device_sampler, layout)
    per_call = min({per_call}, steps)
    run.lower(state, opt, table, arrays, 0, per_call).compile()  # cached for the calls below
    compile_s = time.perf_counter() - start
    shapes.add(({batch}, device_sampler.context_capacity, device_sampler.target_capacity))
    done, start = 0, time.perf_counter()
    while done < steps:
        t = time.perf_counter()
        state, opt, m = run(state, opt, table, arrays, done, per_call)
        host += time.perf_counter() - t
        loss = np.asarray(m["loss"])  # waits for the device: not host work
        t = time.perf_counter()
        np.isfinite(loss).all()
        host += time.perf_counter() - t
        done += per_call
    seconds = time.perf_counter() - start
    host_ms, steps = 1e3 * host / done, done
    if layout is not None:  # the timed steps whose episodes did not fit the rows
        fits = jax.jit(jax.vmap(lambda step: pack_rows(sample(step), layout)[1]))
        extra["layout"] = dataclasses.asdict(layout)
        extra["unpacked_fraction"] = 1 - float(np.mean(fits(jnp.arange(done))))
print(json.dumps({{"devices": len(jax.devices()), "platform": jax.devices()[0].platform,
                  "steps_per_s": steps / seconds, "compile_s": compile_s,
                  "host_ms_per_step": host_ms, "shapes": len(shapes), **extra}}))
"""

TORCH_PATH = SETUP + """
import torch
from torch import nn
torch.manual_seed(0)
device = "cuda" if torch.cuda.is_available() else "cpu"
E, D, H, L, F = 576, 128, 4, 6, 128


def mlp(d_in, d_out, depth):
    dims = [d_in] + [D] * (depth - 1) + [d_out]
    layers = []
    for a, b in zip(dims, dims[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class ReferenceGPO(nn.Module):
    # As GPO's reference code: context and target tokens in one sequence through
    # nn.TransformerEncoder, an attention mask letting every token see only the context,
    # a Python loop for the softmax within each question.
    def __init__(self):
        super().__init__()
        self.embedder = mlp(E + 1, D, 4)
        layer = nn.TransformerEncoderLayer(D, H, F, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, L, enable_nested_tensor=False)
        self.predictor = mlp(D, 2, 2)

    def forward(self, xc, yc, xt, mask_c, mask_t, questions_t):
        B, C, T = xc.shape[0], xc.shape[1], xt.shape[1]
        tokens = torch.cat([self.embedder(torch.cat([xc, yc[..., None]], -1)),
                            self.embedder(torch.cat([xt, torch.zeros_like(xt[..., :1])], -1))], 1)
        blocked = torch.ones(B, C + T, C + T, dtype=torch.bool, device=xc.device)
        blocked[:, :, :C] = ~mask_c[:, None, :]   # only real context points are keys
        blocked = blocked.repeat_interleave(H, 0)
        out = self.predictor(self.encoder(tokens, mask=blocked)[:, C:])
        logits, log_std = out[..., 0], out[..., 1]
        probs = torch.zeros_like(logits)
        for b in range(B):
            for q in torch.unique(questions_t[b][mask_t[b]]):
                where = (questions_t[b] == q) & mask_t[b]
                probs[b, where] = torch.softmax(logits[b, where], 0)
        return probs, log_std.exp()


model = ReferenceGPO().to(device)
optimiser = torch.optim.Adam(model.parameters(), lr=3e-4)
emb_t = torch.tensor(emb.reshape(-1, E), device=device)


def one(i):
    episodes = sampler.sample(i)
    c, t = (jax.tree.map(lambda v: torch.as_tensor(np.asarray(v), device=device), part)
            for part in (episodes.context, episodes.target))
    xc, xt = emb_t[c.option_BxN.long()], emb_t[t.option_BxN.long()]
    prob, std = model(xc, c.prob_BxN, xt, c.mask_BxN, t.mask_BxN, t.question_BxN)
    z = (t.prob_BxN - prob) / std
    nll = 0.5 * z ** 2 + std.log()
    loss = torch.where(t.mask_BxN, nll, 0.0).sum(-1).mean()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    return float(loss)


start = time.perf_counter()
one(0)
compile_s = time.perf_counter() - start
start = time.perf_counter()
for i in range(1, {steps} + 1):
    one(i)
seconds = time.perf_counter() - start
print(json.dumps({{"devices": 1, "platform": device, "steps_per_s": {steps} / seconds,
                  "compile_s": compile_s, "host_ms_per_step": float("nan"), "shapes": 0}}))
"""


class Utilisation:
    """Mean GPU utilisation (nvidia-smi, every 100 ms) while a block runs; None without one."""

    def __enter__(self):
        self.samples, self.proc = [], None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "100"], stdout=subprocess.PIPE, text=True)
            self.reader = threading.Thread(target=self._read, daemon=True)
            self.reader.start()
        return self

    def _read(self):
        for line in self.proc.stdout:
            if line.strip().isdigit():
                self.samples.append(int(line.strip()))

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()

    @property
    def mean(self) -> float | None:
        # the first samples fall in start-up and compilation: score the second half
        half = self.samples[len(self.samples) // 2:]
        return sum(half) / len(half) if half else None


def throughput(devices: int, steps: int, batch_size: int = 32, path: str = "device",
               per_call: int = 50, platform: str = "cpu", matmul_dtype: str = "float32") -> dict:
    """Steps/s at the paper's episode sizes for one path ('host', 'device', 'packed' or
    'torch'; GPO's matmuls in `matmul_dtype`, torch's in float32), in a fresh process with
    `devices` devices (importing torch next to XLA slows XLA's CPU threads, so each side runs
    alone)."""
    env = dict(os.environ)
    if platform == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
    if devices > 1:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    template = TORCH_PATH if path == "torch" else JAX_PATH
    code = template.format(steps=steps, batch=batch_size, path=path, per_call=per_call,
                           matmul_dtype=matmul_dtype)
    with Utilisation() as gpu:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True)
    if done.returncode:
        raise RuntimeError(f"{path} throughput run failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["gpu_utilisation"] = gpu.mean if platform != "cpu" else None
    result["path"] = path
    result["matmul_dtype"] = "float32" if path == "torch" else matmul_dtype
    return result


def has_torch() -> bool:
    done = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True)
    return done.returncode == 0


def latency(repeats: int = 50) -> dict:
    """adapt (20 context questions) + predict (500 target options), after compilation."""
    import numpy as np
    from flax import nnx

    from gpo.api import GroupPreferenceModel
    from gpo.config import RunConfig
    from gpo.models import GPO, GPOConfig
    from gpo.points import EmbeddingStats

    E = 576
    stats = EmbeddingStats(np.zeros(E, np.float32), np.ones(E, np.float32))
    model = GroupPreferenceModel(RunConfig(head="gpo"),
                                 GPO(GPOConfig.paper(E), rngs=nnx.Rngs(0)), stats)
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


def path_rows(args) -> dict:
    """Each training path at the paper config, measured in this run."""
    names = {"host": "host sampler (one step a dispatch)",
             "device": f"device sampler, padded ({args.per_call}/dispatch)",
             "packed": f"device sampler, packed ({args.per_call}/dispatch)",
             "torch": "PyTorch, as the reference code"}
    if "torch" in args.paths and not has_torch():
        print("(PyTorch reference skipped: torch is not installed; pip install -e '.[torch]')")
        args.paths = [p for p in args.paths if p != "torch"]
    rows = {}
    for dtype in args.matmul_dtype:
        for path in args.paths:
            if path == "torch" and dtype != "float32":
                continue
            name = names[path] + (f", {dtype} matmuls" if dtype != "float32" else "")
            rows[name] = throughput(1, args.torch_steps if path == "torch" else args.steps,
                                    args.batch_size, path, args.per_call, args.platform, dtype)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50,
                        help="timed steps a JAX path (default: 50)")
    parser.add_argument("--torch-steps", type=int, default=10,
                        help="timed steps of the PyTorch reference (default: 10)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="episodes a step (default: 32, the paper's)")
    parser.add_argument("--per-call", type=int, default=50,
                        help="device sampler: steps a dispatch (default: 50, as "
                             "train.steps_per_call)")
    parser.add_argument("--paths", nargs="+", default=["host", "device", "packed", "torch"],
                        choices=["host", "device", "packed", "torch"],
                        help="training paths to time: host sampler, device sampler with each "
                             "episode padded (train.packing=off) or packed several a row "
                             "(train.packing=rows), PyTorch (default: all four)")
    parser.add_argument("--matmul-dtype", nargs="+", default=["float32"],
                        choices=["float32", "bfloat16"],
                        help="GPO's matmul dtypes to time each JAX path with "
                             "(model.matmul_dtype; default: float32)")
    parser.add_argument("--platform", default="cpu", choices=["cpu", "gpu"],
                        help="where JAX and torch run (default: cpu)")
    parser.add_argument("--repeats", type=int, default=50,
                        help="adapt + predict calls timed (default: 50)")
    parser.add_argument("--no-devices", action="store_true",
                        help="skip 8 simulated CPU devices against 1")
    parser.add_argument("--no-latency", action="store_true", help="skip adapt + predict")
    parser.add_argument("--out", default="reports/bench_train.json",
                        help="JSON report (default: reports/bench_train.json)")
    args = parser.parse_args()
    report: dict = {"batch_size": args.batch_size, "paths": path_rows(args)}
    if not args.no_devices:
        # as gpo.training on a CPU (train.packing=auto): packed rows
        report["devices"] = {str(n): throughput(n, args.steps, args.batch_size, "packed",
                                                args.per_call) for n in (1, 8)}
    if not args.no_latency:
        report["latency_ms"] = latency(args.repeats)
    print(render(report))
    from gpo.evaluation.report import write_json
    print(f"wrote {write_json(args.out, report)}")


def render(report: dict) -> str:
    """What main prints, from its JSON report."""
    paths, batch = report["paths"], report["batch_size"]
    gpu = any(r.get("gpu_utilisation") is not None for r in paths.values())
    width = max(36, *map(len, paths))
    lines = [f"GPO meta-training, paper config ({batch} episodes/step, 10-100 + 10-100 "
             f"questions), {next(iter(paths.values()))['platform']}",
             f"  {'path':<{width}} {'steps/s':>8} {'episodes/s':>10} {'host ms/step':>12} "
             f"{'compile s':>9} {'shapes':>6}" + ("  GPU util %" if gpu else "")]
    for name, r in paths.items():
        util = r.get("gpu_utilisation")
        lines.append(f"  {name:<{width}} {r['steps_per_s']:8.3f} {batch * r['steps_per_s']:10.1f} "
                     f"{r['host_ms_per_step']:12.2f} {r['compile_s']:9.1f} {r['shapes']:6d}"
                     + (f"  {util:10.0f}" if util is not None else ""))
    by_path = {r["path"]: r for r in paths.values()
               if r.get("matmul_dtype", "float32") == "float32"}
    packed = by_path.get("packed")
    if packed:
        rows = packed["layout"]
        lines.append(f"  packed: {rows['rows']} rows of {rows['context_length']} context + "
                     f"{rows['target_length']} target points for {batch} episodes "
                     f"(padded: {batch} of {packed['capacity']}); "
                     f"{100 * packed['unpacked_fraction']:.0f}% of the timed steps did not fit "
                     "and trained padded")
    host, torch = by_path.get("host"), by_path.get("torch")
    for label, new in (("padded", by_path.get("device")), ("packed", packed)):
        if new and host:
            lines.append(f"  ratio device sampler ({label}) / host sampler  "
                         f"{new['steps_per_s'] / host['steps_per_s']:.2f}x")
        if new and torch:
            lines.append(f"  ratio device sampler ({label}) / PyTorch       "
                         f"{new['steps_per_s'] / torch['steps_per_s']:.2f}x (target >= 1.5x)")
    for r in paths.values():
        if r.get("matmul_dtype", "float32") != "float32" and r["path"] in by_path:
            lines.append(f"  ratio {r['matmul_dtype']} / float32 matmuls ({r['path']})     "
                         f"{r['steps_per_s'] / by_path[r['path']]['steps_per_s']:.2f}x")
    if "devices" in report:
        one, eight = report["devices"]["1"], report["devices"]["8"]
        lines.append(f"  packed, 1 CPU device          {one['steps_per_s']:6.3f} steps/s")
        lines.append(f"  packed, 8 simulated devices   {eight['steps_per_s']:6.3f} steps/s "
                     f"({eight['steps_per_s'] / one['steps_per_s']:.2f}x; simulated devices "
                     "share the same cores: no speed-up is expected on CPU)")
    if "latency_ms" in report:
        lat = report["latency_ms"]
        lines.append(f"adapt + predict, 20 context questions, 500 target options: median "
                     f"{lat['median_ms']:.1f} ms, p90 {lat['p90_ms']:.1f} ms "
                     f"(target < 20 ms: {'met' if lat['median_ms'] < 20 else 'not met'})")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
