"""The `gpo` command: embed, train, calibrate, eval, predict, suggest, demo. Each subcommand
parses its flags and calls one library function; heavy modules load only once a subcommand
runs."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import zipfile
from pathlib import Path

from gpo.data.datasets import DATASETS
from gpo.intervals import DEFAULT_LEVEL

# gpo.evaluation.prompting.STYLES, written out so that `gpo --help` imports no JAX (a test
# keeps the two equal).
PROMPT_STYLES = ("zero-shot", "steered-QA", "steered-BIO", "steered-PORTRAY", "few-shot")

# gpo.models.registry.head_names(), written out for the same reason (a test keeps them equal).
HEADS = ("reference", "gpo", "pal", "ppd")
TRAIN_EPILOG = f"""heads (--set head=NAME): {', '.join(HEADS)} (default: reference)
datasets (--set data.dataset=NAME): {', '.join(DATASETS)}
config fields: the sections data, embed, model and train of gpo.RunConfig; an example
  config file is in README (CLI). Every field can be set with --set SECTION.FIELD=VALUE,
  e.g. --set train.steps=2000 --set data.protocol=B --set embed.model=minilm"""

CONTEXT_FORMAT = """context JSON: a list of objects, one per answered question:
  [{"question": "WORLDDANGER_W26", "distribution": [0.2, 0.6, 0.2], "respondents": 420},
   {"question": {"text": "Do you own a gun?", "options": ["Yes", "No"]},
    "distribution": [0.3, 0.7], "respondents": 415}]
  "question" is a survey key of the run (model.question_keys; gpo suggest lists some) or
  {"text", "options"}; "distribution" has one non-negative number per option (normalised);
  "respondents" (optional, for every entry or none) is how many people answered, which lets
  the reference head weigh a small group's answers less."""
QUESTIONS_FORMAT = """questions JSON: a list of questions to predict, each a survey key or
  {"text": ..., "options": [...]}, e.g. ["WORRYG_W26", {"text": "Is tea good?",
  "options": ["Yes", "No"]}]"""
CANDIDATES_FORMAT = """candidates JSON: the questions to choose from, as gpo predict's questions
  JSON: survey keys of the run, or {"text": ..., "options": [...]} questions new to the run
  (no training group answered those, so they come last, with gain 0)."""


def _config(args):
    from gpo.config import RunConfig
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
    import dataclasses
    import time

    from gpo.config import user_cache_dir
    from gpo.pipeline import train_run
    from gpo.sharding import maybe_initialize_distributed
    start = time.perf_counter()
    maybe_initialize_distributed()
    config = _config(args)
    if not args.no_cache and (args.cache_dir or config.embed.cache_dir is None):
        cache = args.cache_dir or str(user_cache_dir() / "embeddings")
        config = dataclasses.replace(config, embed=dataclasses.replace(config.embed,
                                                                       cache_dir=cache))
    result = train_run(config, args.run_dir, progress=not args.quiet,
                       announce=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps({"run_dir": str(result.run_dir), "steps": result.steps,
                      "best_validation": result.best_validation, "best_step": result.best_step,
                      "seconds": round(result.seconds, 1),
                      "total_seconds": round(time.perf_counter() - start, 1)}))


