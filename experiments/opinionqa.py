"""GPO on OpinionQA beside every baseline: alignment at k context questions, over group splits.

    python experiments/opinionqa.py --data-dir ../shared/data/opinionqa
    python experiments/opinionqa.py --data-dir ../shared/data/opinionqa --protocols A B \
        --seeds 0 1 2 --steps 1500

Embeds the 624 questions answered by all 36 groups with the chosen frozen LLM (cached under
--cache-dir), meta-trains one run per (protocol, split seed) under --runs (resumed if present),
then prints mean ± std over splits and writes a JSON report.
"""

from __future__ import annotations

import time
from pathlib import Path

from gpo.config import DataConfig, EmbedConfig, RunConfig, TrainConfig
from gpo.experiment import embed, experiment_parser, load_survey, train_and_evaluate
from gpo.report import format_table, write_json


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/",
                               out="reports/opinionqa.json", runs="runs/opinionqa", steps=1500,
                               precomputed=True)
    parser.add_argument("--protocols", nargs="+", default=["A"], choices=["A", "B"])
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--questions-per-episode", type=int, nargs=2, default=[5, 30],
                        help="context and target question range (GPO: 10 100)")
    parser.add_argument("--loss", default="gaussian_nll", choices=["gaussian_nll", "kl"])
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args()

    data = DataConfig(dataset="opinionqa", data_dir=args.data_dir)
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    start = time.perf_counter()
    embeddings = embed(survey, embed_config, args.embeddings)
    print(f"{survey}; {args.embedder} embeddings {embeddings.shape} in "
          f"{time.perf_counter() - start:.0f}s")
    lo, hi = args.questions_per_episode
    train_config = TrainConfig(steps=args.steps, batch_size=args.batch_size,
                               context_range=(lo, hi), target_range=(lo, hi), loss=args.loss,
                               learning_rate=args.learning_rate, eval_every=250,
                               checkpoint_every=250)
    report = {"embedder": args.embedder, "train": train_config.__dict__, "protocols": {}}
    for protocol in args.protocols:
        config = RunConfig(data=DataConfig(dataset="opinionqa", data_dir=args.data_dir,
                                           protocol=protocol),
                           embed=embed_config, train=train_config)
        run_dir = Path(args.runs) / f"{args.embedder}_{protocol}_{args.loss}"
        per_k = train_and_evaluate(config, survey, embeddings, run_dir, args.ks,
                                   args.seeds).per_k
        rows = {m: {f"k={k}": per_k[k][m] for k in args.ks} for m in per_k[args.ks[0]]}
        print(format_table(f"\nOpinionQA protocol {protocol}: alignment, mean ± std over "
                           f"splits {args.seeds}", rows, [f"k={k}" for k in args.ks]))
        if protocol == "B":
            print("* reads training groups' answers on the held-out questions")
        report["protocols"][protocol] = {str(k): v for k, v in per_k.items()}
    print(f"\nwrote {write_json(args.out, report)}")


if __name__ == "__main__":
    main()
