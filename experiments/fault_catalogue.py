"""Bad inputs and faults, tried as a user would, with what each now answers.

    python experiments/fault_catalogue.py [--out reports/fault_catalogue.json]

Trains one tiny run (synthetic survey, lexical embedder, seconds), then tries each case
against the CLI, the Python API, the loaders and the run folder, and prints per case the
outcome (`one line`: the CLI's single stderr line and exit 2; `raises`: the API's exception;
`ok`: accepted, as it should be, with what it returned) and the message. A case that prints
a traceback, exits otherwise or is accepted where it should not be is marked `UNEXPECTED`
and the script exits 1.
tests/test_faults.py asserts one case per class; this lists them all.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

import gpo
from gpo.cli import main as cli_main
from gpo.evaluation.report import write_json

TINY = ["--set", "embed.model=lexical", "--set", "data.synthetic_groups=12", "--set",
        "data.synthetic_questions=40", "--set", "data.eval_k=5", "--set", "train.steps=20",
        "--set", "train.eval_every=10", "--set", "train.checkpoint_every=10", "--quiet",
        "--no-cache"]


def cli(argv: list[str]) -> tuple[str, str]:
    """(outcome, message) of a CLI call that should fail with one line."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            cli_main(argv)
        except SystemExit as exit_:
            text = err.getvalue().strip()
            lines = text.splitlines()
            if exit_.code == 2 and len(lines) == 1 and "Traceback" not in text:
                return "one line", lines[0]
            return "UNEXPECTED", f"exit {exit_.code}: {text[-300:]}"
        except Exception as error:  # noqa: BLE001  (a traceback would reach the user)
            return "UNEXPECTED", f"traceback: {type(error).__name__}: {error}"
    return "UNEXPECTED", "accepted"


def api(call: Callable[[], object]) -> tuple[str, str]:
    """(outcome, message) of an API call that should raise one clear exception."""
    try:
        call()
    except (ValueError, KeyError, FileNotFoundError) as error:
        return "raises", f"{type(error).__name__}: {error}"
    except Exception as error:  # noqa: BLE001
        return "UNEXPECTED", f"{type(error).__name__}: {error}"
    return "UNEXPECTED", "accepted"


def accepted(call: Callable[[], object]) -> tuple[str, str]:
    """(outcome, result) of an API call that should succeed."""
    try:
        return "ok", str(call())
    except Exception as error:  # noqa: BLE001
        return "UNEXPECTED", f"{type(error).__name__}: {error}"