def cmd_eval(args) -> None:
    from gpo.evaluation.plots import plot_alignment_vs_k, plot_per_group
    from gpo.evaluation.report import (
        evaluation_table,
        held_out,
        html_definitions,
        html_facts,
        html_table,
        write_html,
        write_json,
    )
    from gpo.pipeline import evaluate_saved_run
    llm = None
    if args.llm_baselines:
        from gpo.config import user_cache_dir
        from gpo.embed.letters import LetterScorer
        from gpo.evaluation.prompting import PromptingBaselines
        llm = PromptingBaselines(LetterScorer(args.llm, cache_dir=user_cache_dir()
                                              / "llm_answers"),
                                 tuple(args.llm_styles or PROMPT_STYLES))
    evaluation, survey, what = evaluate_saved_run(args.run_dir, args.k, args.seeds,
                                                   args.data_dir, args.all_questions, llm,
                                                   args.llm_questions)
    title = (f"{survey.name}, protocol {evaluation.protocol}, split seed "
             f"{evaluation.splits[0].seed}: {len(evaluation.splits[0].groups)} held-out groups, "
             f"{what}")
    table = evaluation_table(evaluation, title, args.k)
    print(table)
    out = Path(args.out or Path(args.run_dir) / "eval")
    write_json(out / "report.json", {"evaluated": what, **evaluation.to_json()})
    plots = [plot_alignment_vs_k(evaluation, out / "alignment_vs_k.png", title),
             plot_per_group(evaluation, max(args.k), out / "per_group.png", title)]
    checkpoint = evaluation.splits[0].checkpoint or {}
    facts = html_facts({
        "run": str(args.run_dir), "data": f"{survey}: {what}",
        "split": held_out(evaluation),
        "head": f"{evaluation.head}, checkpoint of step {checkpoint.get('step')} (validation "
                f"alignment {checkpoint.get('validation')})",
        "context draws": ", ".join(str(s.seed) for s in evaluation.splits)})
    write_html(out / "report.html", f"gpo eval: {args.run_dir}",
               [facts, html_table(evaluation.rows(args.k), [f"k={k}" for k in args.k]),
                html_definitions(evaluation.metric, evaluation.methods)], plots)
    print(f"wrote {out}/report.json, report.html, alignment_vs_k.png, per_group.png")


def cmd_calibrate(args) -> None:
    from gpo.pipeline import run_survey
    from gpo.run_dir import RunDir
    from gpo.training import calibrate_trained_run
    run = RunDir(args.run_dir).require()
    calibration = calibrate_trained_run(run, run_survey(run, args.data_dir), progress=True)
    groups, folds = calibration.fitted_on["groups"], calibration.fitted_on.get("folds", 1)
    where = "validation groups" if folds == 1 else (
        f"held-out training groups (validation groups and {folds - 1} more folds)")
    print(f"calibrated {args.run_dir}'s intervals on its {len(groups)} {where} "
          f"({', '.join(calibration.conditions)}) -> {run.path / 'calibration.json'}")


def cmd_predict(args) -> None:
    from gpo.api import load
    from gpo.intervals import check_level
    level = check_level(args.level)
    context, respondents = read_context(args.context)
    questions = read_questions(args.questions)
    model = load(args.run_dir)
    predictions = model.adapt(context, respondents).predict(questions).intervals(level)
    if args.format == "table":
        print(predictions)
        return
    json.dump([p.as_dict(level) for p in predictions], sys.stdout, indent=2)
    print()


def cmd_suggest(args) -> None:
    from gpo.api import load
    model = load(args.run_dir)
    candidates = read_questions(args.candidates) if args.candidates else None
    if args.context:
        context, respondents = read_context(args.context)
        suggestions = model.adapt(context, respondents).suggest_questions(
            args.n, candidates, criterion=args.criterion, respondents=args.respondents)
    else:
        suggestions = model.suggest_questions(args.n, candidates, criterion=args.criterion,
                                              respondents=args.respondents)
    if args.json:
        json.dump(suggestions.records(), sys.stdout, indent=2)
        print()
    else:
        print(suggestions)


def _read_json(path: str, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ValueError(f"{what} file {path!r} does not exist") from err
    except IsADirectoryError as err:
        raise ValueError(f"{what} file {path!r} is a folder; give the JSON file") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} file {path!r} is not UTF-8 text ({err.reason} at byte "
                         f"{err.start})") from err
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} file {path!r} is not valid JSON: {err}") from err


