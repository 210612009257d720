"""The fault suite: one test per class of bad input or fault. Each asserts the one message
names the culprit (file, field, item), that no work is lost (a run resumes to the
uninterrupted result), and that no traceback reaches a CLI user."""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

import gpo
from gpo.cli import main as cli_main
from gpo.config import RunConfig
from gpo.data.survey import SurveyDataError, read_json
from gpo.run_dir import RunDir, RunFileError, RunInUse
from gpo.training import train
from tests.helpers import tiny_config


def cli_error(capsys, argv) -> str:
    """The CLI's one stderr line for argv (exit 2), checked to be one line, no traceback."""
    with pytest.raises(SystemExit) as exit_:
        cli_main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _truncate_arrays(folder):
    for data in (p for p in folder.rglob("*") if p.is_file() and p.parent.name == "d"):
        data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])


def _params(run_dir):
    import orbax.checkpoint as ocp
    manager = ocp.CheckpointManager(run_dir.absolute() / "checkpoints" / "latest")
    out = manager.restore(manager.latest_step(),
                          args=ocp.args.Composite(model=ocp.args.StandardRestore()))
    return manager.latest_step(), jax.tree.leaves(out.model)


# a damaged read leaves no "exception ignored" report behind (gpo.checkpoint)
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_resume_walks_back_past_a_damaged_newest_checkpoint(tiny, tmp_path):
    """Damaged newest latest step: the resume uses the one before (saying so), moves the
    damaged one aside, and ends where the uninterrupted run ends; a failed write of a run
    file leaves the previous one and a resumable run; no file is rewritten unchanged."""
    survey, emb = tiny
    config = tiny_config(steps=30)
    train(config, survey, emb, tmp_path / "whole", progress=False, calibrate=False)
    run = tmp_path / "split"
    train(config, survey, emb, run, progress=False, stop_after=20, calibrate=False)
    _truncate_arrays(run / "checkpoints" / "latest" / "20")
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    with pytest.warns(UserWarning, match=r"resuming from step 10: latest checkpoint \(step "
                                         r"20\): array .* damaged"):
        train(config, survey, emb, run, progress=False, calibrate=False)
    assert (run / "checkpoints" / "damaged" / "latest-20").is_dir()
    after = {p.name: p.stat().st_mtime_ns for p in run.iterdir() if p.is_file()}
    assert {k: after[k] for k in ("config.json", "run.json", "arrays.npz")} == {
        k: before[k] for k in ("config.json", "run.json", "arrays.npz")}
    (step_a, a), (step_b, b) = _params(tmp_path / "whole"), _params(run)
    assert step_a == step_b == 30
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_load_walks_back_through_every_saved_step(copied_run):
    copy = copied_run("gpo")
    steps = sorted(int(p.name) for p in (copy / "checkpoints" / "latest").iterdir())
    assert len(steps) >= 2
    for best in (copy / "checkpoints" / "best").iterdir():
        _truncate_arrays(best)
    _truncate_arrays(copy / "checkpoints" / "latest" / str(steps[-1]))
    with pytest.warns(UserWarning, match=rf"using the latest checkpoint \(step {steps[-2]}\)"):
        model = gpo.load(copy)
    assert model.checkpoint_step == steps[-2]