def cases(tmp: Path, run: Path) -> dict[str, Callable[[], tuple[str, str]]]:
    def write(name: str, content: str | bytes) -> str:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    model = gpo.load(run)
    key = model.question_keys[0]
    n = len(model.options(key))
    good_context = write("good_ctx.json", json.dumps([{"question": key,
                                                       "distribution": [1] * n}]))
    questions = write("qs.json", json.dumps([model.question_keys[1]]))

    def predict(context: str, qs: str = questions) -> tuple[str, str]:
        return cli(["predict", "--run-dir", str(run), "--context", context, "--questions", qs])

    def damaged_copy(name: str, damage: Callable[[Path], None]) -> str:
        copy = tmp / name
        shutil.copytree(run, copy)
        damage(copy)
        return str(copy)

    def edit_config(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        config["train"]["learning_rate"] = 0.5
        (folder / "config.json").write_text(json.dumps(config))

    blocker = write("a_file", "")
    train = ["train", "--run-dir", str(tmp / "new_run"), *TINY]
    return {
        # -- paths -----------------------------------------------------------------------
        "eval: run folder that does not exist": lambda: cli(
            ["eval", "--run-dir", str(tmp / "nope")]),
        "eval: run folder is a file": lambda: cli(["eval", "--run-dir", blocker]),
        "eval: folder holding no run": lambda: cli(["eval", "--run-dir", str(tmp)]),
        "eval: --out below a file": lambda: cli(
            ["eval", "--run-dir", str(run), "--k", "5", "--out", f"{blocker}/sub"]),
        "train: --config missing": lambda: cli(
            ["train", "--config", str(tmp / "none.json"), "--run-dir", str(tmp / "r")]),
        "train: --config is a folder": lambda: cli(
            ["train", "--config", str(tmp), "--run-dir", str(tmp / "r")]),
        "train: --run-dir is a file": lambda: cli(["train", "--run-dir", blocker, *TINY]),
        "predict: --context missing": lambda: predict(str(tmp / "none.json")),
        "predict: --context is a folder": lambda: predict(str(tmp)),
        "demo: --data-dir missing": lambda: cli(["demo", "--data-dir", str(tmp / "nope")]),
        # -- config ------------------------------------------------------------------------
        "train: --config invalid JSON": lambda: cli(
            ["train", "--config", write("bad.json", "{"), "--run-dir", str(tmp / "r")]),
        "train: --config a JSON list": lambda: cli(
            ["train", "--config", write("list.json", "[1]"), "--run-dir", str(tmp / "r")]),
        "train: --config not UTF-8": lambda: cli(
            ["train", "--config", write("latin.json", b"\xff\xfe"), "--run-dir",
             str(tmp / "r")]),
        "train: --config unknown section field": lambda: cli(
            ["train", "--config", write("field.json", '{"train": {"stepz": 3}}'),
             "--run-dir", str(tmp / "r")]),
        "train: --set a badly typed value": lambda: cli([*train, "--set", "train.steps=abc"]),
        "train: --set an unknown field": lambda: cli([*train, "--set", "nosuch.field=1"]),
        "train: embed.dim=0": lambda: cli([*train, "--set", "embed.dim=0"]),
        "train: embed.dim=-5": lambda: cli([*train, "--set", "embed.dim=-5"]),
        "train: embed.batch_size=0": lambda: cli([*train, "--set", "embed.batch_size=0"]),
        "train: negative warmup_steps": lambda: cli([*train, "--set", "train.warmup_steps=-1"]),
        "train: negative weight_decay": lambda: cli(
            [*train, "--set", "train.weight_decay=-0.1"]),
        "train: train_fraction 1.5": lambda: cli([*train, "--set", "data.train_fraction=1.5"]),
        "train: eval_k beyond the questions": lambda: cli(
            [*train, "--set", "data.eval_k=1000"]),
        "train: unknown dataset": lambda: cli([*train, "--set", "data.dataset=nosuch"]),
        "train: unknown head": lambda: cli([*train, "--set", "head=nosuch"]),
        "train: data folder that does not exist": lambda: cli(
            [*train, "--set", "data.dataset=opinionqa", "--data-dir", str(tmp / "nope")]),
        "train: a finished run with a changed config": lambda: cli(
            ["train", "--run-dir", str(run), *TINY, "--set", "train.learning_rate=0.01"]),
        # -- run folder ----------------------------------------------------------------------
        "eval: edited config.json": lambda: cli(["eval", "--run-dir", damaged_copy(
            "edited", edit_config)]),
        "eval: truncated run.json": lambda: cli(["eval", "--run-dir", damaged_copy(
            "truncated", lambda f: (f / "run.json").write_text(
                (f / "run.json").read_text()[:100]))]),
        "eval: damaged arrays.npz": lambda: cli(["eval", "--run-dir", damaged_copy(
            "arrays", lambda f: (f / "arrays.npz").write_bytes(b"PK\x03\x04junk"))]),
        "eval: --k 0": lambda: cli(["eval", "--run-dir", str(run), "--k", "0"]),
        "eval: --k beyond the questions": lambda: cli(
            ["eval", "--run-dir", str(run), "--k", "100000"]),
        "demo: --steps 0": lambda: cli(["demo", "--steps", "0"]),
        # -- predict's files ----------------------------------------------------------------
        "predict: context invalid JSON": lambda: predict(write("c1.json", "[{")),
        "predict: context an object, not a list": lambda: predict(
            write("c2.json", json.dumps({"question": key}))),
        "predict: entry without 'question'": lambda: predict(
            write("c3.json", json.dumps([{"distribution": [1] * n}]))),
        "predict: unknown question key": lambda: predict(
            write("c4.json", json.dumps([{"question": "NOSUCH", "distribution": [1, 1]}]))),
        "predict: distribution of the wrong length": lambda: predict(
            write("c5.json", json.dumps([{"question": key, "distribution": [1] * (n + 1)}]))),
        "predict: negative shares": lambda: predict(
            write("c6.json", json.dumps([{"question": key,
                                          "distribution": [-1] + [1] * (n - 1)}]))),
        "predict: respondents for some entries only": lambda: predict(
            write("c7.json", json.dumps([{"question": key, "distribution": [1] * n,
                                          "respondents": 10},
                                         {"question": model.question_keys[2],
                                          "distribution": [1] * len(model.options(
                                              model.question_keys[2]))}]))),
        "predict: options given as a string": lambda: predict(good_context, write(
            "q1.json", json.dumps([{"text": "Tea?", "options": "YesNo"}]))),
        "predict: the same question twice": lambda: predict(
            write("c8.json", json.dumps([{"question": key, "distribution": [1] * n}] * 2))),
        "suggest: --n 0": lambda: cli(["suggest", "--run-dir", str(run), "--n", "0"]),
        # -- Python API ------------------------------------------------------------------
        "API: adapt to no answers": lambda: api(lambda: model.adapt([])),
        "API: NaN in a distribution": lambda: api(
            lambda: model.adapt([(key, [np.nan] * n)])),
        "API: all-zero distribution": lambda: api(lambda: model.adapt([(key, [0] * n)])),
        "API: a sum that overflows (same as uniform)": lambda: accepted(
            lambda: np.allclose(model.adapt([(key, [1e308] * n)]).predict([key])[0].probs,
                                model.adapt([(key, [1] * n)]).predict([key])[0].probs)),
        "API: repeated context question": lambda: api(
            lambda: model.adapt([(key, [1] * n)] * 2)),
        "API: options as a string": lambda: api(
            lambda: model.adapt([(("Tea?", "YesNo"), [1, 1, 1, 1, 1])])),
        "API: one-option question": lambda: api(
            lambda: model.adapt([(("Tea?", ["Yes"]), [1])])),
        "API: predict an unknown key": lambda: api(
            lambda: model.adapt([(key, [1] * n)]).predict(["NOSUCH"])),
        "API: a (0 x E) embedding array": lambda: api(
            lambda: model.adapt([(key, [1] * n)]).predict([np.zeros((0, 1024))])),
        "API: embeddings of the wrong width": lambda: api(
            lambda: model.adapt([(key, [1] * n)]).predict([np.zeros((2, 3))])),
        "API: interval level 1.5": lambda: api(
            lambda: model.adapt([(key, [1] * n)]).predict([model.question_keys[1]])[0]
            .interval(1.5)),
        "API: load a folder holding no run": lambda: api(lambda: gpo.load(tmp)),
        # -- loaders -----------------------------------------------------------------------
        "loader: OpinionQA folder without waves": lambda: api(
            lambda: gpo.data.load_opinionqa(tmp)),
        "loader: repeated JSON keys": lambda: api(lambda: gpo.data.survey.read_json(
            write("rep.json", '{"Q1": {"a": 1}, "Q1": {"a": 2}}'))),
        "loader: a JSON list where an object belongs": lambda: api(
            lambda: gpo.data.survey.read_json(write("lst.json", "[1]"))),
        "loader: not UTF-8": lambda: api(lambda: gpo.data.survey.read_json(
            write("bin.json", b'{"Q1": "\xff"}'))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/fault_catalogue.json",
                        help="JSON report (default: reports/fault_catalogue.json)")
    args = parser.parse_args()
    import gpo.data.survey  # noqa: F401  (the loaders' cases)
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
                io.StringIO()):
            cli_main(["train", "--run-dir", str(tmp / "run"), *TINY])
        results = {name: case() for name, case in cases(tmp, tmp / "run").items()}
    width = max(map(len, results))
    for name, (outcome, message) in results.items():
        print(f"{name:<{width}}  {outcome:<10}  {message}")
    unexpected = [name for name, (outcome, _) in results.items() if outcome == "UNEXPECTED"]
    print(f"\n{len(results)} cases, {len(unexpected)} unexpected"
          + (f": {unexpected}" if unexpected else ""))
    print(f"wrote {write_json(args.out, {'cases': results})}")
    if unexpected:
        sys.exit(1)


if __name__ == "__main__":
    main()
