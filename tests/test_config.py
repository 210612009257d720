"""Config values are type-checked before validation: one message names section.field, the
value and the expected type. A config imports no JAX, defaults to the reference head however
it is made, and its model section is checked by the head registry when a head is built."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gpo.cli import main as cli_main
from gpo.config import DEFAULT_HEAD, RunConfig, SamplingConfig, TrainConfig
from tests.helpers import ROOT, tiny_config


@pytest.mark.parametrize("assignment, message", [
    ("train.steps=abc", "train.steps: 'abc' is not an integer"),
    ("train.learning_rate=NaN", "train.learning_rate: nan is not a finite number"),
    ("train.learning_rate=Infinity", "train.learning_rate: inf is not a finite number"),
    ("train.sampling.context_range=[1]",
     r"train.sampling.context_range: \[1\] is not a list of 2 values"),
    ("data.eval_k=2.5", "data.eval_k: 2.5 is not an integer"),
    ("train.sampling.group_mixup=true", "train.sampling.group_mixup: True is not a number"),
    ("embed.cache_dir=3", "embed.cache_dir: 3 is not a string"),
    ("train.sampling.batch=3", r"section 'train.sampling': unknown fields \['batch'\]"),
    ("train.steps.x=3", "train.steps is not a section"),
])
def test_badly_typed_overrides_name_the_field(assignment, message):
    with pytest.raises(ValueError, match=message):
        RunConfig().override([assignment])


def test_well_typed_values_are_converted():
    config = RunConfig().override(["train.steps=3.0", "train.sampling.context_range=[2, 9]",
                                   "train.devices=null", "train.learning_rate=1"])
    assert config.train.steps == 3 and isinstance(config.train.steps, int)
    assert config.train.sampling.context_range == (2, 9) and config.train.devices is None
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_config_overrides_from_the_command_line():
    config = tiny_config().override(["train.steps=7", "train.sampling.context_range=[3, 9]",
                                     "embed.model=minilm", "data.dataset=opinionqa"])
    assert config.train.steps == 7 and config.train.sampling.context_range == (3, 9)
    assert config.embed.model == "minilm" and config.data.dataset == "opinionqa"
    assert config.model == tiny_config().model  # untouched sections stay
    pal = config.override(["head=pal"])  # a GPO model section cannot serve PAL: dropped
    assert pal.head == "pal" and pal.model == {} and pal.train == config.train
    assert config.override(["head=gpo"]).model == config.model
    assert pal.override(["model.prototypes=3"]).model == {"prototypes": 3}
    for bad, match in (("train.steps", "not section.field=value"),
                       ("steps=3", "not section.field=value"),
                       ("optim.lr=1", "unknown section 'optim'"),
                       ("train.stepz=3", "unknown fields \\['stepz'\\]")):
        with pytest.raises(ValueError, match=match):
            config.override([bad])


def test_the_layout_before_the_sampling_section_still_reads():
    """Sampling fields directly under `train` (configs and `--set` habits from before
    `train.sampling`) land in the sampling section."""
    old = RunConfig().to_dict()
    old["train"].pop("sampling")
    old["train"].update(batch_size=8, group_mixup=0.5)
    config = RunConfig.from_dict(old)
    assert config.train.sampling == SamplingConfig(batch_size=8, group_mixup=0.5)
    assert RunConfig().override(["train.batch_size=8"]).train.sampling.batch_size == 8
    assert TrainConfig.reference(10, batch_size=4, loss="kl+nll").sampling.batch_size == 4


def test_every_way_of_making_a_config_defaults_to_the_reference_head(tmp_path):
    assert DEFAULT_HEAD == "reference"
    assert RunConfig().head == RunConfig.from_dict({}).head == DEFAULT_HEAD
    (tmp_path / "config.json").write_text(json.dumps({"train": {"steps": 3}}))
    assert RunConfig.load(tmp_path / "config.json").head == DEFAULT_HEAD


def test_a_config_file_without_a_head_trains_the_reference_head(tmp_path, tiny):
    from gpo.api import load
    from gpo.models import ReferenceRegression
    from gpo.training import train
    raw = tiny_config(steps=2, head="reference").to_dict()
    del raw["head"], raw["model"]
    (tmp_path / "config.json").write_text(json.dumps(raw))
    train(RunConfig.load(tmp_path / "config.json"), *tiny, tmp_path / "run", progress=False)
    model = load(tmp_path / "run")
    assert model.config.head == "reference" and isinstance(model.module, ReferenceRegression)


def test_importing_the_config_loads_no_jax():
    done = subprocess.run([sys.executable, "-c", "import gpo.config, sys; "
                           "assert 'jax' not in sys.modules, 'jax was imported'"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("model, message", [
    ({"widht": 3}, r"section 'model': unknown fields \['widht'\]"),
    ({"width": "x"}, "model.width: 'x' is not an integer"),
    ({"embedding_dim": 64}, r"model.embedding_dim is set from the data \(the embedder's"),
    ({"width": 30, "heads": 4}, "width 30 is not divisible by heads 4"),
])
def test_the_model_section_is_checked_by_the_head_naming_the_field(model, message):
    from gpo.models.registry import check_model_section, head_config
    config = RunConfig(head="gpo", model=model)
    with pytest.raises(ValueError, match=message):
        check_model_section(config.head, config.model)
        head_config(config.head, config.model, embedding_dim=32, n_groups=4)
    with pytest.raises(ValueError, match="unknown head 'bert'"):
        check_model_section("bert", {})


def test_cli_reports_a_bad_override_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", "--run-dir", str(tmp_path), "--set", "train.steps=abc"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert "train.steps: 'abc' is not an integer" in err
