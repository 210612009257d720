"""Baseline table on OpinionQA (alignment) or GlobalOpinionQA (JS alignment).

    python experiments/baselines.py --data-dir ../shared/data/opinionqa
    python experiments/baselines.py --data-dir ../shared/data/globalopinionqa

Prints protocols A and B (mean ± std over seeds/splits) and writes a JSON report.
"""

from __future__ import annotations

import argparse
import time

from gpo.data import data_dir, load_dataset
from gpo.embed import LexicalEmbedder, embed_survey
from gpo.evaluation.baselines import USES_ONLY_CONTEXT, run_baselines
from gpo.evaluation.report import format_table, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="dataset folder (default: $GPO_DATA_DIR)")
    parser.add_argument("--dataset", choices=["opinionqa", "globalopinionqa"],
                        help="default: detected from the folder layout")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--k", type=int, default=20, help="context questions per test group")
    parser.add_argument("--min-group-answers", type=int, default=50,
                        help="GlobalOpinionQA: keep countries with at least this many questions")
    parser.add_argument("--out", default=None, help="JSON report path")
    args = parser.parse_args()

    path = data_dir(args.data_dir)
    if path is None:
        parser.error("give --data-dir or set GPO_DATA_DIR")
    survey = load_dataset(path, args.dataset)
    if survey.name == "opinionqa":
        survey, metric = survey.complete_questions(), "wasserstein"
    else:
        survey, metric = survey.drop_sparse(args.min_group_answers), "js"
    print(f"{survey}; metric: {metric}; k = {args.k}; seeds {args.seeds}")
    embeddings = embed_survey(survey, LexicalEmbedder())

    report = {"dataset": survey.name, "metric": metric, "k": args.k, "seeds": args.seeds,
              "groups": len(survey.groups), "questions": len(survey.questions), "protocols": {}}
    for protocol in ("A", "B"):
        start = time.perf_counter()
        results = run_baselines(survey, protocol, tuple(args.seeds), args.k, metric, embeddings)
        report["protocols"][protocol] = results
        what = "unseen groups" if protocol == "A" else "unseen groups and questions"
        title = f"\nProtocol {protocol} ({what}), {time.perf_counter() - start:.1f}s"
        marked = {name + ("" if protocol == "A" or name in USES_ONLY_CONTEXT else " *"):
                  {"alignment": v} for name, v in results.items()}
        print(format_table(title, marked, ["alignment"]))
        if protocol == "B":
            print("* reads training groups' answers on the held-out questions: a reference "
                  "point, not a protocol-B competitor")
    out = write_json(args.out or f"reports/baselines_{survey.name}.json", report)
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
