"""Does a head's predicted std track its error? Central-interval coverage (reliability
diagram), miscalibration area and the rank correlation of |error| with std, on OpinionQA
protocol A test groups at k = 20, for the heads that predict a std per option.

    python experiments/calibration.py --data-dir ../shared/data [--heads REFERENCE GPO PPD]

Uses the run folders of experiments/heads.py (trains them first if missing). Prints the table,
writes a JSON report and reports/calibration.png.
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from common import (  # noqa: E402
    embed,
    experiment_parser,
    head_variants,
    load_survey,
    main_guard,
    train_and_evaluate,
    variant_run,
)

from gpo.config import DataConfig, EmbedConfig  # noqa: E402
from gpo.evaluation.evaluate import run_predictions  # noqa: E402
from gpo.evaluation.metrics import calibration  # noqa: E402
from gpo.evaluation.report import format_table, write_json  # noqa: E402


def main() -> None:
    parser = experiment_parser(__doc__, data_help="folder holding opinionqa/ (the same as "
                               "experiments/heads.py's, so its runs are reused)",
                               out="reports/calibration.json", precomputed=True)
    parser.add_argument("--k", type=int, default=20, help="context questions (default: 20)")
    parser.add_argument("--heads", nargs="+", default=["REFERENCE", "GPO", "PPD"],
                        choices=["REFERENCE", "GPO", "PPD"],
                        help="heads that predict a std per option (default: REFERENCE GPO PPD)")
    parser.add_argument("--plot", default="reports/calibration.png",
                        help="figure path (default: reports/calibration.png)")
    args = parser.parse_args()

    data = DataConfig(dataset="opinionqa", data_dir=args.data_dir)
    survey = load_survey(data)
    embed_config = EmbedConfig(model=args.embedder, cache_dir=args.cache_dir)
    embeddings = embed(survey, embed_config, args.embeddings)
    rows, curves = {}, {}
    for label, (head, model) in head_variants(heads=args.heads).items():
        config, root = variant_run(args, label, head, model, data, embed_config)
        train_and_evaluate(config, survey, embeddings, root, (args.k,), args.seeds,
                           log=lambda _: None, baselines=False)
        mean, std, true = [], [], []
        for seed in args.seeds:
            task, prob_GxQxO, std_GxQxO = run_predictions(root / str(seed), survey, args.k)
            scored = task.target_GxQ[..., None] & survey.option_mask_QxO[None]
            mean.append(prob_GxQxO[scored])
            std.append(std_GxQxO[scored])
            true.append(survey.probs_GxQxO[task.groups][scored])
        result = calibration(np.concatenate(mean), np.concatenate(std), np.concatenate(true))
        curves[label] = result
        at = {level: result.observed[np.argmin(np.abs(result.levels - level))]
              for level in (0.5, 0.8, 0.95)}
        rows[label] = {"coverage@50%": [at[0.5]], "coverage@80%": [at[0.8]],
                       "coverage@95%": [at[0.95]], "miscal. area": [result.miscalibration_area],
                       "spearman(|err|, std)": [result.error_std_correlation]}
    columns = list(next(iter(rows.values())))
    print(format_table(f"OpinionQA protocol A, {args.embedder}, k={args.k}: calibration of the "
                       f"predicted std, target options of test groups pooled over splits "
                       f"{args.seeds}", rows, columns))
    path = plot_reliability(curves, args.plot)
    print(f"\nwrote {write_json(args.out, {'k': args.k, 'rows': rows})}, {path}")


def plot_reliability(curves: dict, path: str) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for label, c in curves.items():
        ax.plot(c.levels, c.observed, marker="o", label=label)
    ax.set_xlabel("nominal coverage of mean ± z·std")
    ax.set_ylabel("observed coverage")
    ax.set_title("OpinionQA protocol A: predicted std", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


if __name__ == "__main__":
    main_guard(main)
