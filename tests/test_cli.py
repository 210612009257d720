"""The command line explains itself and answers a user's mistake in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from gpo.cli import DATASETS, build_parser, main


@pytest.fixture
def run(tiny, trained_run):
    """(survey, embeddings, run folder) of the shared tiny GPO run."""
    return (*tiny, trained_run("gpo")[0])


def test_every_option_has_help_with_its_default():
    from gpo.config import DataConfig
    for name in DATASETS:
        DataConfig(dataset=name)  # every choice the CLI offers is a dataset a config can name
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            where = f"gpo {name} {'/'.join(action.option_strings)}"
            assert action.help, f"{where} has no help"
            if action.default not in (None, False) and not action.required:
                assert "default" in action.help, f"{where} does not say its default"


def test_train_help_lists_the_heads_the_registry_knows():
    import gpo  # noqa: F401  (registers the heads)
    from gpo.cli import HEADS, TRAIN_EPILOG
    from gpo.models import registry
    built_in = {name for name in registry.head_names()  # not the toy heads tests register
                if registry.head_class(name).__module__.startswith("gpo.")}
    assert set(HEADS) == built_in
    assert all(name in TRAIN_EPILOG for name in (*HEADS, *DATASETS))


def test_train_says_first_what_it_trains_and_caches_embeddings(tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.setenv("GPO_CACHE_DIR", str(tmp_path / "cache"))
    args = ["train", "--run-dir", str(tmp_path / "run"), "--quiet", "--set",
            "train.steps=2", "--set", "data.synthetic_questions=12", "--set", "data.eval_k=3",
            "--set",
            "data.synthetic_groups=8"]
    main(args)
    captured = capsys.readouterr()
    first = captured.err.splitlines()[0]
    assert first.startswith("training the reference head for 2 steps on synthetic")
    assert "(8 groups, 12 questions; protocol A, split seed 0)" in first
    assert f"embedded with smollm2 (cache {tmp_path / 'cache' / 'embeddings'})" in first
    assert json.loads(captured.out)["total_seconds"] >= json.loads(captured.out)["seconds"]
    assert any((tmp_path / "cache" / "embeddings").glob("*/part-*.npy"))
    main(args)  # finished: returns at once, nothing embedded again
    again = capsys.readouterr()
    assert json.loads(again.out)["seconds"] == 0
    assert "already finished this config (2 steps): nothing to train" in again.err


def test_help_is_fast():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gpo.cli", "--help"], capture_output=True,
                          text=True)
    assert done.returncode == 0 and "predict" in done.stdout
    assert time.perf_counter() - start < 3.0  # no JAX import (about 0.1 s here)
    assert "jax" not in subprocess.run(
        [sys.executable, "-c", "import gpo.cli, sys; print(sorted(sys.modules))"],
        capture_output=True, text=True).stdout


@pytest.mark.parametrize("context, message", [
    ([{"question": "SYN0000", "probs": [1, 0]}], r"entry 0: unknown field\(s\) \['probs'\]"),
    ({"question": "SYN0000"}, "expected a non-empty JSON list"),
    (["SYN0000"], "entry 0: expected an object"),
    ([{"distribution": [1, 0]}], "entry 0: missing field 'question'"),
    ([{"question": "SYN0000", "distribution": "0.5"}], "'distribution' must be a list"),
    ([{"question": {"text": "Q"}, "distribution": [1, 0]}], "exactly the fields 'text' and"),
    ([{"question": "SYN0000", "distribution": [1, 0], "respondents": 10},
      {"question": "SYN0001", "distribution": [1, 0]}], "given for some entries but not"),
])
def test_malformed_context_is_one_line_naming_entry_and_field(run, tmp_path, capsys,
                                                              context, message):
    (tmp_path / "context.json").write_text(json.dumps(context))
    (tmp_path / "questions.json").write_text(json.dumps(["SYN0001"]))
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--run-dir", str(run[2]), "--context", str(tmp_path / "context.json"),
              "--questions", str(tmp_path / "questions.json")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_respondents_are_read_from_the_context_file(tiny, trained_run, tmp_path, capsys):
    """The reference head weighs a context answer by its respondents: the same answers from
    3 people move the prediction less than from 3,000."""
    survey, _ = tiny
    run_dir = trained_run("reference")[0]
    g = 11  # a test group of split 0
    target = survey.questions[20]
    (tmp_path / "questions.json").write_text(json.dumps([target.key]))
    out = {}
    for count in (None, 3, 3000):
        entries = []
        for q, question in enumerate(survey.questions[:8]):
            entry = {"question": question.key, "distribution": survey.probs_GxQxO[
                g, q, :len(question.answer_options)].tolist()}
            if count:
                entry["respondents"] = count
            entries.append(entry)
        (tmp_path / "context.json").write_text(json.dumps(entries))
        main(["predict", "--run-dir", str(run_dir), "--context", str(tmp_path / "context.json"),
              "--questions", str(tmp_path / "questions.json")])
        out[count] = np.array(json.loads(capsys.readouterr().out)[0]["probs"])
    assert all(abs(probs.sum() - 1) < 1e-5 for probs in out.values())
    assert np.abs(out[3] - out[3000]).max() > 1e-3  # the counts were read
    from gpo.data.splits import make_split
    references = make_split(survey, "A", seed=0).train_groups
    split_prior = survey.probs_GxQxO[references, 20, :len(target.answer_options)].mean(0)
    assert np.abs(out[3] - split_prior).sum() < np.abs(out[3000] - split_prior).sum()
