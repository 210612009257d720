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
              "groups": len(survey.groups), "questions": len(survey.questions), "protocols": {},
              "seconds": {}}
    for protocol in PROTOCOLS:
        start = time.perf_counter()
        report["protocols"][protocol] = run_baselines(survey, protocol, tuple(args.seeds),
                                                      args.k, metric, embeddings)
        report["seconds"][protocol] = round(time.perf_counter() - start, 1)
        print("\n" + render(report, protocol))
    out = write_json(args.out or f"reports/baselines_{survey.name}.json", report)
    print(f"\nwrote {out}")


PROTOCOLS = {"A": "unseen groups", "B": "unseen groups and questions"}


def render(report: dict, protocol: str) -> str:
    """One protocol's table, as printed and as docs/results.md holds it (write_docs.py)."""
    results = report["protocols"][protocol]
    title = (f"Protocol {protocol} ({PROTOCOLS[protocol]}), "
             f"{report['seconds'][protocol]:.1f}s")
    marked = {name + ("" if protocol == "A" or name in USES_ONLY_CONTEXT else " *"):
              {"alignment": v} for name, v in results.items()}
    table = format_table(title, marked, ["alignment"]).lstrip("\n")
    if protocol == "B":
        table += ("\n* reads training groups' answers on the held-out questions: a reference "
                  "point, not a protocol-B competitor")
    return table


def render_markdown(report: dict, part: str | None = None) -> str:
    """A protocol's table (`A`, `B`), or every protocol's (no part)."""
    return "```\n" + "\n\n".join(render(report, p) for p in ([part] if part else PROTOCOLS)
                                  ) + "\n```"


if __name__ == "__main__":
    main()
