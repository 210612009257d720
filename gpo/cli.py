"""The `gpo` command: embed, train, eval, predict, demo. Each subcommand parses its flags and
calls one library function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpo.config import RunConfig


def _config(args) -> RunConfig:
    config = RunConfig.load(args.config) if args.config else RunConfig()
    overrides = list(args.set or [])
    if getattr(args, "data_dir", None):
        overrides.append(f"data.data_dir={args.data_dir}")
    return config.override(overrides) if overrides else config


def cmd_embed(args) -> None:
    import numpy as np

    from gpo.config import DataConfig, EmbedConfig
    from gpo.pipeline import embed, load_survey
    survey = load_survey(DataConfig(dataset=args.dataset, data_dir=args.data_dir))
    vectors = embed(survey, EmbedConfig(model=args.model, cache_dir=args.cache_dir))
    np.savez_compressed(args.out, embeddings=vectors, keys=np.array(survey.question_keys),
                        model=np.array(args.model))
    print(f"{survey}: embeddings {vectors.shape} -> {args.out}")


def cmd_train(args) -> None:
    from gpo.pipeline import train_run
    from gpo.sharding import maybe_initialize_distributed
    maybe_initialize_distributed()
    result = train_run(_config(args), args.run_dir, progress=not args.quiet)
    print(json.dumps({"run_dir": str(result.run_dir), "steps": result.steps,
                      "best_validation": result.best_validation, "best_step": result.best_step,
                      "seconds": round(result.seconds, 1)}))


def cmd_eval(args) -> None:
    from gpo.pipeline import evaluate_saved_run
    from gpo.plots import plot_alignment_vs_k, plot_per_group
    from gpo.report import evaluation_table, write_json
    evaluation, survey, what = evaluate_saved_run(args.run_dir, args.k, args.seeds,
                                                   args.data_dir, args.all_questions)
    title = (f"{survey.name}, protocol {evaluation.protocol}, split seed "
             f"{evaluation.splits[0].seed}: {len(evaluation.splits[0].groups)} held-out groups, "
             f"{what}")
    print(evaluation_table(evaluation, title, args.k))
    out = Path(args.out or Path(args.run_dir) / "eval")
    write_json(out / "report.json", {"evaluated": what, **evaluation.to_json()})
    plot_alignment_vs_k(evaluation, out / "alignment_vs_k.png", title)
    plot_per_group(evaluation, max(args.k), out / "per_group.png", title)
    print(f"wrote {out}/report.json, alignment_vs_k.png, per_group.png")


def cmd_predict(args) -> None:
    from gpo.api import load
    model = load(args.run_dir)
    context = [(_question(item["question"]), item["distribution"])
               for item in json.loads(Path(args.context).read_text())]
    questions = [_question(q) for q in json.loads(Path(args.questions).read_text())]
    predictions = model.adapt(context).predict(questions)
    json.dump([p.as_dict() for p in predictions], sys.stdout, indent=2)
    print()


def _question(raw):
    """JSON form of a question: a key string, or {"text": ..., "options": [...]}."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and {"text", "options"} <= set(raw):
        return (raw["text"], raw["options"])
    raise ValueError(f"a question is a key or {{'text', 'options'}}, got {raw!r:.80}")


def cmd_demo(args) -> None:
    from gpo.demo import run_demo
    run_demo(data_dir=args.data_dir, out=args.out, steps=args.steps, embedder=args.embedder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gpo", description="Few-shot group preferences.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed a survey's options with a frozen LLM")
    p.add_argument("--dataset", default="opinionqa",
                   choices=["opinionqa", "globalopinionqa", "synthetic"])
    p.add_argument("--data-dir")
    p.add_argument("--model", default="smollm2",
                   help="smollm2, minilm, lexical, a .gguf file or a model folder")
    p.add_argument("--cache-dir")
    p.add_argument("--out", required=True)
    p.set_defaults(run=cmd_embed)

    p = sub.add_parser("train", help="meta-train a head")
    p.add_argument("--config", help="RunConfig JSON")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set train.steps=500 --set head=gpo")
    p.add_argument("--data-dir")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("eval", help="score a run beside the baselines; JSON report and plots")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--data-dir", help="the dataset folder, if not where the run was trained "
                   "(default: the folder the run recorded)")
    p.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 50],
                   help="context questions per test group (default: 5 10 20 50)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds drawing the context questions (default: the run's split seed)")
    p.add_argument("--all-questions", action="store_true",
                   help="score on every question of the dataset, not only the run's own "
                   "(new ones are embedded)")
    p.add_argument("--out", help="report folder (default: RUN_DIR/eval)")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("predict", help="adapt to a group's answers and predict new questions")
    p.add_argument("--run-dir", required=True)
    p.add_argument("--context", required=True,
                   help='JSON list of {"question": key or {"text","options"}, "distribution"}')
    p.add_argument("--questions", required=True, help="JSON list of questions")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("demo", help="the offline demo: embed, meta-train, adapt, compare")
    p.add_argument("--data-dir", help="OpinionQA folder (default: $GPO_DATA_DIR, else synthetic)")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--embedder", default="smollm2")
    p.set_defaults(run=cmd_demo)

    args = parser.parse_args(argv)
    try:
        args.run(args)
    except (ValueError, FileNotFoundError) as err:
        parser.exit(2, f"gpo {args.command}: error: {err}\n")


if __name__ == "__main__":
    main()
