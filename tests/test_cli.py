"""The command line explains itself and answers a user's mistake in one line."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from gpo.cli import DATASETS, build_parser, main
from tests.test_api import run  # noqa: F401  (the trained run fixture)


def test_every_option_has_help_with_its_default():
    from gpo.config import DATASETS as CONFIG_DATASETS
    assert set(DATASETS) == set(CONFIG_DATASETS)
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
def test_malformed_context_is_one_line_naming_entry_and_field(run, tmp_path, capsys,  # noqa: F811
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


def test_respondents_are_read_from_the_context_file(run, tmp_path, capsys):  # noqa: F811
    survey, _, run_dir = run
    q0, q1 = survey.questions[:2]
    (tmp_path / "questions.json").write_text(json.dumps([q1.key]))
    out = {}
    for count in (None, 3):
        entry = {"question": q0.key, "distribution": [1.0] * len(q0.answer_options)}
        if count:
            entry["respondents"] = count
        (tmp_path / "context.json").write_text(json.dumps([entry]))
        main(["predict", "--run-dir", str(run_dir), "--context", str(tmp_path / "context.json"),
              "--questions", str(tmp_path / "questions.json")])
        out[count] = json.loads(capsys.readouterr().out)[0]
    assert out[None]["options"] == list(q1.answer_options)
    assert abs(sum(out[3]["probs"]) - 1) < 1e-5