def test_a_second_process_on_a_run_folder_is_refused(tiny, tmp_path, capsys):
    survey, emb = tiny
    with RunDir(tmp_path / "run").lock():
        with pytest.raises(RunInUse, match=r"in use by process \d+ on "):
            train(tiny_config(steps=10), survey, emb, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_damaged_or_edited_run_files_are_named(copied_run, capsys):
    copy = copied_run("gpo")
    original = {name: (copy / name).read_bytes() for name in ("config.json", "run.json",
                                                                "arrays.npz")}
    record = json.loads(original["run.json"])
    edited_config = json.loads(original["config.json"])
    edited_config["train"]["learning_rate"] = 0.5
    swapped = dict(record, questions=record["questions"][::-1])
    cases = [("config.json", b'{"head": "gpo", "tra', r"config.json: cannot be read"),
             ("config.json", b"[1, 2]", r"config.json: holds a JSON list"),
             ("config.json", json.dumps(edited_config).encode(),
              r"config.json: edited since the run was trained \(train.learning_rate"),
             ("run.json", b"\xff\xfe not text", r"run.json: cannot be read"),
             ("run.json", json.dumps(dict(record, texts=[])).encode(),
              r"run.json: 0 texts for \d+ questions"),
             ("run.json", json.dumps(swapped).encode(),
              r"run.json: its question list no longer matches arrays.npz"),
             ("arrays.npz", original["arrays.npz"][:100], r"arrays.npz: damaged"),
             ("arrays.npz", b"", r"arrays.npz: damaged")]
    for name, content, message in cases:
        (copy / name).write_bytes(content)
        with pytest.raises(RunFileError, match=message):
            gpo.load(copy)
        (copy / name).write_bytes(original[name])
    (copy / "config.json").write_text("{")
    assert "config.json: cannot be read" in cli_error(capsys, [
        "eval", "--run-dir", str(copy)])
    (copy / "config.json").write_bytes(original["config.json"])
    gpo.load(copy)  # restored: loads again


def test_config_fields_are_checked_naming_the_field(tiny, tmp_path):
    for override, message in [("train.warmup_steps=-1", "'train': warmup_steps must be >= 0"),
                              ("train.weight_decay=-0.1", "weight_decay must be >= 0"),
                              ("embed.dim=0", "'embed': dim must be >= 1"),
                              ("embed.dim=-5", "'embed': dim must be >= 1"),
                              ("embed.batch_size=0", "batch_size must be >= 1"),
                              ("data.eval_k=0", "eval_k must be >= 1"),
                              ("data.train_fraction=1", "train_fraction must be in")]:
        with pytest.raises(ValueError, match=message):
            RunConfig().override([override])
    survey, emb = tiny
    too_many = tiny_config(steps=10).override(["data.eval_k=100000"])
    with pytest.raises(ValueError, match=r"data.eval_k=100000 .*k must be below"):
        train(too_many, survey, emb, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_strict_api_inputs_name_the_item(trained_run, tiny):
    survey = tiny[0]
    model = gpo.load(trained_run("reference")[0])
    q = survey.questions[0]
    answer = list(survey.probs_GxQxO[0, 0, :len(q.answer_options)])
    with pytest.raises(ValueError, match=r"context items 0 and 1 are the same question"):
        model.adapt([(q.key, answer), (q.key, answer)])
    big = [1e308, 1e308] + [0.0] * (len(q.answer_options) - 2)
    group = model.adapt([(q.key, big)])  # a sum that overflows: still [0.5, 0.5, 0, ...]
    assert np.isfinite(group.predict([survey.questions[1].key])[0].probs).all()
    from gpo.questions import check_distribution
    np.testing.assert_allclose(check_distribution(big, len(big), "x")[:2], [0.5, 0.5])
    with pytest.raises(ValueError, match="must be a list of strings"):
        model.adapt([(q.key, answer)]).predict([("Do you like tea?", "YesNo")])
    with pytest.raises(ValueError, match="at least 2"):
        model.adapt([(q.key, answer)]).predict([np.zeros((0, 32), np.float32)])


def test_bad_data_files_are_named(tmp_path):
    bad = tmp_path / "data.json"
    bad.write_text('{"Q1": {"a": 1}, "Q1": {"a": 2}}')
    with pytest.raises(SurveyDataError, match=r"data.json': key 'Q1' appears twice"):
        read_json(bad)
    bad.write_bytes(b'{"Q1": "\xff"}')
    with pytest.raises(SurveyDataError, match=r"data.json': not UTF-8 text"):
        read_json(bad)
    bad.write_text("[1]")
    with pytest.raises(SurveyDataError, match="expected a JSON object, got list"):
        read_json(bad)


def test_cli_paths_of_the_wrong_kind_get_one_line(copied_run, tmp_path, capsys):
    run_dir = str(copied_run("gpo"))
    assert "is a folder" in cli_error(capsys, ["train", "--config", str(tmp_path),
                                               "--run-dir", str(tmp_path / "r")])
    assert "is a folder" in cli_error(capsys, ["predict", "--run-dir", run_dir, "--context",
                                               str(tmp_path), "--questions", str(tmp_path)])
    (tmp_path / "ctx.json").write_bytes(b"\xff\xfe")
    assert "not UTF-8" in cli_error(capsys, ["predict", "--run-dir", run_dir, "--context",
                                             str(tmp_path / "ctx.json"), "--questions", "x"])
    assert "k must be below" in cli_error(capsys, ["eval", "--run-dir", run_dir, "--k",
                                                   "100000", "--out", str(tmp_path / "e")])
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert str(blocker) in cli_error(capsys, ["eval", "--run-dir", run_dir, "--k", "5",
                                              "--out", str(blocker / "sub")])
    assert "is not a folder" in cli_error(capsys, ["demo", "--data-dir",
                                                   str(tmp_path / "nope")])
    assert "--steps must be >= 1" in cli_error(capsys, ["demo", "--steps", "0"])


def test_ctrl_c_ends_in_one_line_saying_how_to_resume(monkeypatch, tmp_path, capsys):
    import gpo.pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gpo.pipeline, "train_run", interrupted)
    (tmp_path / "run" / "checkpoints" / "latest" / "40").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_:
        cli_main(["train", "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and err.count("\n") == 1
    assert "interrupted" in err and "step 40" in err and "resume" in err


def test_rerunning_a_finished_run_returns_at_once(tiny, tmp_path, monkeypatch):
    from gpo import pipeline
    survey, emb = tiny
    config = tiny_config(steps=10)
    first = pipeline.train_run(config, tmp_path / "run", progress=False, survey=survey,
                               embeddings=emb)
    monkeypatch.setattr(pipeline, "embed", lambda *a: pytest.fail("embedded again"))
    again = pipeline.train_run(config, tmp_path / "run", progress=False, survey=survey)
    assert again.seconds == 0 and again.steps == first.steps == 10
    assert again.best_validation == first.best_validation
    with pytest.raises(ValueError, match=r"different config: train.learning_rate: 0.003 -> "
                                         r"0.01"):
        pipeline.train_run(config.override(["train.learning_rate=0.01"]), tmp_path / "run",
                           progress=False, survey=survey)
    shutil.rmtree(tmp_path / "run")
