"""Config values are type-checked before validation: one message names section.field, the
value and the expected type."""

from __future__ import annotations

import json

import pytest

from gpo.cli import main as cli_main
from gpo.config import RunConfig


@pytest.mark.parametrize("assignment, message", [
    ("train.steps=abc", "train.steps: 'abc' is not an integer"),
    ("train.learning_rate=NaN", "train.learning_rate: nan is not a finite number"),
    ("train.learning_rate=Infinity", "train.learning_rate: inf is not a finite number"),
    ("train.context_range=[1]", r"train.context_range: \[1\] is not a list of 2 values"),
    ("data.eval_k=2.5", "data.eval_k: 2.5 is not an integer"),
    ("train.group_mixup=true", "train.group_mixup: True is not a number"),
    ("embed.cache_dir=3", "embed.cache_dir: 3 is not a string"),
])
def test_badly_typed_overrides_name_the_field(assignment, message):
    with pytest.raises(ValueError, match=message):
        RunConfig().override([assignment])


def test_well_typed_values_are_converted():
    config = RunConfig().override(["train.steps=3.0", "train.context_range=[2, 9]",
                                   "train.devices=null", "train.learning_rate=1"])
    assert config.train.steps == 3 and isinstance(config.train.steps, int)
    assert config.train.context_range == (2, 9) and config.train.devices is None
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_cli_reports_a_bad_override_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", "--run-dir", str(tmp_path), "--set", "train.steps=abc"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "train.steps: 'abc' is not an integer" in err
