"""What bfloat16 matmuls (`model.matmul_dtype=bfloat16`: multiply in bf16, accumulate in f32,
weights, layer norms and softmax in f32) do to GPO's alignment: the same splits and the same
training episodes in float32 and in bfloat16, scored on the test groups, and the paired
difference per test group with its bootstrap interval.

    python experiments/matmul_dtype.py --data-dir ../shared/data [--steps 400] [--seeds 0 1 2]

On a CPU bfloat16 saves no time (XLA's CPU matmuls are not faster in bf16); the switch is for
accelerators, whose tensor cores multiply bf16 at several times the f32 rate.
"""

from __future__ import annotations

from common import (
    embed,
    experiment_parser,
    load_survey,
    main_guard,
    merge_variants,
    train_and_evaluate,
    variant_run,
)

from gpo.config import DataConfig, EmbedConfig
from gpo.evaluation.metrics import paired_difference
from gpo.evaluation.report import format_table, paired_by_k, write_json

KS = (5, 10, 20)
DTYPES = ("float32", "bfloat16")


def main() -> None:
    parser = experiment_parser(__doc__, data_help="the shared data folder (opinionqa/ in it)",
                               out="reports/matmul_dtype.json")
    args = parser.parse_args()
    data = DataConfig(dataset="opinionqa", data_dir=args.data_dir, protocol="A")
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    survey = load_survey(data)
    embeddings = embed(survey, embed_config)
    runs = {}
    for dtype in DTYPES:
        config, run_dir = variant_run(args, f"GPO {dtype}", "gpo", {"matmul_dtype": dtype}, data,
                                      embed_config)
        runs[f"GPO {dtype}"] = train_and_evaluate(config, survey, embeddings, run_dir, KS,
                                                  args.seeds)
    evaluation = merge_variants(runs)
    print(format_table(f"\nopinionqa_A: {survey}; alignment, mean ± std over splits "
                       f"{args.seeds}", evaluation.rows(KS), [f"k={k}" for k in KS]))
    low, full = (f"GPO {dtype}" for dtype in reversed(DTYPES))
    paired = {k: paired_difference(evaluation.per_group(low, k)[1],
                                   evaluation.per_group(full, k)[1]) for k in KS}
    print(f"{low} - {full}, paired over {len(evaluation.per_group(low, KS[0])[1])} test "
          "groups x splits, mean [bootstrap 95% interval]:")
    print(paired_by_k(paired))
    write_json(args.out, {"k": list(KS), "paired_bf16_minus_f32": paired,
                          "evaluation": evaluation.to_json()})
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main_guard(main)