def _question(raw, where: str):
    """JSON form of a question: a key string, or {"text": ..., "options": [...]}."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - {"text", "options"})
        if unknown or not {"text", "options"} <= set(raw):
            raise ValueError(f"{where}: a question object has exactly the fields 'text' and "
                             f"'options', got {sorted(raw)}")
        if not isinstance(raw["text"], str) or not (isinstance(raw["options"], list) and all(
                isinstance(o, str) for o in raw["options"])):
            raise ValueError(f"{where}: 'text' must be a string and 'options' a list of "
                             "strings")
        return (raw["text"], raw["options"])
    raise ValueError(f"{where}: a question is a key string or {{\"text\", \"options\"}}, got "
                     f"{type(raw).__name__}")


def read_context(path: str):
    """(context items, respondents or None) from a context JSON file, checked entry by
    entry (see CONTEXT_FORMAT)."""
    raw = _read_json(path, "context")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"context file {path!r}: expected a non-empty JSON list of "
                         "{\"question\", \"distribution\"} objects")
    items, counts = [], []
    for i, entry in enumerate(raw):
        where = f"context file {path!r}, entry {i}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with 'question' and "
                             f"'distribution', got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"question", "distribution", "respondents"})
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; the fields are "
                             "'question', 'distribution' and optional 'respondents'")
        for field in ("question", "distribution"):
            if field not in entry:
                raise ValueError(f"{where}: missing field {field!r}")
        distribution = entry["distribution"]
        if not isinstance(distribution, list) or not all(
                isinstance(p, int | float) and not isinstance(p, bool) for p in distribution):
            raise ValueError(f"{where}: 'distribution' must be a list of numbers")
        items.append((_question(entry["question"], where), distribution))
        count = entry.get("respondents")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int | float)):
            raise ValueError(f"{where}: 'respondents' must be a number")
        counts.append(count)
    if all(c is None for c in counts):
        return items, None
    if any(c is None for c in counts):
        missing = [i for i, c in enumerate(counts) if c is None]
        raise ValueError(f"context file {path!r}: 'respondents' given for some entries but not "
                         f"entries {missing[:5]}; give it for all or none")
    return items, counts


def read_questions(path: str) -> list:
    raw = _read_json(path, "questions")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"questions file {path!r}: expected a non-empty JSON list of questions")
    return [_question(q, f"questions file {path!r}, entry {i}") for i, q in enumerate(raw)]


def cmd_demo(args) -> None:
    from gpo.demo import run_demo
    run_demo(data_dir=args.data_dir, out=args.out, steps=args.steps, embedder=args.embedder)


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="gpo", description="Few-shot group preferences: "
                                     "embed a survey, meta-train a head, adapt to a group "
                                     "from a few of its answers, predict the rest.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("embed", help="embed a survey's options with a frozen LLM")
    p.add_argument("--dataset", default="opinionqa", choices=list(DATASETS),
                   help="which survey (default: opinionqa)")
    p.add_argument("--data-dir", help="the dataset folder or its parent (default: "
                   "$GPO_DATA_DIR)")
    p.add_argument("--model", default="smollm2",
                   help="smollm2, minilm, lexical, a .gguf file or a model folder "
                   "(default: smollm2)")
    p.add_argument("--cache-dir", help="embedding cache folder (default: none)")
    p.add_argument("--out", required=True, help="the .npz file to write")
    p.set_defaults(run=cmd_embed)

    p = sub.add_parser("train", help="meta-train a head", formatter_class=formatter,
                       epilog=TRAIN_EPILOG)
    p.add_argument("--config", help="RunConfig JSON (default: RunConfig(): the reference head "
                   "on synthetic data)")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override a config field, e.g. --set train.steps=500 --set head=gpo "
                   "(repeatable)")
    p.add_argument("--data-dir", help="the dataset folder (sets data.data_dir)")
    p.add_argument("--run-dir", required=True, help="the run folder (resumed if it exists)")
    p.add_argument("--cache-dir", help="embedding cache (default: the config's "
                   "embed.cache_dir, else $GPO_CACHE_DIR/embeddings or ~/.cache/gpo/embeddings)")
    p.add_argument("--no-cache", action="store_true", help="embed without a cache")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("calibrate", help="calibrate a run's prediction intervals on its "
                       "validation groups (training does it; for runs made before it did)")
    p.add_argument("--run-dir", required=True, help="a trained run folder")
    p.add_argument("--data-dir", help="the dataset folder, if not where the run was trained "
                   "(default: the folder the run recorded)")
    p.set_defaults(run=cmd_calibrate)

    p = sub.add_parser("eval", help="score a run beside the baselines; JSON report and plots")
    p.add_argument("--run-dir", required=True, help="a trained run folder")
    p.add_argument("--data-dir", help="the dataset folder, if not where the run was trained "
                   "(default: the folder the run recorded)")
    p.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 50],
                   help="context questions per test group (default: 5 10 20 50)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="seeds drawing the context questions (default: the run's split seed)")
    p.add_argument("--all-questions", action="store_true",
                   help="score on every question of the dataset, not only the run's own "
                   "(new ones are embedded)")
    p.add_argument("--llm-baselines", action="store_true",
                   help="also prompt an LLM: zero-shot, steered (QA, BIO, PORTRAY) and "
                   "few-shot with the group's context answers, each also averaged over the "
                   "reversed option order (answers cached in $GPO_CACHE_DIR or ~/.cache/gpo)")
    p.add_argument("--llm", default="smollm2",
                   help="the LLM --llm-baselines prompts: smollm2, a Llama-family .gguf or "
                   "Hugging Face folder (default: smollm2)")
    p.add_argument("--llm-styles", nargs="+", default=None, choices=PROMPT_STYLES,
                   metavar="STYLE",
                   help="prompting styles to score (default: all of "
                   f"{', '.join(PROMPT_STYLES)})")
    p.add_argument("--llm-questions", type=int, default=0, metavar="N",
                   help="score every method on N fixed random questions only (prompting "
                   "costs 0.2-0.4 s a prompt on 2 CPU cores; default: all)")
    p.add_argument("--out", help="report folder (default: RUN_DIR/eval)")
    p.set_defaults(run=cmd_eval)

    p = sub.add_parser("predict", help="adapt to a group's answers and predict new questions",
                       formatter_class=formatter,
                       epilog=f"{CONTEXT_FORMAT}\n\n{QUESTIONS_FORMAT}")
    p.add_argument("--run-dir", required=True, help="a trained run folder")
    p.add_argument("--context", required=True, help="the group's answers (context JSON, "
                   "format below)")
    p.add_argument("--questions", required=True, help="the questions to predict "
                   "(questions JSON, format below)")
    p.add_argument("--level", type=float, default=DEFAULT_LEVEL,
                   help=f"coverage of the printed intervals (default: {DEFAULT_LEVEL}); the run's "
                   "calibration on its validation groups makes them")
    p.add_argument("--format", choices=["json", "table"], default="json",
                   help="JSON records (default) or the readable table")
    p.set_defaults(run=cmd_predict)

    p = sub.add_parser("suggest", help="which questions to ask a group next (or first)",
                       formatter_class=formatter,
                       epilog=f"{CONTEXT_FORMAT}\n\n{CANDIDATES_FORMAT}")
    p.add_argument("--run-dir", required=True, help="a trained run folder")
    p.add_argument("--n", type=int, default=5, help="how many questions (default: 5)")
    p.add_argument("--context", help="the group's answers so far (context JSON, format "
                   "below); without it, the questions to ask a new group first")
    p.add_argument("--candidates", help="the questions to choose from (questions JSON; "
                   "default: the run's questions not yet answered)")
    p.add_argument("--criterion", choices=["metric", "posterior", "design"],
                   help="what to rank by (default: the run head's own, see "
                   "gpo.question_selection)")
    p.add_argument("--respondents", type=float,
                   help="how many people will answer each new question, if known")
    p.add_argument("--json", action="store_true", help="print JSON records, not a table")
    p.set_defaults(run=cmd_suggest)

    p = sub.add_parser("demo", help="the offline demo: embed, meta-train, adapt, compare")
    p.add_argument("--data-dir", help="OpinionQA folder (default: $GPO_DATA_DIR, else the "
                   "synthetic survey)")
    p.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: 300)")
    p.add_argument("--embedder", default="smollm2", help="frozen embedder (default: smollm2)")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run one subcommand. A user mistake or an environment fault ends in one line naming the
    file or field, exit 2; Ctrl-C in one line, exit 130; a programming error keeps its
    traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except KeyboardInterrupt:
        parser.exit(130, f"gpo {args.command}: interrupted{_resume_hint(args)}\n")
    except Exception as err:  # noqa: BLE001  (sorted into user errors and bugs below)
        message = user_error(err)
        if message is None:
            raise
        parser.exit(2, f"gpo {args.command}: error: {message}\n")


_OS_HINTS = {errno.ENOSPC: "the disk is full; free space and run the same command again",
             errno.EDQUOT: "the disk quota is used up; free space and run the same command "
                           "again",
             errno.EROFS: "the file system is read-only; choose a writable folder",
             errno.EACCES: "permission denied; check the path's permissions",
             errno.EPERM: "permission denied; check the path's permissions",
             errno.EISDIR: "a folder where a file is expected",
             errno.ENOTDIR: "a file where a folder is expected",
             errno.ENOENT: "it does not exist",
             errno.EEXIST: "it exists and is not what gpo would write there"}


def user_error(err: BaseException) -> str | None:
    """The one line for an error a user can act on (bad input, a missing, unreadable or
    wrong-kind path, a full or read-only disk, running out of memory); None for a
    programming error."""
    if isinstance(err, KeyError):
        return str(err.args[0]) if err.args else None
    if isinstance(err, UnicodeError):
        return (f"a file is not UTF-8 text ({getattr(err, 'reason', err)}); save it as UTF-8")
    if isinstance(err, ValueError):
        return str(err)
    if isinstance(err, OSError):
        if err.filename is None and err.errno is None:
            return str(err) or type(err).__name__
        hint = _OS_HINTS.get(err.errno, err.strerror or str(err))
        where = f"{err.filename}: " if err.filename else ""
        return f"{where}{hint}" + (f" ({err.strerror})" if err.strerror and err.strerror
                                   not in hint else "")
    if isinstance(err, MemoryError) or "RESOURCE_EXHAUSTED" in str(err)[:2000]:
        return ("out of memory; use a smaller train.sampling.batch_size, fewer questions a "
                "call, or a machine with more memory")
    if isinstance(err, zipfile.BadZipFile):
        return f"a file is not a valid .npz archive ({err})"
    return None


def _resume_hint(args) -> str:
    """For an interrupted `gpo train`: the step its run resumes from."""
    if args.command != "train":
        return ""
    latest = Path(args.run_dir) / "checkpoints" / "latest"
    steps = sorted(int(p.name) for p in latest.iterdir()
                   if p.name.isdigit()) if latest.is_dir() else []
    if not steps:
        return "; no checkpoint was saved yet, so the same command starts it again"
    return (f"; {args.run_dir} keeps its checkpoint of step {steps[-1]}: run the same command "
            "to resume from there")


def run() -> None:
    """The `gpo` command. An error ends the process at once after its one line: a failed
    checkpoint read leaves TensorStore threads that would print tracebacks while the
    interpreter shuts down, burying the line that matters."""
    try:
        main()
    except SystemExit as exit_:
        sys.stdout.flush()
        sys.stderr.flush()
        if exit_.code:
            os._exit(exit_.code if isinstance(exit_.code, int) else 1)
        raise


if __name__ == "__main__":
    run()
