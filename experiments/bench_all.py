"""Every speed target in one table, all measured in this one run on this machine:
embedding throughput against transformers + torch, meta-training on 8 simulated devices
against 1, adapt + predict latency, predict() on 10,000 and 100,000 target options (time
and peak memory, each in a fresh process), and the metric's cost.

    python experiments/bench_all.py --data-dir ../shared/data/opinionqa

Ratios compare numbers taken minutes apart on the same machine; absolute figures move with
its load, ratios much less.
"""

from __future__ import annotations

import argparse

import bench_embed
import bench_metrics
import bench_predict
import bench_train

from gpo.evaluation.report import write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="the OpinionQA folder")
    parser.add_argument("--questions", type=int, default=48,
                        help="OpinionQA questions to embed (default: 48)")
    parser.add_argument("--train-steps", type=int, default=5,
                        help="timed training steps (default: 5)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="training episodes a step (default: 32, the paper's)")
    parser.add_argument("--repeats", type=int, default=50,
                        help="timed calls of adapt + predict and of each metric (default: 50)")
    parser.add_argument("--out", default="reports/bench_all.json",
                        help="JSON report (default: reports/bench_all.json)")
    args = parser.parse_args()

    embed = bench_embed.measure(args.data_dir, args.questions)
    # as gpo.training on a CPU: the device sampler, episodes packed several a row
    one = bench_train.throughput(1, args.train_steps, args.batch_size, "packed")["steps_per_s"]
    eight = bench_train.throughput(8, args.train_steps, args.batch_size, "packed")["steps_per_s"]
    latency = bench_train.latency(args.repeats)
    metrics = bench_metrics.measure(min(args.repeats, 20))
    small, large = bench_predict.measure([10_000, 100_000])

    report = {"embed": embed, "train_steps_per_s": {"1": one, "8": eight},
              "latency_ms": latency, "metrics_ms": metrics, "predict_scaling": [small, large]}
    print(render(report))
    print(f"wrote {write_json(args.out, report)}")


def render(report: dict) -> str:
    """The table main prints, from its JSON report."""
    embed, latency = report["embed"], report["latency_ms"]
    steps = report["train_steps_per_s"]
    small, large = report["predict_scaling"]
    texts = {name: m["texts_per_s"] for name, m in embed["methods"].items()}
    torch = texts["transformers + torch"]
    rows = [
        ("embed: ours, prefix sharing / torch", f"{texts['ours, prefix sharing']:.1f} / "
         f"{torch:.1f} texts/s", f"{texts['ours, prefix sharing'] / torch:.2f}x", ">= 3x"),
        ("embed: ours, full sequences / torch", f"{texts['ours, full sequences']:.1f} / "
         f"{torch:.1f} texts/s", f"{texts['ours, full sequences'] / torch:.2f}x", ""),
        ("train: 8 simulated devices / 1", f"{steps['8']:.3f} / {steps['1']:.3f} steps/s",
         f"{steps['8'] / steps['1']:.2f}x", "(shared cores)"),
        ("adapt + predict (20 ctx, 500 targets)", f"median {latency['median_ms']:.1f} ms, "
         f"p90 {latency['p90_ms']:.1f} ms", "", "< 20 ms"),
        (f"predict: {large['options']:,} / {small['options']:,} target options",
         f"{large['seconds']:.2f} / {small['seconds']:.2f} s, peak {large['peak_mb']:.0f} / "
         f"{small['peak_mb']:.0f} MB", f"{large['seconds'] / small['seconds']:.1f}x",
         f"<= {large['options'] / small['options']:.0f}x (linear)"),
        *[(f"metric: {name}", f"{ms:.1f} ms", "", "") for name, ms in report["metrics_ms"].items()],
    ]
    header = ("benchmark", "measured", "ratio", "target")
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
             for row in (header, tuple("-" * w for w in widths), *rows)]
    lines.append(f"(embedding: {embed['questions']} OpinionQA questions, {embed['texts']} option "
                 f"texts; max |shared - full| {embed['max_shared_vs_full']:.1e}, max |ours - "
                 f"torch| {embed['max_ours_vs_torch']:.1e}; matmul peak "
                 f"{embed['peak_gflops']:.0f} GFLOP/s)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
