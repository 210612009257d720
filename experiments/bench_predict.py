"""predict() at scale: time and peak memory for growing numbers of target options, each size
in a fresh process (peak resident memory is a process's high-water mark), GPO at the paper's
config, timed on a second call (the first compiles).

    python experiments/bench_predict.py --options 1000 10000 100000

Linear means the time and memory ratios follow the options' ratio (memory above a fixed
base: the interpreter, JAX and the model).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

OPTIONS_PER_QUESTION = 4
E = 576  # SmolLM2's width


def one(n_options: int) -> dict:
    """In this process: adapt to 20 context questions, predict n_options target options."""
    import time

    import numpy as np
    from flax import nnx

    from gpo.api import GroupPreferenceModel
    from gpo.config import RunConfig
    from gpo.models import GPO, GPOConfig
    from gpo.points import EmbeddingStats

    stats = EmbeddingStats(np.zeros(E, np.float32), np.ones(E, np.float32))
    model = GroupPreferenceModel(RunConfig(head="gpo"),
                                 GPO(GPOConfig.paper(E), rngs=nnx.Rngs(0)), stats)
    rng = np.random.default_rng(0)
    context = [(rng.normal(size=(OPTIONS_PER_QUESTION, E)).astype(np.float32),
                rng.dirichlet(np.ones(OPTIONS_PER_QUESTION))) for _ in range(20)]
    question = rng.normal(size=(OPTIONS_PER_QUESTION, E)).astype(np.float32)
    targets = [question] * (n_options // OPTIONS_PER_QUESTION)
    group = model.adapt(context)
    group.predict(targets[:2])
    base_mb = peak_rss_mb()
    group.predict(targets)  # compiles this size's shapes
    start = time.perf_counter()
    predictions = group.predict(targets)
    seconds = time.perf_counter() - start
    assert len(predictions) == len(targets)
    peak_mb = peak_rss_mb()
    return {"options": n_options, "seconds": seconds, "peak_mb": peak_mb, "base_mb": base_mb}


def peak_rss_mb() -> float:
    """This process's resident high-water mark. Linux's VmHWM, where getrusage's ru_maxrss
    would carry over the parent's: a process started by a large one (bench_all, with torch
    and the LLM loaded) would report the parent's peak."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(kb) / 1024


def measure(sizes: list[int]) -> list[dict]:
    """one(n) for each size, each in a fresh Python process."""
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], check=True,
                             capture_output=True, text=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", type=int, nargs="+", default=[1000, 10000, 100000],
                        help="target options per predict() call (default: 1000 10000 100000)")
    parser.add_argument("--out", default="reports/bench_predict.json",
                        help="JSON report (default: reports/bench_predict.json)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    report = {"predict": measure(args.options)}
    print(render(report))
    from gpo.evaluation.report import write_json
    print(f"wrote {write_json(args.out, report)}")


def render(report: dict) -> str:
    """The table main prints, from its JSON report."""
    rows = report["predict"]
    first = rows[0]
    lines = [f"{'options':>8}  {'seconds':>8}  {'peak MB':>8}  {'above base':>10}  "
             f"{'time ratio':>10}  {'options ratio':>13}"]
    for r in rows:
        lines.append(f"{r['options']:>8}  {r['seconds']:>8.2f}  {r['peak_mb']:>8.0f}  "
                     f"{r['peak_mb'] - r['base_mb']:>10.0f}  "
                     f"{r['seconds'] / first['seconds']:>10.1f}  "
                     f"{r['options'] / first['options']:>13.0f}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
